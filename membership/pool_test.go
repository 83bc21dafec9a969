package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/testenv"
)

// TestMain fails the package if any goroutine outlives the tests. Leaks
// are polled for: after Shutdown, memberlist's probe goroutine may still
// wait for its ack timer (up to ProbeInterval) and open stream handlers
// for TCPTimeout. Nothing is ignored; they get time to end.
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }

// testLogger keeps logs quiet and shows them only if the test fails.
func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	buf := &testenv.Buffer{} // outlives the test: memberlist may log while shutting down, when t.Log would panic
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

const waitTimeout = 15 * time.Second

// waitFor polls cond until it returns nil, failing the test with the last
// error after waitTimeout.
func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func nodeID(i int) string { return fmt.Sprintf("n%d", i+1) }

func testConfig(t *testing.T, i int) Config {
	return Config{
		NodeID:      nodeID(i),
		Region:      "r1",
		Zone:        string(rune('a' + i)),
		BindAddr:    "127.0.0.1:0",
		PublicURL:   fmt.Sprintf("http://127.0.0.1:%d", 7700+10*i),
		ClusterAddr: fmt.Sprintf("127.0.0.1:%d", 7701+10*i),
		Profile:     ProfileLocal,
		Logger:      testLogger(t),
	}
}

func startPool(t *testing.T, i int) *Pool {
	t.Helper()
	p, err := New(testConfig(t, i))
	if err != nil {
		t.Fatalf("New(%s): %v", nodeID(i), err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// startCluster starts n pools, joins them through the first and waits until
// every pool sees every node alive.
func startCluster(t *testing.T, n int) []*Pool {
	t.Helper()
	pools := make([]*Pool, n)
	for i := range pools {
		pools[i] = startPool(t, i)
	}
	joinAll(t, pools)
	return pools
}

// joinAll joins pools through the first and waits until every pool sees
// every one alive.
func joinAll(t *testing.T, pools []*Pool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for _, p := range pools[1:] {
		if err := p.Join(ctx, []string{pools[0].Local().GossipAddr}); err != nil {
			t.Fatalf("Join: %v", err)
		}
	}
	for _, p := range pools {
		for i := range pools {
			waitState(t, p, nodeID(i), StateAlive)
		}
	}
}

// waitState waits until observer reports member id in state want.
func waitState(t *testing.T, observer *Pool, id string, want State) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to see %s %s", observer.Local().ID, id, want), func() error {
		m, ok := observer.Member(id)
		if !ok {
			return errors.New("unknown")
		}
		if m.State != want {
			return fmt.Errorf("state %s", m.State)
		}
		return nil
	})
}

func TestPoolMembersSeeEachOtherAliveWithMeta(t *testing.T) {
	t.Parallel()
	pools := startCluster(t, 3)
	for _, observer := range pools {
		members := observer.Members()
		if len(members) != 3 {
			t.Fatalf("%s sees %d members, want 3", observer.Local().ID, len(members))
		}
		for i, m := range members {
			cfg := testConfig(t, i)
			want := Meta{ID: cfg.NodeID, Region: cfg.Region, Zone: cfg.Zone, PublicURL: cfg.PublicURL, ClusterAddr: cfg.ClusterAddr}
			if m.Meta != want {
				t.Errorf("%s sees meta %+v, want %+v (sorted by ID)", observer.Local().ID, m.Meta, want)
			}
			if m.State != StateAlive || m.Since.IsZero() {
				t.Errorf("%s sees %s in state %s since %v", observer.Local().ID, m.ID, m.State, m.Since)
			}
			if m.GossipAddr != pools[i].Local().GossipAddr {
				t.Errorf("%s sees %s at %s, want %s", observer.Local().ID, m.ID, m.GossipAddr, pools[i].Local().GossipAddr)
			}
		}
	}
	if _, port, _ := net.SplitHostPort(pools[0].Local().GossipAddr); port == "0" || port == "" {
		t.Errorf("Local().GossipAddr = %q, want the bound port", pools[0].Local().GossipAddr)
	}
	if _, ok := pools[0].Member("nope"); ok {
		t.Error("Member(nope) found")
	}
}

func TestSetDrainingPropagates(t *testing.T) {
	t.Parallel()
	pools := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	for _, tt := range []struct {
		draining bool
		want     State
	}{{true, StateDraining}, {false, StateAlive}} {
		if err := pools[1].SetDraining(ctx, tt.draining); err != nil {
			t.Fatalf("SetDraining(%t): %v", tt.draining, err)
		}
		for _, observer := range pools {
			waitState(t, observer, "n2", tt.want)
			if m, _ := observer.Member("n2"); m.Draining != tt.draining {
				t.Fatalf("%s sees Draining=%t", observer.Local().ID, m.Draining)
			}
		}
	}
}

func TestSetClusteredPropagates(t *testing.T) {
	t.Parallel()
	pools := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := pools[2].SetClustered(ctx); err != nil {
		t.Fatalf("SetClustered: %v", err)
	}
	for _, observer := range pools {
		waitFor(t, observer.Local().ID+" to see n3 clustered", func() error {
			m, _ := observer.Member("n3")
			if !m.Clustered || m.State != StateAlive {
				return fmt.Errorf("n3 %s, clustered=%t", m.State, m.Clustered)
			}
			return nil
		})
	}
	if m, _ := pools[0].Member("n2"); m.Clustered {
		t.Fatal("n2 is seen clustered: only n3 announced it")
	}
}

func TestClosedNodeIsSeenDead(t *testing.T) {
	t.Parallel()
	pools := startCluster(t, 3)
	if err := pools[2].Close(); err != nil {
		t.Fatal(err)
	}
	for _, observer := range pools[:2] {
		waitState(t, observer, "n3", StateDead)
	}
	if got := len(pools[0].Members()); got != 3 {
		t.Fatalf("dead member forgotten: %d members", got)
	}
}

func TestLeftNodeIsSeenLeft(t *testing.T) {
	t.Parallel()
	pools := startCluster(t, 3)
	if err := pools[2].Leave(5 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if got := pools[2].Local().State; got != StateLeft {
		t.Errorf("leaving node sees itself %s, want left", got)
	}
	if err := pools[2].Close(); err != nil {
		t.Fatal(err)
	}
	for _, observer := range pools[:2] {
		waitState(t, observer, "n3", StateLeft)
	}
}

func TestRestartedNodeRejoinsAlive(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		leave     bool
		goneState State
	}{
		{"after crash", false, StateDead},
		{"after leave", true, StateLeft},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pools := startCluster(t, 3)
			oldAddr := pools[2].Local().GossipAddr
			if tt.leave {
				if err := pools[2].Leave(5 * time.Second); err != nil {
					t.Fatalf("Leave: %v", err)
				}
			}
			if err := pools[2].Close(); err != nil {
				t.Fatal(err)
			}
			// Both peers must have seen the old instance go: a peer that still
			// thinks it alive rejects a same-name node at a new address until
			// its own failure detector declares the old one dead.
			for _, observer := range pools[:2] {
				waitState(t, observer, "n3", tt.goneState)
			}

			// Same ID, new process, new port (port 0): it must reclaim its name.
			restarted := startPool(t, 2)
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			if err := restarted.Join(ctx, []string{pools[0].Local().GossipAddr}); err != nil {
				t.Fatalf("Join: %v", err)
			}
			newAddr := restarted.Local().GossipAddr
			if newAddr == oldAddr {
				t.Logf("restarted on the same address %s", newAddr)
			}
			for _, observer := range []*Pool{pools[0], pools[1], restarted} {
				waitFor(t, observer.Local().ID+" to see n3 alive again", func() error {
					m, _ := observer.Member("n3")
					if m.State != StateAlive || m.GossipAddr != newAddr {
						return fmt.Errorf("n3 %s at %s", m.State, m.GossipAddr)
					}
					return nil
				})
			}
			for i := range 2 {
				waitState(t, restarted, nodeID(i), StateAlive)
			}
		})
	}
}

func TestChangesSignalsMembershipEvents(t *testing.T) {
	t.Parallel()
	pools := startCluster(t, 2)
	ch := pools[0].Changes()
	if cap(ch) != 1 {
		t.Fatalf("Changes capacity %d, want 1", cap(ch))
	}
	// Nobody read it while the cluster formed: one hint must be pending,
	// and memberlist must not have blocked on it.
	select {
	case <-ch:
	default:
		t.Fatal("no pending hint after join")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := pools[1].SetDraining(ctx, true); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatal("no hint after peer started draining")
	}
	if m, _ := pools[0].Member("n2"); m.State != StateDraining {
		t.Fatalf("after hint, n2 is %s, want draining", m.State)
	}
	if err := pools[1].Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatal("no hint after peer failed")
	}
}

func TestJoin(t *testing.T) {
	t.Parallel()
	p := startPool(t, 0)

	// A port that refuses connections.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := l.Addr().String()
	l.Close()

	tests := []struct {
		name    string
		addrs   []string
		wantErr []error
	}{
		{"no seeds", nil, nil},
		{"only self", []string{p.Local().GossipAddr, ""}, nil},
		{"unreachable until deadline", []string{refused}, []error{ErrJoin, context.DeadlineExceeded}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			err := p.Join(ctx, tt.addrs)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("Join: %v", err)
			}
			for _, want := range tt.wantErr {
				if !errors.Is(err, want) {
					t.Fatalf("Join err = %v, want %v", err, want)
				}
			}
		})
	}
	if got := len(p.Members()); got != 1 {
		t.Fatalf("lone pool has %d members", got)
	}
}

func TestLifecycleErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	seed := []string{"127.0.0.1:1"}

	left := startPool(t, 0)
	if err := left.Leave(time.Second); err != nil {
		t.Fatalf("Leave alone: %v", err)
	}
	closed := startPool(t, 1)
	if err := closed.Close(); err != nil {
		t.Fatal(err)
	}

	live := startPool(t, 2)
	expired, cancel := context.WithTimeout(ctx, -time.Second)
	defer cancel()

	tests := []struct {
		name string
		op   func() error
		want error
	}{
		{"drain with expired context", func() error { return live.SetDraining(expired, true) }, context.DeadlineExceeded},
		{"leave twice", func() error { return left.Leave(time.Second) }, nil},
		{"join after leave", func() error { return left.Join(ctx, seed) }, ErrLeft},
		{"drain after leave", func() error { return left.SetDraining(ctx, true) }, ErrLeft},
		{"close twice", closed.Close, nil},
		{"leave after close", func() error { return closed.Leave(time.Second) }, ErrClosed},
		{"join after close", func() error { return closed.Join(ctx, seed) }, ErrClosed},
		{"drain after close", func() error { return closed.SetDraining(ctx, true) }, ErrClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.op(); !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if live.Local().Draining {
		t.Fatal("failed SetDraining changed the local meta without gossiping it")
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	cfg := testConfig(t, 0)
	cfg.NodeID = ""
	if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New err = %v, want ErrInvalidConfig", err)
	}
}
