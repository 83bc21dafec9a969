package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/switchboard/switchboard/internal/testenv"
	"github.com/switchboard/switchboard/protocol"
)

// A WSS connection is a *tls.Conn: from a listener that PollableListener
// did not wrap, the poller cannot read it without blocking, and leaves it
// to a reader goroutine of its own. It is served like any other:
// heartbeats while idle, and dropped once its client falls silent.
func TestTLSConnectionsHaveAReaderGoroutine(t *testing.T) {
	testenv.NoLeaks(t)
	cfg := withDefaults(Config{Heartbeat: 300 * time.Millisecond})
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	g, err := New(cfg, gwFakeAuth, newGwFakeHub())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(g)
	srv.Config.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelDebug)
	srv.StartTLS()
	defer srv.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: roots}, HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial("wss"+strings.TrimPrefix(srv.URL, "https")+"/v1/connect", http.Header{})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	defer ws.Close()
	gwHello(t, ws, "alice")

	cs := g.snapshot()
	if len(cs) != 1 {
		t.Fatalf("%d connections", len(cs))
	}
	c := cs[0]
	c.mu.Lock()
	watched, reader := c.poll != nil, c.armCh != nil
	c.mu.Unlock()
	if watched || !reader {
		t.Fatalf("TLS connection: watched by the poller %v, reader goroutine %v", watched, reader)
	}

	// Idle, answering pings (gorilla does while reading): heartbeats come.
	beats := 0
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		if f := gwMustRead(t, ws, protocol.TypeHeartbeat); f.Type == protocol.TypeHeartbeat {
			beats++
		}
	}
	if beats < 3 {
		t.Fatalf("%d heartbeats in 1.5s at a 300ms interval", beats)
	}
	// Silent (not reading, so no pongs): dropped after 2.5 intervals.
	deadline := time.Now().Add(5 * time.Second)
	for g.Connections() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a silent TLS client was not dropped")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// From a listener PollableListener wraps, a WSS connection is watched by
// the poller like a plain one (no goroutine while idle), and records that
// tls.Conn took from the socket in one read are all acted on even when
// nothing more arrives: here many small records, written one by one and
// read by the server at once, each a ping that wants its pong.
func TestPolledTLSConnectionsReadEveryRecord(t *testing.T) {
	testenv.NoLeaks(t)
	gwTestTLS = true
	h := startGW(t, Config{}, nil)
	gwTestTLS = false
	ws := h.dial(nil)
	gwHello(t, ws, "alice")
	cs := h.g.snapshot()
	if len(cs) != 1 {
		t.Fatalf("%d connections", len(cs))
	}
	c := cs[0]
	c.mu.Lock()
	watched, reader := c.poll != nil, c.armCh != nil
	c.mu.Unlock()
	if !watched || reader {
		t.Fatalf("TLS connection: watched by the poller %v, reader goroutine %v", watched, reader)
	}

	// gorilla writes each message in one TLS record; a batch of them
	// arrives together.
	const n = 10 * readsPerWake
	for round := range 20 {
		for i := range n {
			gwSend(t, ws, fmt.Sprintf(`{"type":"ping","id":"%d-%d"}`, round, i))
		}
		for i := range n {
			f := gwMustRead(t, ws, protocol.TypePong)
			if want := fmt.Sprintf(`"%d-%d"`, round, i); string(f.ID) != want {
				t.Fatalf("pong %s, want %s", f.ID, want)
			}
		}
	}
}

// tls.Conn.Read may write: a bad record is answered with an alert, which
// waits for the connection's writer. A client that stops reading (its
// writer stuck on the socket) and then sends a bad record holds up its
// own connection only: the poller goes on serving every other one.
func TestBadTLSRecordWithAStuckWriterHoldsNoOtherConnection(t *testing.T) {
	testenv.NoLeaks(t)
	gwTestTLS = true
	h := startGW(t, Config{WriteTimeout: 30 * time.Second}, nil)
	gwTestTLS = false
	stuck, _ := h.dialSmallBuffers(4096)
	gwHello(t, stuck, "stuck")
	sink := h.hub.sink(t)
	data := json.RawMessage(`"` + strings.Repeat("x", 1000) + `"`)
	for seq := uint64(1); seq <= 200; seq++ {
		if !sink.Send(seq, protocol.AppendMessage(nil, seq, "m", 0, data)) {
			t.Fatalf("message %d refused", seq)
		}
	}
	time.Sleep(200 * time.Millisecond) // the writer fills the socket and waits on it
	// A record that does not decrypt, straight onto the TCP connection.
	raw := stuck.NetConn().(*tls.Conn).NetConn()
	if _, err := raw.Write([]byte{23, 3, 3, 0, 32, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)

	other := h.dial(nil)
	gwHello(t, other, "other")
	start := time.Now()
	gwSend(t, other, `{"type":"ping","id":"p"}`)
	gwMustRead(t, other, protocol.TypePong)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("a ping on another connection took %v: the poller waited for the stuck writer", d)
	}
	stuck.Close()
}

// A WSS connection the poller cannot watch (here: the poller has failed)
// gets a reader goroutine whose reads through tls.Conn wait again: left
// non-blocking, the goroutine would spin on reads that never wait.
func TestTLSConnectionThePollerCannotWatchReadsBlocking(t *testing.T) {
	testenv.NoLeaks(t)
	gwTestTLS = true
	h := startGW(t, Config{}, nil)
	gwTestTLS = false
	first := h.dial(nil) // starts the poller
	gwHello(t, first, "alice")
	h.g.mu.Lock()
	p := h.g.poll
	h.g.mu.Unlock()
	p.mu.Lock()
	p.failed = true
	p.mu.Unlock()

	ws := h.dial(nil)
	gwHello(t, ws, "bob")
	var c *conn
	for _, cc := range h.g.snapshot() {
		if cc.User() == "bob" {
			c = cc
		}
	}
	if c == nil {
		t.Fatal("bob's connection is not in the gateway")
	}
	c.mu.Lock()
	reader, isTLS := c.armCh != nil, c.tls
	c.mu.Unlock()
	under := c.nc.(*tls.Conn).NetConn().(*tlsSocket)
	if !reader || isTLS || under.nonblocking.Load() {
		t.Fatalf("reader goroutine %v, polled-TLS mode %v, non-blocking reads %v; want true, false, false", reader, isTLS, under.nonblocking.Load())
	}
	gwSend(t, ws, `{"type":"ping","id":7}`)
	gwMustRead(t, ws, protocol.TypePong)
}
