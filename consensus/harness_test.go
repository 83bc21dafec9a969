package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/testenv"
)

func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }

// kvSM is the test state machine: a string map with two commands,
// "set <key> <value>" (answers the previous value) and "incr <key>"
// (answers the new count).
type kvSM struct {
	data     map[string]string
	restores atomic.Int32
}

func newKV() *kvSM { return &kvSM{data: make(map[string]string)} }

func (s *kvSM) Apply(_ uint64, cmd []byte) []byte {
	op, rest, _ := strings.Cut(string(cmd), " ")
	switch op {
	case "set":
		k, v, _ := strings.Cut(rest, " ")
		prev := s.data[k]
		s.data[k] = v
		return []byte(prev)
	case "incr":
		n, _ := strconv.Atoi(s.data[rest])
		n++
		s.data[rest] = strconv.Itoa(n)
		return []byte(s.data[rest])
	default:
		return []byte("unknown command")
	}
}

func (s *kvSM) Snapshot() (func(io.Writer) error, error) {
	cp := make(map[string]string, len(s.data))
	for k, v := range s.data {
		cp[k] = v
	}
	return func(w io.Writer) error { return json.NewEncoder(w).Encode(cp) }, nil
}

func (s *kvSM) Restore(r io.Reader) error {
	data := make(map[string]string)
	if err := json.NewDecoder(r).Decode(&data); err != nil {
		return err
	}
	s.data = data
	s.restores.Add(1)
	return nil
}

// snapshotOf copies a node's state under the FSM read lock.
func snapshotOf(n *testNode) map[string]string {
	var cp map[string]string
	n.r.Read(func() {
		cp = make(map[string]string, len(n.sm.data))
		for k, v := range n.sm.data {
			cp[k] = v
		}
	})
	return cp
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.DiscardHandler)
}

// testConfig is fast-failover timing over loopback; tests opt into NoSync.
func testConfig() Config {
	c := DefaultConfig()
	c.HeartbeatTimeout = 100 * time.Millisecond
	c.ElectionTimeout = 100 * time.Millisecond
	c.LeaderLeaseTimeout = 50 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.NoSync = true
	c.Logger = testLogger()
	return c
}

// cluster is an in-process Raft cluster over real TCP on 127.0.0.1.
type cluster struct {
	tb   testing.TB
	base string
	mu   sync.Mutex
	byID map[string]*testNode
	// addrs keeps each node's address across restarts.
	addrs map[string]string
}

type testNode struct {
	id, addr     string
	region, zone string
	sm           *kvSM
	r            *Raft
}

func newCluster(tb testing.TB) *cluster {
	c := &cluster{tb: tb, base: tb.TempDir(), byID: make(map[string]*testNode), addrs: make(map[string]string)}
	tb.Cleanup(c.closeAll)
	return c
}

func (c *cluster) closeAll() {
	c.mu.Lock()
	ids := make([]string, 0, len(c.byID))
	for id := range c.byID {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	for _, id := range ids {
		c.stop(id)
	}
}

func (c *cluster) forward(ctx context.Context, addr string, payload []byte) ([]byte, error) {
	c.mu.Lock()
	var target *testNode
	for _, n := range c.byID {
		if n.addr == addr {
			target = n
		}
	}
	c.mu.Unlock()
	if target == nil {
		return nil, fmt.Errorf("no node at %s", addr)
	}
	return target.r.HandleForward(ctx, payload)
}

func dialTCP(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.DialContext(ctx, "tcp", addr)
}

// start starts (or restarts, on its old address and data) node id.
func (c *cluster) start(id string, bootstrap bool, tweak ...func(*Config)) *testNode {
	c.tb.Helper()
	addr := c.addrs[id]
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for range 50 { // a restarted node's port can take a moment to free up
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		c.tb.Fatalf("listen %s: %v", addr, err)
	}
	addr = ln.Addr().String()
	c.addrs[id] = addr

	cfg := testConfig()
	cfg.NodeID = id
	cfg.DataDir = filepath.Join(c.base, id)
	cfg.Bootstrap = bootstrap
	cfg.AdvertiseAddr = addr
	cfg.Listener = ln
	cfg.Dial = dialTCP
	cfg.Forward = c.forward
	for _, f := range tweak {
		f(&cfg)
	}
	sm := newKV()
	r, err := New(cfg, sm)
	if err != nil {
		_ = ln.Close()
		c.tb.Fatalf("start %s: %v", id, err)
	}
	n := &testNode{id: id, addr: addr, sm: sm, r: r, region: "r1", zone: "a"}
	c.mu.Lock()
	c.byID[id] = n
	c.mu.Unlock()
	return n
}

func (c *cluster) stop(id string) {
	c.mu.Lock()
	n := c.byID[id]
	delete(c.byID, id)
	c.mu.Unlock()
	if n == nil {
		return
	}
	if err := n.r.Close(); err != nil {
		c.tb.Errorf("close %s: %v", id, err)
	}
}

func (c *cluster) node(id string) *testNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byID[id]
}

func (c *cluster) nodes() []*testNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*testNode, 0, len(c.byID))
	for _, n := range c.byID {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b *testNode) int { return strings.Compare(a.id, b.id) })
	return out
}

// members describes the running nodes as alive gossip members.
func (c *cluster) members() []Member {
	var ms []Member
	for _, n := range c.nodes() {
		ms = append(ms, Member{ID: n.id, Addr: n.addr, Region: n.region, Zone: n.zone, State: MemberAlive})
	}
	return ms
}

// leader waits until all running nodes agree on one leader and returns it.
func (c *cluster) leader() *testNode {
	c.tb.Helper()
	var lead *testNode
	waitFor(c.tb, 10*time.Second, "a leader all nodes agree on", func() bool {
		lead = nil
		ns := c.nodes()
		for _, n := range ns {
			if n.r.IsLeader() {
				lead = n
			}
		}
		if lead == nil {
			return false
		}
		for _, n := range ns {
			if id, _ := n.r.Leader(); id != lead.id {
				return false
			}
		}
		return true
	})
	return lead
}

// form starts n nodes (n1 bootstraps) and adds the others via Reconcile.
func (c *cluster) form(n int, tweak ...func(*Config)) {
	c.tb.Helper()
	n1 := c.start("n1", true, tweak...)
	waitFor(c.tb, 10*time.Second, "n1 to lead", n1.r.IsLeader)
	for i := 2; i <= n; i++ {
		c.start(fmt.Sprintf("n%d", i), false, tweak...)
	}
	c.reconcile(c.members())
	c.leader()
}

// reconcile runs Reconcile on the leader until it succeeds. Nodes not yet
// in the configuration know no leader, so it looks for the node that leads.
func (c *cluster) reconcile(ms []Member) {
	c.tb.Helper()
	waitFor(c.tb, 10*time.Second, "reconcile to succeed", func() bool {
		var lead *testNode
		for _, n := range c.nodes() {
			if n.r.IsLeader() {
				lead = n
			}
		}
		if lead == nil {
			return false
		}
		err := lead.r.Reconcile(ms)
		if err != nil {
			c.tb.Logf("reconcile: %v", err)
		}
		return err == nil
	})
}

// converged waits until every running node has the same state as want's.
func (c *cluster) converged(want *testNode) {
	c.tb.Helper()
	waitFor(c.tb, 10*time.Second, "replicas to converge", func() bool {
		ref := snapshotOf(want)
		for _, n := range c.nodes() {
			if !mapsEqual(snapshotOf(n), ref) {
				return false
			}
		}
		return true
	})
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func voters(st Status) (vs, nvs []string) {
	for _, s := range st.Servers {
		if s.Suffrage == SuffrageVoter {
			vs = append(vs, s.ID)
		} else {
			nvs = append(nvs, s.ID)
		}
	}
	slices.Sort(vs)
	slices.Sort(nvs)
	return vs, nvs
}

func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// proposeRetry proposes until success, retrying outcomes that are unknown
// or leaderless: the test commands are idempotent, as the contract expects.
func proposeRetry(tb testing.TB, r *Raft, cmd string) []byte {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		res, err := r.Propose(ctx, []byte(cmd))
		cancel()
		if err == nil {
			return res
		}
		retryable := errors.Is(err, ErrNotCommitted) || errors.Is(err, ErrNoLeader) || errors.Is(err, context.DeadlineExceeded)
		if !retryable || time.Now().After(deadline) {
			tb.Fatalf("propose %q: %v", cmd, err)
		}
	}
}
