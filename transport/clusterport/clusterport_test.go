package clusterport

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/testenv"
	"github.com/switchboard/switchboard/transport/peer"
)

func muxStart(t *testing.T, opts options) *Mux {
	t.Helper()
	m, err := listen("127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// muxExpectClosed asserts the server closes c without sending anything.
func muxExpectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	n, err := c.Read(b[:])
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read = %d, %v; want server to close the connection (EOF)", n, err)
	}
}

func TestMuxRoutesByFirstByte(t *testing.T) {
	testenv.NoLeaks(t)
	m := muxStart(t, options{})
	tests := []struct {
		name string
		kind byte
		msg  string
	}{
		{"raft", Raft, "raft-stream"},
		{"peer", Peer, "peer-link"},
	}
	// Dial every kind before accepting any, so a misrouted connection would
	// sit in the wrong queue and be accepted there.
	conns := make([]net.Conn, len(tests))
	for i, tt := range tests {
		c, err := Dial(context.Background(), m.Addr().String(), tt.kind, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(tt.msg)); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := m.Listener(tt.kind)
			if l.Addr().String() != m.Addr().String() {
				t.Errorf("Addr = %v, want %v", l.Addr(), m.Addr())
			}
			sc, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			sc.SetReadDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, len(tt.msg))
			if _, err := io.ReadFull(sc, got); err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.msg {
				t.Errorf("got %q, want %q (kind byte must be consumed, conn routed by kind)", got, tt.msg)
			}
		})
	}
}

func TestMuxClosesUnknownKind(t *testing.T) {
	testenv.NoLeaks(t)
	m := muxStart(t, options{})
	c, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("X")); err != nil {
		t.Fatal(err)
	}
	muxExpectClosed(t, c)
}

func TestMuxClosesSilentConnAfterDeadline(t *testing.T) {
	testenv.NoLeaks(t)
	m := muxStart(t, options{firstByteTimeout: 100 * time.Millisecond})
	silent, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	muxExpectClosed(t, silent)

	// The mux keeps routing after dropping the silent one.
	c, err := Dial(context.Background(), m.Addr().String(), Peer, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := m.Listener(Peer).Accept()
	if err != nil {
		t.Fatal(err)
	}
	sc.Close()
}

func TestMuxCloseUnblocksAcceptAndIsIdempotent(t *testing.T) {
	testenv.NoLeaks(t)
	m := muxStart(t, options{})
	// A silent connection must not hold Close for the first-byte timeout.
	silent, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	errs := make(chan error, 2)
	for _, k := range []byte{Raft, Peer} {
		go func() {
			_, err := m.Listener(k).Accept()
			errs <- err
		}()
	}
	m.Close()
	m.Close()
	for range 2 {
		if err := <-errs; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
		}
	}
	if _, err := m.Listener(Peer).Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on closed mux = %v, want net.ErrClosed", err)
	}
	muxExpectClosed(t, silent)
}

func TestMuxSubListenerCloseAffectsOnlyItsKind(t *testing.T) {
	testenv.NoLeaks(t)
	m := muxStart(t, options{})
	m.Listener(Raft).Close()

	r, err := Dial(context.Background(), m.Addr().String(), Raft, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	muxExpectClosed(t, r)

	p, err := Dial(context.Background(), m.Addr().String(), Peer, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	sc, err := m.Listener(Peer).Accept()
	if err != nil {
		t.Fatal(err)
	}
	sc.Close()
}

func TestMuxDialClusterErrors(t *testing.T) {
	testenv.NoLeaks(t)
	if _, err := Dial(context.Background(), "127.0.0.1:1", 'X', time.Second); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("unknown kind: err = %v, want ErrUnknownKind", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Dial(ctx, "127.0.0.1:1", Peer, time.Second); err == nil {
		t.Error("dial with canceled ctx succeeded")
	}
}

func TestMuxListenerUnknownKindPanics(t *testing.T) {
	testenv.NoLeaks(t)
	m := muxStart(t, options{})
	defer func() {
		if recover() == nil {
			t.Error("Listener('X') did not panic")
		}
	}()
	m.Listener('X')
}

func TestPeerLinksOverTheMux(t *testing.T) {
	testenv.NoLeaks(t)
	m := muxStart(t, options{})
	log := slog.New(slog.DiscardHandler)
	scfg := peer.DefaultConfig()
	scfg.NodeID, scfg.Logger = "n1", log
	srv, err := peer.New(scfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle(1, func(_ context.Context, from string, p []byte) ([]byte, error) {
		return append([]byte(from+":"), p...), nil
	}, false)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(m.Listener(Peer)) }()
	defer func() {
		srv.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve = %v", err)
		}
	}()
	ccfg := peer.DefaultConfig()
	ccfg.NodeID, ccfg.Logger = "n2", log
	ccfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) { return Dial(ctx, addr, Peer, time.Second) }
	cli, err := peer.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	got, err := cli.Call(context.Background(), m.Addr().String(), 1, []byte("via mux"))
	if err != nil || string(got) != "n2:via mux" {
		t.Fatalf("Call = %q, %v", got, err)
	}
	// Raft's kind on the same port is untouched by the peer traffic.
	r, err := Dial(context.Background(), m.Addr().String(), Raft, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rc, err := m.Listener(Raft).Accept()
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
}
