package consensus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestConcurrentProposalsFromAllNodesApplyOnceEverywhere(t *testing.T) {
	c := newCluster(t)
	c.form(3)
	lead := c.leader()
	st := lead.r.Status()
	if vs, nvs := voters(st); len(vs) != 3 || len(nvs) != 0 {
		t.Fatalf("voters %v nonvoters %v, want 3 voters", vs, nvs)
	}

	const perNode, perWorker = 16, 25
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := make(map[int]string)
	for _, n := range c.nodes() {
		for w := range perNode {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perWorker {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					res, err := n.r.Propose(ctx, []byte("incr counter"))
					if err == nil {
						_, err = n.r.Propose(ctx, fmt.Appendf(nil, "set %s-%d-%d v%d", n.id, w, i, i))
					}
					cancel()
					if err != nil {
						t.Errorf("%s: propose: %v", n.id, err)
						return
					}
					v, _ := strconv.Atoi(string(res))
					mu.Lock()
					if prev, dup := seen[v]; dup {
						t.Errorf("counter value %d answered twice (%s and %s)", v, prev, n.id)
					}
					seen[v] = n.id
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	total := 3 * perNode * perWorker
	if len(seen) != total {
		t.Fatalf("got %d distinct counter answers, want %d", len(seen), total)
	}
	c.converged(lead)
	state := snapshotOf(lead)
	if got := state["counter"]; got != strconv.Itoa(total) {
		t.Fatalf("counter = %s, want %d", got, total)
	}
	if len(state) != total+1 {
		t.Fatalf("state has %d keys, want %d", len(state), total+1)
	}
	for _, n := range c.nodes() {
		if !n.r.Ready() {
			waitFor(t, 5*time.Second, n.id+" ready", n.r.Ready)
		}
	}
}

func TestProposalsContinueAfterLeaderCrash(t *testing.T) {
	c := newCluster(t)
	c.form(3)
	old := c.leader()
	proposeRetry(t, old.r, "set before crash")

	// Proposers on the survivors run through the crash; only unknown
	// outcomes and leaderless waits are acceptable failures.
	var after atomic.Int64
	var crashed atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, n := range c.nodes() {
		if n == old {
			continue
		}
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					_, err := n.r.Propose(ctx, fmt.Appendf(nil, "set %s-%d-%d x", n.id, w, i))
					cancel()
					switch {
					case err == nil:
						if crashed.Load() {
							after.Add(1)
						}
					case errors.Is(err, ErrNotCommitted), errors.Is(err, ErrNoLeader), errors.Is(err, context.DeadlineExceeded):
					default:
						t.Errorf("%s: unexpected error: %v", n.id, err)
						return
					}
				}
			}()
		}
	}
	time.Sleep(100 * time.Millisecond)
	c.stop(old.id)
	crashed.Store(true)

	lead := c.leader()
	if lead.id == old.id {
		t.Fatalf("old leader %s still leads", old.id)
	}
	waitFor(t, 10*time.Second, "proposals after the crash", func() bool { return after.Load() >= 50 })
	close(stop)
	wg.Wait()
	proposeRetry(t, lead.r, "set after crash")
	c.converged(lead)
	if got := snapshotOf(lead)["before"]; got != "crash" {
		t.Fatalf("entry committed before the crash lost: %q", got)
	}
}

func TestRestartedNodeRejoinsAndBootstrapIsIgnored(t *testing.T) {
	c := newCluster(t)
	c.form(3)
	lead := c.leader()
	var follower string
	for _, n := range c.nodes() {
		if n != lead {
			follower = n.id
		}
	}
	c.stop(follower)
	for i := range 50 {
		proposeRetry(t, lead.r, fmt.Sprintf("set k%d v%d", i, i))
	}

	// Bootstrap=true on a node with state must not form a second cluster.
	n := c.start(follower, true)
	waitFor(t, 10*time.Second, "restarted node to follow the leader", func() bool {
		id, _ := n.r.Leader()
		return id == lead.id
	})
	if n.r.IsLeader() {
		t.Fatal("restarted node leads a cluster of its own")
	}
	// The leader is known from its first AppendEntries; the configuration
	// only once the log has caught up (the node may have been stopped
	// before the configuration entries reached it).
	waitFor(t, 10*time.Second, "restarted node to see the 3-node configuration", func() bool {
		vs, _ := voters(n.r.Status())
		return len(vs) == 3
	})
	proposeRetry(t, n.r, "set from restarted node")
	c.converged(lead)
	waitFor(t, 5*time.Second, "restarted node ready", n.r.Ready)
}

func TestSnapshotInstallAndRestoreOnRestart(t *testing.T) {
	c := newCluster(t)
	snappy := func(cfg *Config) {
		cfg.SnapshotThreshold = 16
		cfg.SnapshotInterval = 50 * time.Millisecond
		cfg.TrailingLogs = 4
	}
	c.form(3, snappy)
	lead := c.leader()
	var lagging, other string
	for _, n := range c.nodes() {
		if n != lead {
			if lagging == "" {
				lagging = n.id
			} else {
				other = n.id
			}
		}
	}
	c.stop(lagging)
	// Sequential proposals: one log entry each, enough to snapshot and
	// compact past everything the stopped node holds.
	for i := range 80 {
		proposeRetry(t, lead.r, fmt.Sprintf("set k%d v%d", i, i))
	}
	waitFor(t, 10*time.Second, "snapshots on leader and follower", func() bool {
		return hasSnapshot(t, c, lead.id) && hasSnapshot(t, c, other)
	})

	// The lagging node can only catch up by installing the leader's snapshot.
	n := c.start(lagging, false, snappy)
	c.converged(lead)
	if n.sm.restores.Load() == 0 {
		t.Fatal("lagging node caught up without restoring a snapshot")
	}
	if n.r.LastApplied() == 0 {
		t.Fatal("LastApplied not set from the snapshot")
	}

	// A restarted node restores its own latest snapshot on start.
	c.stop(other)
	m := c.start(other, false, snappy)
	if m.sm.restores.Load() == 0 {
		t.Fatal("restart did not restore the local snapshot")
	}
	proposeRetry(t, lead.r, "set after restore")
	c.converged(lead)
	if got := snapshotOf(m)["k79"]; got != "v79" {
		t.Fatalf("k79 = %q after restore", got)
	}
}

func hasSnapshot(t *testing.T, c *cluster, id string) bool {
	entries, err := os.ReadDir(filepath.Join(c.base, id, "snapshots"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return len(entries) > 0
}

func TestReconcilePlacesVotersAcrossRegionsAndRestAsNonvoters(t *testing.T) {
	c := newCluster(t)
	n1 := c.start("n1", true)
	waitFor(t, 10*time.Second, "n1 to lead", n1.r.IsLeader)
	topology := map[string][2]string{"n1": {"r1", "a"}, "n2": {"r1", "a"}, "n3": {"r2", "a"}, "n4": {"r3", "b"}}
	c.node("n1").region = "r1"
	for _, id := range []string{"n2", "n3", "n4"} {
		n := c.start(id, false)
		n.region, n.zone = topology[id][0], topology[id][1]
	}
	c.reconcile(c.members())
	lead := c.leader()
	vs, nvs := voters(lead.r.Status())
	if fmt.Sprint(vs) != "[n1 n3 n4]" || fmt.Sprint(nvs) != "[n2]" {
		t.Fatalf("voters %v nonvoters %v, want voters [n1 n3 n4] nonvoters [n2]", vs, nvs)
	}
	// A nonvoter still holds a full replica.
	proposeRetry(t, c.node("n2").r, "set via nonvoter")
	c.converged(lead)
	// Reconcile is idempotent and a no-op on followers.
	if err := lead.r.Reconcile(c.members()); err != nil {
		t.Fatal(err)
	}
	if err := c.node("n2").r.Reconcile(nil); err != nil {
		t.Fatal(err)
	}
	if vs2, nvs2 := voters(lead.r.Status()); fmt.Sprint(vs2, nvs2) != fmt.Sprint(vs, nvs) {
		t.Fatalf("configuration changed on a repeated reconcile: %v %v", vs2, nvs2)
	}
}

func TestDeadVoterRemovedAfterGraceAndNonvoterPromoted(t *testing.T) {
	c := newCluster(t)
	const grace = time.Second
	c.form(4, func(cfg *Config) { cfg.DeadServerGrace = grace })
	lead := c.leader()
	vs, nvs := voters(lead.r.Status())
	if len(vs) != 3 || len(nvs) != 1 {
		t.Fatalf("voters %v nonvoters %v, want 3 and 1", vs, nvs)
	}
	var victim string
	for _, id := range vs {
		if id != lead.id {
			victim = id
			break
		}
	}
	c.stop(victim)
	ms := c.members()
	ms = append(ms, Member{ID: victim, Addr: c.addrs[victim], Region: "r1", Zone: "a", State: MemberDead})

	start := time.Now()
	if err := lead.r.Reconcile(ms); err != nil {
		t.Fatal(err)
	}
	if vs2, _ := voters(lead.r.Status()); time.Since(start) < grace && len(vs2) != 3 {
		t.Fatalf("dead voter removed before its grace: voters %v", vs2)
	}
	waitFor(t, 10*time.Second, "dead voter removed and nonvoter promoted", func() bool {
		if err := lead.r.Reconcile(ms); err != nil {
			t.Logf("reconcile: %v", err)
		}
		vs2, nvs2 := voters(lead.r.Status())
		return len(vs2) == 3 && len(nvs2) == 0 && fmt.Sprint(vs2) != fmt.Sprint(vs)
	})
	if time.Since(start) < grace {
		t.Fatalf("dead voter removed after %s, before its grace of %s", time.Since(start), grace)
	}
	proposeRetry(t, lead.r, "set after promotion")
	c.converged(lead)
}

func TestLeftMemberRemovedAtOnce(t *testing.T) {
	c := newCluster(t)
	c.form(3, func(cfg *Config) { cfg.DeadServerGrace = time.Hour })
	lead := c.leader()
	var leaving string
	for _, n := range c.nodes() {
		if n != lead {
			leaving = n.id
			break
		}
	}
	ms := c.members()
	for i := range ms {
		if ms[i].ID == leaving {
			ms[i].State = MemberLeft
		}
	}
	c.stop(leaving)
	if err := lead.r.Reconcile(ms); err != nil {
		t.Fatal(err)
	}
	for _, s := range lead.r.Status().Servers {
		if s.ID == leaving {
			t.Fatalf("left member %s still in configuration", leaving)
		}
	}
}

func TestProposeWithoutLeaderFailsWithErrNoLeader(t *testing.T) {
	c := newCluster(t)
	n := c.start("lonely", false)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := n.r.Propose(ctx, []byte("set a b"))
	if !errors.Is(err, ErrNoLeader) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrNoLeader wrapping the deadline", err)
	}
	if n.r.Ready() {
		t.Fatal("ready without a leader")
	}
	if err := n.r.TransferLeadership(); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("TransferLeadership on a follower: %v", err)
	}
}

func TestHandleForwardRejectsFollowerAndMalformedPayloads(t *testing.T) {
	c := newCluster(t)
	c.form(2)
	lead := c.leader()
	var follower *testNode
	for _, n := range c.nodes() {
		if n != lead {
			follower = n
		}
	}
	ctx := context.Background()
	batch := append([]byte{kindBatch}, encodeFrames([][]byte{[]byte("set a b")})...)
	tests := []struct {
		name    string
		r       *Raft
		payload []byte
		want    error
	}{
		{"batch on follower", follower.r, batch, ErrNotLeader},
		{"read index on follower", follower.r, []byte{kindReadIndex}, ErrNotLeader},
		{"empty", lead.r, nil, ErrMalformed},
		{"unknown kind", lead.r, []byte{0x7f}, ErrMalformed},
		{"truncated batch", lead.r, batch[:len(batch)-2], ErrMalformed},
		{"read index with trailing bytes", lead.r, []byte{kindReadIndex, 0}, ErrMalformed},
		{"batch on leader", lead.r, batch, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tt.r.HandleForward(ctx, tt.payload)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.want == nil {
				if res, err := decodeFrames(resp); err != nil || len(res) != 1 {
					t.Fatalf("results %q, %v", res, err)
				}
			}
		})
	}
}

func TestCloseIsIdempotentAndFailsLaterProposals(t *testing.T) {
	c := newCluster(t)
	c.form(1)
	n := c.node("n1")
	proposeRetry(t, n.r, "set a b")
	c.stop("n1")
	if err := n.r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := n.r.Propose(context.Background(), []byte("set a c")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Propose after Close: %v", err)
	}
	if n.r.Ready() {
		t.Fatal("ready after Close")
	}
}

func TestOnLeaderChangeReportsLeadership(t *testing.T) {
	c := newCluster(t)
	got := make(chan bool, 4)
	n := c.start("n1", true)
	n.r.OnLeaderChange(func(isLeader bool) { got <- isLeader })
	select {
	case v := <-got:
		if !v {
			t.Fatal("first change reported false")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no leadership notification")
	}
}

func TestCloseEndsIdleInboundConnections(t *testing.T) {
	c := newCluster(t)
	n := c.start("n1", true)
	// An idle peer connection: NetworkTransport alone would leave its
	// reader goroutine blocked after Close.
	conn, err := net.DialTimeout("tcp", n.addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitFor(t, 5*time.Second, "connection accepted", func() bool {
		n.r.stream.mu.Lock()
		defer n.r.stream.mu.Unlock()
		return len(n.r.stream.conns) > 0
	})
	c.stop("n1")
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read after Close: %v, want EOF", err)
	}
}

func TestLiveBootstrapOnlyWithoutState(t *testing.T) {
	c := newCluster(t)
	n1 := c.start("n1", false)
	if n1.r.HasState() {
		t.Fatal("a fresh node reports Raft state")
	}
	if err := n1.r.Bootstrap(); err != nil {
		t.Fatalf("Bootstrap on a fresh node: %v", err)
	}
	waitFor(t, 10*time.Second, "n1 to lead after a live bootstrap", n1.r.IsLeader)
	if !n1.r.HasState() {
		t.Fatal("a bootstrapped node reports no Raft state")
	}
	if err := n1.r.Bootstrap(); !errors.Is(err, ErrAlreadyBootstrapped) {
		t.Fatalf("second Bootstrap: got %v, want ErrAlreadyBootstrapped", err)
	}

	// A node a leader has replicated to holds state and refuses to
	// bootstrap a cluster of its own.
	n2 := c.start("n2", false)
	c.reconcile(c.members())
	waitFor(t, 10*time.Second, "n2 to hold Raft state", n2.r.HasState)
	if err := n2.r.Bootstrap(); !errors.Is(err, ErrAlreadyBootstrapped) {
		t.Fatalf("Bootstrap on a replicated node: got %v, want ErrAlreadyBootstrapped", err)
	}
	if id, _ := c.leader().r.Leader(); id != "n1" {
		t.Fatalf("leader %q, want n1", id)
	}
}
