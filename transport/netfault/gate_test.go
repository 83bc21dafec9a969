package netfault

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// clock is a settable time for the gate.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func testGate() (*Gate, *clock) {
	c := &clock{t: time.Unix(1000, 0)}
	g := NewGate()
	g.now = c.now
	return g, c
}

// TestIsolateClosesAndRefusesUntilItEnds: an isolation closes the
// connections the gate let through, refuses dials and accepted
// connections while it lasts, and ends by itself.
func TestIsolateClosesAndRefusesUntilItEnds(t *testing.T) {
	g, clk := testGate()
	a, b := net.Pipe()
	defer b.Close()
	tracked, err := g.Admit(a)
	if err != nil {
		t.Fatal(err)
	}
	dials := 0
	dial := g.Dial(func(context.Context, string, string) (net.Conn, error) {
		dials++
		c, _ := net.Pipe()
		return c, nil
	})

	g.Isolate(10 * time.Second)
	if !g.Isolated() {
		t.Fatal("not isolated")
	}
	if _, err := tracked.Write([]byte("x")); err == nil {
		t.Fatal("a connection open before the isolation still writes")
	}
	if _, err := dial(context.Background(), "tcp", "peer:1"); !errors.Is(err, ErrIsolated) || dials != 0 {
		t.Fatalf("dial while isolated: %v (%d dials)", err, dials)
	}
	c, d := net.Pipe()
	defer d.Close()
	if _, err := g.Admit(c); !errors.Is(err, ErrIsolated) {
		t.Fatalf("admit while isolated: %v", err)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("a refused connection was not closed")
	}

	clk.add(10 * time.Second)
	if g.Isolated() {
		t.Fatal("still isolated after the duration")
	}
	conn, err := dial(context.Background(), "tcp", "peer:1")
	if err != nil || dials != 1 {
		t.Fatalf("dial after the isolation: %v (%d dials)", err, dials)
	}
	conn.Close()
	g.mu.Lock()
	n := len(g.conns)
	g.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d connections still tracked after they closed", n)
	}
}

// TestListenerDropsWhileIsolated: accepted connections are closed while
// isolated; Accept hands out the next one after.
func TestListenerDropsWhileIsolated(t *testing.T) {
	g, clk := testGate()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gl := g.Listener(ln)
	defer gl.Close()
	g.Isolate(time.Second)
	refused, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer refused.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := gl.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	// The refused connection is closed by the gate: its read ends.
	_ = refused.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := refused.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on a connection accepted while isolated: %v, want it closed", err)
	}
	clk.add(time.Second)
	ok, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer ok.Close()
	select {
	case c := <-accepted:
		if c == nil {
			t.Fatal("accept failed")
		}
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted after the isolation")
	}
}

func TestSlowDelaysUntilItEnds(t *testing.T) {
	g, clk := testGate()
	if g.Delay() != 0 {
		t.Fatal("delay without a fault")
	}
	g.Slow(200*time.Millisecond, time.Second)
	if d := g.Delay(); d != 200*time.Millisecond {
		t.Fatalf("delay %v, want 200ms", d)
	}
	clk.add(time.Second)
	if d := g.Delay(); d != 0 {
		t.Fatalf("delay %v after the fault ended", d)
	}
	var none *Gate // nodes without fault injection
	if none.Isolated() || none.Delay() != 0 {
		t.Fatal("a nil gate must be open")
	}
}
