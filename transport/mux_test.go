package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func muxStart(t *testing.T, opts muxOptions) *ClusterMux {
	t.Helper()
	m, err := muxListen("127.0.0.1:0", opts)
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
	peerNoLeaks(t)
	m := muxStart(t, muxOptions{})
	tests := []struct {
		name string
		kind byte
		msg  string
	}{
		{"raft", MuxRaft, "raft-stream"},
		{"peer", MuxPeer, "peer-link"},
	}
	// Dial every kind before accepting any, so a misrouted connection would
	// sit in the wrong queue and be accepted there.
	conns := make([]net.Conn, len(tests))
	for i, tt := range tests {
		c, err := DialCluster(context.Background(), m.Addr().String(), tt.kind, time.Second)
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
	peerNoLeaks(t)
	m := muxStart(t, muxOptions{})
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
	peerNoLeaks(t)
	m := muxStart(t, muxOptions{firstByteTimeout: 100 * time.Millisecond})
	silent, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	muxExpectClosed(t, silent)

	// The mux keeps routing after dropping the silent one.
	c, err := DialCluster(context.Background(), m.Addr().String(), MuxPeer, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := m.Listener(MuxPeer).Accept()
	if err != nil {
		t.Fatal(err)
	}
	sc.Close()
}

func TestMuxCloseUnblocksAcceptAndIsIdempotent(t *testing.T) {
	peerNoLeaks(t)
	m := muxStart(t, muxOptions{})
	// A silent connection must not hold Close for the first-byte timeout.
	silent, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	errs := make(chan error, 2)
	for _, k := range []byte{MuxRaft, MuxPeer} {
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
	if _, err := m.Listener(MuxPeer).Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on closed mux = %v, want net.ErrClosed", err)
	}
	muxExpectClosed(t, silent)
}

func TestMuxSubListenerCloseAffectsOnlyItsKind(t *testing.T) {
	peerNoLeaks(t)
	m := muxStart(t, muxOptions{})
	m.Listener(MuxRaft).Close()

	r, err := DialCluster(context.Background(), m.Addr().String(), MuxRaft, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	muxExpectClosed(t, r)

	p, err := DialCluster(context.Background(), m.Addr().String(), MuxPeer, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	sc, err := m.Listener(MuxPeer).Accept()
	if err != nil {
		t.Fatal(err)
	}
	sc.Close()
}

func TestMuxDialClusterErrors(t *testing.T) {
	peerNoLeaks(t)
	if _, err := DialCluster(context.Background(), "127.0.0.1:1", 'X', time.Second); !errors.Is(err, ErrMuxUnknownKind) {
		t.Errorf("unknown kind: err = %v, want ErrMuxUnknownKind", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := DialCluster(ctx, "127.0.0.1:1", MuxPeer, time.Second); err == nil {
		t.Error("dial with canceled ctx succeeded")
	}
}

func TestMuxListenerUnknownKindPanics(t *testing.T) {
	peerNoLeaks(t)
	m := muxStart(t, muxOptions{})
	defer func() {
		if recover() == nil {
			t.Error("Listener('X') did not panic")
		}
	}()
	m.Listener('X')
}
