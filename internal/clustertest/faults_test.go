package clustertest

import (
	"context"
	"errors"
	"github.com/switchboard/switchboard/internal/testenv"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	testenv.VerifyNoLeaks(m) // memberlist probes may outlive a stopped node briefly
}

// cutoffLogger logs node warnings to t until the test's cleanups run.
func cutoffLogger(t *testing.T) *slog.Logger { return TestLogger(t) }

// echoServer answers every byte it reads until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// roundTrip sends one byte and waits for its echo.
func roundTrip(c net.Conn) error {
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	if _, err := c.Write([]byte{'x'}); err != nil {
		return err
	}
	var b [1]byte
	_, err := io.ReadFull(c, b[:])
	return err
}

func dial(t *testing.T, f *faults, from, to string) (net.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return f.dialer(from)(ctx, "tcp", f.addrs[to])
}

func TestFaultsCutAndHealLinks(t *testing.T) {
	addrs := map[string]string{"a": echoServer(t), "b": echoServer(t), "c": echoServer(t)}
	f := newFaults(t, []string{"a", "b", "c"}, addrs)
	c := &Cluster{t: t, faults: f}

	open, err := dial(t, f, "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if err := roundTrip(open); err != nil {
		t.Fatalf("a->b before the partition: %v", err)
	}
	if got := open.RemoteAddr().String(); got == addrs["b"] {
		t.Fatalf("a->b went straight to b (%s), not through its proxy", got)
	}

	c.Partition([]string{"a"}, []string{"b", "c"})
	if err := roundTrip(open); err == nil {
		t.Fatal("a->b connection opened before the partition still works")
	}
	for _, tc := range []struct {
		from, to string
		cut      bool
	}{
		{"a", "b", true}, {"b", "a", true}, {"a", "c", true}, {"c", "a", true},
		{"b", "c", false}, {"c", "b", false},
	} {
		conn, err := dial(t, f, tc.from, tc.to)
		if tc.cut {
			if !errors.Is(err, ErrLinkCut) {
				t.Errorf("%s->%s during the partition: dial error %v, want ErrLinkCut", tc.from, tc.to, err)
			}
			if conn != nil {
				conn.Close()
			}
			continue
		}
		if err != nil {
			t.Errorf("%s->%s within a group: %v", tc.from, tc.to, err)
			continue
		}
		if err := roundTrip(conn); err != nil {
			t.Errorf("%s->%s within a group: %v", tc.from, tc.to, err)
		}
		conn.Close()
	}

	c.Heal()
	c.Isolate("c")
	for _, tc := range []struct {
		from, to string
		cut      bool
	}{{"a", "b", false}, {"b", "a", false}, {"a", "c", true}, {"c", "b", true}} {
		conn, err := dial(t, f, tc.from, tc.to)
		if tc.cut != (err != nil) {
			t.Errorf("%s->%s with c isolated: dial error %v, cut %v", tc.from, tc.to, err, tc.cut)
		}
		if err == nil {
			if rtErr := roundTrip(conn); rtErr != nil {
				t.Errorf("%s->%s with c isolated: %v", tc.from, tc.to, rtErr)
			}
			conn.Close()
		}
	}

	c.Heal()
	conn, err := dial(t, f, "c", "a")
	if err != nil {
		t.Fatalf("c->a after heal: %v", err)
	}
	defer conn.Close()
	if err := roundTrip(conn); err != nil {
		t.Fatalf("c->a after heal: %v", err)
	}
}

func TestFaultsLatencyDelaysOneDirection(t *testing.T) {
	addrs := map[string]string{"a": echoServer(t), "b": echoServer(t)}
	f := newFaults(t, []string{"a", "b"}, addrs)
	c := &Cluster{t: t, faults: f}
	const d = 200 * time.Millisecond

	open, err := dial(t, f, "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	c.Latency("a", "b", d)
	// A round trip crosses a->b once whichever side dialed, so it takes at
	// least d: on a's connection on the way out, on b's on the way back.
	for _, tc := range []struct {
		name string
		conn func() (net.Conn, error)
	}{
		{"open a->b connection", func() (net.Conn, error) { return open, nil }},
		{"new b->a connection", func() (net.Conn, error) { return dial(t, f, "b", "a") }},
	} {
		conn, err := tc.conn()
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := roundTrip(conn); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if took := time.Since(start); took < d {
			t.Errorf("%s: round trip took %v, want at least the %v latency", tc.name, took, d)
		}
	}

	c.Heal()
	for l, p := range f.proxies {
		if ts := p.Toxics.GetToxicArray(); len(ts) != 0 {
			t.Errorf("proxy %s still has %d toxics after heal", l, len(ts))
		}
	}
	if err := roundTrip(open); err != nil {
		t.Fatalf("a->b after heal: %v", err)
	}
}

func TestIsolatedLeaderIsReplaced(t *testing.T) {
	c := Start(t, 3, Options{Faults: true, Logger: cutoffLogger(t)})
	old := c.WaitLeader()
	c.Isolate(old)
	var rest []string
	for _, id := range c.IDs() {
		if id != old {
			rest = append(rest, id)
		}
	}
	var next string
	c.Eventually(30*time.Second, "a new leader among "+rest[0]+" and "+rest[1], func() bool {
		a, errA := c.Cluster(rest[0])
		b, errB := c.Cluster(rest[1])
		next = a.Leader
		return errA == nil && errB == nil && a.Leader != "" && a.Leader != old && a.Leader == b.Leader
	})
	t.Logf("isolated %s; %s took over", old, next)

	c.Heal()
	leader := c.WaitLeader()
	t.Logf("after heal every node follows %s", leader)
}
