package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/switchboard/switchboard/internal/testenv"
	"github.com/switchboard/switchboard/protocol"
)

// loopback is a local address on 127.0.0.0/8 to connect from: the
// gateway tells clients apart by address.
func loopback(t testing.TB, last byte) net.Addr {
	t.Helper()
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, last)}
}

// dialFrom dials from local (nil: any) with header.
func (h *gwHarness) dialFrom(local net.Addr, header http.Header) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{TLSClientConfig: h.clientTLS, NetDial: func(network, addr string) (net.Conn, error) {
		return (&net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}).Dial(network, addr)
	}}
	ws, resp, err := d.Dial(h.url, header)
	if ws != nil {
		h.t.Cleanup(func() { ws.Close() })
	}
	return ws, resp, err
}

// expectRefused checks that an upgrade was refused with status, a JSON
// {"error":…} body and, if retry, a Retry-After header.
func expectRefused(t *testing.T, resp *http.Response, err error, status int, retry bool) {
	t.Helper()
	if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil {
		t.Fatalf("dial: %v, want the upgrade refused with %d", err, status)
	}
	defer resp.Body.Close()
	if resp.StatusCode != status {
		t.Fatalf("upgrade answered %d, want %d", resp.StatusCode, status)
	}
	body, _ := io.ReadAll(resp.Body)
	var e protocol.Error
	if json.Unmarshal(body, &e) != nil || e.Error == "" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("body %q (%s), want JSON {\"error\":…}", body, resp.Header.Get("Content-Type"))
	}
	ra := resp.Header.Get("Retry-After")
	if n, err := strconv.Atoi(ra); retry && (err != nil || n < 1) {
		t.Errorf("Retry-After %q, want a number of seconds", ra)
	} else if !retry && ra != "" {
		t.Errorf("Retry-After %q on a refusal that is not worth retrying", ra)
	}
}

// startWellBehaved connects a client from local as user, and feeds it a
// message every millisecond from the hub while it reads everything. The
// returned check stops the feed and verifies that the client received
// every message, in order, and was never closed.
func (h *gwHarness) startWellBehaved(local net.Addr, user string) (check func()) {
	t := h.t
	t.Helper()
	ws, _, err := h.dialFrom(local, nil)
	if err != nil {
		t.Fatalf("well-behaved client: dial: %v", err)
	}
	gwHello(t, ws, user)
	sink := h.hub.sink(t)
	for sink.User() != user { // others' hellos, from a flood
		sink = h.hub.sink(t)
	}
	stop := make(chan struct{})
	fed := make(chan uint64, 1)
	var refused atomic.Bool
	go func() {
		seq := uint64(0)
		defer func() { fed <- seq }()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if !sink.Send(seq+1, protocol.AppendMessage(nil, seq+1, "m", 0, json.RawMessage(`1`))) {
				refused.Store(true)
				return
			}
			seq++
		}
	}()
	var received atomic.Uint64
	readDone := make(chan error, 1)
	go func() {
		for {
			_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, b, err := ws.ReadMessage()
			if err != nil {
				readDone <- err
				return
			}
			m, ok := protocol.ParseMessage(b)
			if !ok {
				continue // a heartbeat
			}
			if m.Seq != received.Load()+1 {
				readDone <- fmt.Errorf("message %d after %d", m.Seq, received.Load())
				return
			}
			received.Store(m.Seq)
		}
	}()
	return func() {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); received.Load() < 10 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond) // some traffic, however short the test
		}
		close(stop)
		last := <-fed
		if refused.Load() {
			t.Errorf("well-behaved client: Send failed after %d messages: the gateway closed it", last)
		}
		for deadline := time.Now().Add(10 * time.Second); received.Load() < last; time.Sleep(5 * time.Millisecond) {
			select {
			case err := <-readDone:
				t.Fatalf("well-behaved client: %v after %d of %d messages", err, received.Load(), last)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("well-behaved client: received %d of %d messages", received.Load(), last)
			}
		}
		if last < 10 {
			t.Errorf("well-behaved client: only %d messages were fed", last)
		}
		ws.Close()
		<-readDone
	}
}

func TestGatewayMaxConnections(t *testing.T) {
	testenv.NoLeaks(t)
	h := startGW(t, Config{MaxConnections: 3}, nil)
	check := h.startWellBehaved(nil, "good")
	a, _, err := h.dialFrom(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.dialFrom(nil, nil); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_, resp, err := h.dialFrom(nil, nil)
		expectRefused(t, resp, err, http.StatusServiceUnavailable, true)
	}
	// A connection that ends gives its slot back.
	a.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ws, _, err := h.dialFrom(nil, nil)
		if err == nil {
			gwHello(t, ws, "later")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot after a connection ended: %v", err)
		}
	}
	check()
}

func TestGatewayConnectRatePerIP(t *testing.T) {
	testenv.NoLeaks(t)
	const perSecond = 5
	h := startGW(t, Config{ConnectRate: perSecond}, nil)
	check := h.startWellBehaved(loopback(t, 2), "good")
	accepted := 0
	for {
		ws, resp, err := h.dialFrom(loopback(t, 1), nil)
		if err != nil {
			expectRefused(t, resp, err, http.StatusTooManyRequests, true)
			break
		}
		ws.Close()
		if accepted++; accepted > 4*perSecond {
			t.Fatalf("%d connections accepted from one address at %d/s", accepted, perSecond)
		}
	}
	if accepted < perSecond {
		t.Errorf("refused after %d connections, want a burst of %d", accepted, perSecond)
	}
	// Another address is not affected.
	if _, _, err := h.dialFrom(loopback(t, 3), nil); err != nil {
		t.Errorf("dial from another address: %v", err)
	}
	check()
}

func TestIPLimiterIsBounded(t *testing.T) {
	l := newIPLimiter(1)
	now := time.Now()
	if !l.allow("limited", now) || l.allow("limited", now) {
		t.Fatal("a rate of 1/s allowed no connection, or two at once")
	}
	for i := range maxTrackedIPs / 2 {
		l.allow(fmt.Sprintf("a%d", i), now)
	}
	if l.allow("limited", now) {
		t.Error("an address was forgotten while fewer than maxTrackedIPs were tracked")
	}
	for i := range 3 * maxTrackedIPs {
		l.allow(fmt.Sprintf("b%d", i), now)
		if len(l.ips) > maxTrackedIPs {
			t.Fatalf("%d addresses tracked, bound %d", len(l.ips), maxTrackedIPs)
		}
	}
	if !l.allow("limited", now.Add(time.Second)) {
		t.Error("no connection allowed once the rate refilled")
	}
}

func TestGatewayMaxConnectionsPerUser(t *testing.T) {
	testenv.NoLeaks(t)
	h := startGW(t, Config{MaxConnectionsPerUser: 2}, nil)
	check := h.startWellBehaved(nil, "good")
	first := h.dial(nil)
	gwHello(t, first, "alice")
	gwHello(t, h.dial(nil), "alice")
	over := h.dial(nil)
	gwSend(t, over, `{"type":"hello","token":"good-alice"}`)
	gwExpectClose(t, over, protocol.CloseRateLimited, "too_many_connections")
	gwHello(t, h.dial(nil), "bob") // other users are not affected
	// A connection that ends is no longer counted.
	first.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ws := h.dial(nil)
		gwSend(t, ws, `{"type":"hello","token":"good-alice"}`)
		f, err := gwRead(t, ws)
		if err == nil && f.Type == protocol.TypeWelcome {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused after a connection ended: %s %v", f.raw, err)
		}
	}
	check()
}

func TestGatewayFrameRate(t *testing.T) {
	testenv.NoLeaks(t)
	const perSecond = 50
	deadline := func() time.Time { return time.Now().Add(5 * time.Second) }
	tests := []struct {
		name string
		send func(*websocket.Conn) error
	}{
		{"messages", func(ws *websocket.Conn) error {
			return ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`))
		}},
		{"pings", func(ws *websocket.Conn) error { return ws.WriteControl(websocket.PingMessage, nil, deadline()) }},
		{"pongs", func(ws *websocket.Conn) error { return ws.WriteControl(websocket.PongMessage, nil, deadline()) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startGW(t, Config{FrameRate: perSecond}, nil)
			check := h.startWellBehaved(nil, "good")
			ws := h.dial(nil)
			gwHello(t, ws, "flood")
			for range 10 * perSecond {
				_ = ws.SetWriteDeadline(deadline())
				if err := tt.send(ws); err != nil {
					break // closed already
				}
			}
			gwExpectClose(t, ws, protocol.CloseRateLimited, "rate_limited")
			check()
		})
	}
	t.Run("a burst within the limit", func(t *testing.T) {
		h := startGW(t, Config{FrameRate: perSecond}, nil)
		ws := h.dial(nil)
		gwHello(t, ws, "alice")
		for i := range perSecond - 2 {
			gwSend(t, ws, fmt.Sprintf(`{"type":"ping","id":%d}`, i))
		}
		for range perSecond - 2 {
			gwMustRead(t, ws, protocol.TypePong)
		}
	})
}

func TestGatewayOriginRefusedBeforeUpgrade(t *testing.T) {
	testenv.NoLeaks(t)
	allowed, err := OriginPolicy([]string{"https://app.example.com", "https://*.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	origin := func(o string) http.Header { return http.Header{"Origin": {o}} }
	t.Run("allowed list", func(t *testing.T) {
		h := startGW(t, Config{CheckOrigin: allowed}, nil)
		check := h.startWellBehaved(nil, "good")
		for _, o := range []string{"https://evil.example.com", "http://app.example.com", "https://example.org", "null"} {
			_, resp, err := h.dialFrom(nil, origin(o))
			expectRefused(t, resp, err, http.StatusForbidden, false)
		}
		for _, hdr := range []http.Header{origin("https://app.example.com"), origin("https://a.b.example.org"), nil} {
			ws, _, err := h.dialFrom(nil, hdr)
			if err != nil {
				t.Fatalf("dial with %v: %v", hdr, err)
			}
			gwHello(t, ws, "alice")
		}
		check()
	})
	t.Run("same host by default", func(t *testing.T) {
		h := startGW(t, Config{}, nil)
		_, resp, err := h.dialFrom(nil, origin("https://"+h.addr()+".evil.example"))
		expectRefused(t, resp, err, http.StatusForbidden, false)
		for _, o := range []string{"http://" + h.addr(), "https://" + h.addr()} {
			ws, _, err := h.dialFrom(nil, origin(o))
			if err != nil {
				t.Fatalf("dial with Origin %s: %v", o, err)
			}
			gwHello(t, ws, "alice")
		}
	})
}

// TestGatewaySurvivesFloods throws thousands of refused handshakes and
// failing connections at one gateway with every limit set, from many
// addresses at once; a client that behaves keeps getting every message
// throughout, and once it is over the gateway holds nothing for the flood
// and serves a new client as before.
func TestGatewaySurvivesFloods(t *testing.T) {
	testenv.NoLeaks(t)
	allowed, err := OriginPolicy([]string{"https://app.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	h := startGW(t, Config{
		MaxFrameBytes: 4096, MaxConnections: 400, MaxConnectionsPerUser: 3,
		ConnectRate: 50, FrameRate: 100, CheckOrigin: allowed,
	}, nil)
	h.g.log = slog.New(slog.DiscardHandler) // the flood's debug logs would drown the test's output
	check := h.startWellBehaved(loopback(t, 2), "good")

	const workers = 16
	var wg sync.WaitGroup
	var handshakes, failed, unexpected atomic.Int64
	badHandshakes := []http.Header{
		{"Origin": {"https://evil.example"}},
		{"Origin": {"null"}},
		{}, // all from 127.0.0.1: past its connect rate
	}
	for w := range workers {
		wg.Go(func() {
			for i := range 2000 / workers {
				hdr := badHandshakes[(w+i)%len(badHandshakes)]
				nc, _, status, err := h.rawUpgrade(loopback(t, 1), hdr)
				if err != nil {
					unexpected.Add(1)
					continue
				}
				nc.Close()
				if status == http.StatusSwitchingProtocols && len(hdr) != 0 {
					unexpected.Add(1)
				}
				handshakes.Add(1)
			}
		})
	}
	badFrames := [][]byte{
		wsFrame(true, 0, wsOpText, false, 0, []byte(`{"type":"ping"}`)),              // unmasked
		wsFrame(true, 0x40, wsOpText, true, 0, []byte(`{"type":"ping"}`)),            // reserved bit
		wsClientFrame(true, wsOpBinary, []byte(`{"type":"ping"}`)),                   // binary
		wsClientFrame(true, wsOpText, []byte("{\"type\":\"ping\",\"id\":\"\xff\"}")), // not UTF-8
		wsClientFrame(true, wsOpText, make([]byte, 5000)),                            // too large
		wsClientFrame(true, 0x7, nil),                                                // unknown opcode
		wsClientFrame(true, wsOpText, []byte(`{"type":"nonsense"}`)),                 // protocol error
		bytes.Repeat(wsClientFrame(true, wsOpPing, nil), 300),                        // over the frame rate
		wsClientFrame(true, wsOpText, []byte(`{"type":"hello"}`)),                    // a second hello
		[]byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),           // garbage
	}
	for w := range workers {
		wg.Go(func() {
			for i := range 800 / workers {
				from := loopback(t, byte(10+(w*800/workers+i)%200)) // 4 connections per address
				nc, br, status, err := h.rawUpgrade(from, nil)
				if err != nil || status != http.StatusSwitchingProtocols {
					unexpected.Add(1)
					if nc != nil {
						nc.Close()
					}
					continue
				}
				c := &rawWS{t: t, nc: nc, br: br}
				var out []byte
				if i%2 == 0 { // half of them fail after a welcome, half before
					out = wsClientFrame(true, wsOpText, []byte(fmt.Sprintf(`{"type":"hello","token":"good-m%d-%d"}`, w, i)))
				}
				out = append(out, badFrames[(w+i)%len(badFrames)]...)
				_ = nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := nc.Write(out); err != nil {
					unexpected.Add(1)
					nc.Close()
					continue
				}
				// Read up to the server's close: every one of them fails.
				closed := false
				for !closed {
					f, err := c.read(time.Now().Add(10 * time.Second))
					if err != nil {
						break
					}
					closed = f.op == wsOpClose
				}
				if closed {
					failed.Add(1)
				} else {
					unexpected.Add(1)
				}
				nc.Close()
			}
		})
	}
	wg.Wait()
	t.Logf("%d refused handshakes, %d failed connections, %d surprises", handshakes.Load(), failed.Load(), unexpected.Load())
	if unexpected.Load() != 0 {
		t.Errorf("%d handshakes or connections did not end as they should", unexpected.Load())
	}
	check()

	// Nothing of the flood is left, and a new client is served.
	for deadline := time.Now().Add(15 * time.Second); h.g.Connections() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections left after the flood", h.g.Connections())
		}
	}
	h.g.mu.Lock()
	slots, users := h.g.slots, len(h.g.perUser)
	h.g.mu.Unlock()
	if slots != 0 || users != 0 {
		t.Errorf("after the flood: %d slots and %d users counted, want none", slots, users)
	}
	for len(h.hub.sinks) > 0 {
		<-h.hub.sinks // the flood's welcomed connections
	}
	check = h.startWellBehaved(loopback(t, 3), "after")
	check()
}
