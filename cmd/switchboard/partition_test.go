package main

// Fault tests against real switchboard processes: SIGKILL of an owner, and
// a real network partition built from Linux network namespaces. Both run
// many users with SDK clients and continuous publishers, and assert the
// guarantees (DESIGN.md §1) on what the clients received and what the
// publishers were told, not merely that nothing returned an error.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard/switchboard/client"
	"github.com/switchboard/switchboard/internal/testenv"
	"github.com/switchboard/switchboard/internal/token"
)

// procUser is one user of a process workload: its SDK client, what it
// received, and what its publisher was told.
type procUser struct {
	name  string
	first string // node id of its first endpoint
	cl    *client.Client
	dups  atomic.Int64 // duplicates the SDK dropped: the server sent them

	mu         sync.Mutex
	got        []client.Message
	events     []client.Event
	acks       map[string]uint64 // id → seq
	bySeq      map[uint64]string // seq → id
	conflicts  []string
	gaveUp     []string
	afterFault int
	before     sessionView
}

// sessionView is GET /v1/sessions/{user}.
type sessionView struct {
	Session string `json:"session"`
	Owner   string `json:"owner"`
	Backup  string `json:"backup"`
	Epoch   uint64 `json:"epoch"`
}

// procWorkload drives users and publishers against a set of nodes.
type procWorkload struct {
	t      *testing.T
	nodes  map[string]*member
	live   func() []string // ids of the nodes publishers may use
	users  []*procUser
	http   *http.Client
	stop   chan struct{}
	pubs   sync.WaitGroup
	recv   sync.WaitGroup
	faultT atomic.Bool

	attempts, rejected atomic.Int64
}

// startProcWorkload dials one SDK client per user (user i tries
// placement[i%len] first, then every other node) and starts one
// publisher per user that retries each message under its id until 200.
func startProcWorkload(t *testing.T, nodes map[string]*member, placement []string, users int, live func() []string) *procWorkload {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2 * users
	w := &procWorkload{t: t, nodes: nodes, live: live, stop: make(chan struct{}),
		http: &http.Client{Timeout: 3 * time.Second, Transport: tr}}
	ids := make([]string, 0, len(nodes))
	for id := range nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	errs := make([]error, users)
	var dials sync.WaitGroup
	for i := range users {
		u := &procUser{name: fmt.Sprintf("pu%02d", i), first: placement[i%len(placement)], acks: map[string]uint64{}, bySeq: map[uint64]string{}}
		w.users = append(w.users, u)
		eps := []string{nodes[u.first].wsURL()}
		for _, id := range ids {
			if id != u.first {
				eps = append(eps, nodes[id].wsURL())
			}
		}
		tok, err := token.Mint([]byte(procTokenSecret), u.name, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cfg := client.DefaultConfig()
		cfg.Endpoints, cfg.Token = eps, client.StaticToken(tok)
		cfg.BackoffBase, cfg.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
		cfg.Logger = slog.New(dupHandler{&u.dups})
		dials.Add(1)
		go func() {
			defer dials.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			u.cl, errs[i] = client.Dial(ctx, cfg)
		}()
	}
	dials.Wait()
	t.Cleanup(w.shutdown)
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("dial: %v", err)
	}
	for _, u := range w.users {
		w.recv.Add(2)
		go func() {
			defer w.recv.Done()
			for m := range u.cl.Messages() {
				u.mu.Lock()
				u.got = append(u.got, m)
				u.mu.Unlock()
			}
		}()
		go func() {
			defer w.recv.Done()
			for e := range u.cl.Events() {
				u.mu.Lock()
				u.events = append(u.events, e)
				u.mu.Unlock()
			}
		}()
		w.pubs.Add(1)
		go w.publish(u)
	}
	return w
}

func (w *procWorkload) publish(u *procUser) {
	defer w.pubs.Done()
	rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
	for k := 1; ; k++ {
		select {
		case <-w.stop:
			return
		case <-time.After(time.Duration(10+rng.IntN(40)) * time.Millisecond):
		}
		id := fmt.Sprintf("%s-m%d", u.name, k)
		after := w.faultT.Load()
		begun := time.Now()
		for {
			live := w.live()
			via := w.nodes[live[rng.IntN(len(live))]]
			w.attempts.Add(1)
			st, a, err := w.post(via, u.name, id, k)
			if err == nil && st == http.StatusOK {
				u.mu.Lock()
				if prev, ok := u.bySeq[a.Seq]; ok && prev != id {
					u.conflicts = append(u.conflicts, fmt.Sprintf("seq %d acknowledged for %s and %s", a.Seq, prev, id))
				}
				u.acks[id], u.bySeq[a.Seq] = a.Seq, id
				if after {
					u.afterFault++
				}
				u.mu.Unlock()
				break
			}
			w.rejected.Add(1)
			if time.Since(begun) > 20*time.Second {
				u.mu.Lock()
				u.gaveUp = append(u.gaveUp, fmt.Sprintf("%s (last: %d %v)", id, st, err))
				u.mu.Unlock()
				break
			}
			time.Sleep(20 * time.Millisecond) // and go on with the same id even after stop
		}
	}
}

func (w *procWorkload) post(n *member, user, id string, k int) (int, publishAnswer, error) {
	var a publishAnswer
	body := fmt.Sprintf(`{"user":%q,"id":%q,"data":{"k":%d}}`, user, id, k)
	req, err := http.NewRequest(http.MethodPost, n.base()+"/v1/publish", strings.NewReader(body))
	if err != nil {
		return 0, a, err
	}
	req.Header.Set("Authorization", "Bearer "+procAPIKey)
	resp, err := w.http.Do(req)
	if err != nil {
		return 0, a, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, a, nil
	}
	return resp.StatusCode, a, json.NewDecoder(resp.Body).Decode(&a)
}

func (w *procWorkload) count(f func(u *procUser) int) int {
	least := -1
	for _, u := range w.users {
		u.mu.Lock()
		n := f(u)
		u.mu.Unlock()
		if least < 0 || n < least {
			least = n
		}
	}
	return least
}

// waitEach waits until f(u) >= n for every user.
func (w *procWorkload) waitEach(n int, timeout time.Duration, what string, f func(u *procUser) int) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for w.count(f) < n {
		if time.Now().After(deadline) {
			w.t.Fatalf("timed out after %v waiting for %d %s per user (least: %d)", timeout, n, what, w.count(f))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (w *procWorkload) session(via *member, user string) (sessionView, int) {
	var s sessionView
	st, _, body := request(http.MethodGet, via.base()+"/v1/sessions/"+user, procAdminKey, nil)
	if st == http.StatusOK {
		_ = json.Unmarshal(body, &s)
	}
	return s, st
}

// snapshot records every user's registry entry before the fault and
// returns the node owning the most users.
func (w *procWorkload) snapshot(via *member) (string, int) {
	w.t.Helper()
	owned := map[string]int{}
	for _, u := range w.users {
		deadline := time.Now().Add(10 * time.Second)
		for {
			s, st := w.session(via, u.name)
			if st == http.StatusOK && s.Owner != "" && s.Backup != "" {
				u.before = s
				break
			}
			if time.Now().After(deadline) {
				w.t.Fatalf("registry entry of %s: %d %+v", u.name, st, s)
			}
			time.Sleep(50 * time.Millisecond)
		}
		owned[u.before.Owner]++
	}
	best, n := "", -1
	for id, k := range owned {
		if k > n || k == n && id < best {
			best, n = id, k
		}
	}
	return best, n
}

func (w *procWorkload) stopPublishing() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.pubs.Wait()
}

func (w *procWorkload) shutdown() {
	w.stopPublishing()
	for _, u := range w.users {
		if u.cl != nil {
			_ = u.cl.Close()
		}
	}
	w.recv.Wait()
	w.http.CloseIdleConnections()
}

// check asserts G1–G3 per user (seqs 1..n in order without gaps or
// duplicates, on the wire too; every acknowledged id received under its
// seq; no seq acknowledged for two ids; no continuity loss or seq
// anomaly reported) and G4 in the registry read through via (owner and
// backup distinct live nodes, same session, no older epoch).
func (w *procWorkload) check(via *member, live []string) {
	t := w.t
	t.Helper()
	w.stopPublishing()
	deadline := time.Now().Add(15 * time.Second)
	total := 0
	for _, u := range w.users {
		u.mu.Lock()
		maxAcked := uint64(0)
		for s := range u.bySeq {
			maxAcked = max(maxAcked, s)
		}
		u.mu.Unlock()
		for {
			u.mu.Lock()
			last := uint64(0)
			if n := len(u.got); n > 0 {
				last = u.got[n-1].Seq
			}
			u.mu.Unlock()
			if last >= maxAcked || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		u.mu.Lock()
		total += len(u.acks)
		var errs []string
		fail := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
		for _, e := range u.events {
			if e.Kind == client.EventContinuityLost || e.Kind == client.EventSequenceAnomaly {
				fail("client event %s from %s: %v", e.Kind, e.Node, e.Err)
			}
		}
		for _, c := range u.conflicts {
			fail("%s", c)
		}
		for _, g := range u.gaveUp {
			fail("never acknowledged: %s", g)
		}
		if d := u.dups.Load(); d > 0 {
			fail("server sent %d duplicates", d)
		}
		if u.afterFault == 0 {
			fail("no publish begun after the fault was acknowledged")
		}
		seqOf := map[string]uint64{}
		for i, m := range u.got {
			if m.Seq != uint64(i+1) {
				fail("message %d has seq %d (gap, duplicate or disorder)", i, m.Seq)
				break
			}
			if _, dup := seqOf[m.ID]; dup {
				fail("id %s stored twice", m.ID)
			}
			seqOf[m.ID] = m.Seq
			if id, ok := u.bySeq[m.Seq]; ok && id != m.ID {
				fail("seq %d delivered as %s, acknowledged for %s", m.Seq, m.ID, id)
			}
		}
		var lost []string
		for id, s := range u.acks {
			if got, ok := seqOf[id]; !ok || got != s {
				lost = append(lost, fmt.Sprintf("%s@%d", id, s))
			}
		}
		if len(lost) > 0 {
			sort.Strings(lost)
			fail("%d acknowledged messages not received as acknowledged, e.g. %v", len(lost), lost[:min(6, len(lost))])
		}
		if len(errs) > 0 {
			t.Errorf("%s (first %s, owner before %s): received %d, acknowledged %d (max seq %d):\n\t%s",
				u.name, u.first, u.before.Owner, len(u.got), len(u.acks), maxAcked, strings.Join(errs[:min(10, len(errs))], "\n\t"))
		}
		u.mu.Unlock()
	}
	t.Logf("workload: %d users, %d acknowledged, %d attempts, %d rejected and retried", len(w.users), total, w.attempts.Load(), w.rejected.Load())
	for _, u := range w.users {
		var s sessionView
		var why string
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			var st int
			s, st = w.session(via, u.name)
			switch {
			case st != http.StatusOK:
				why = fmt.Sprintf("status %d", st)
			case !slices.Contains(live, s.Owner):
				why = "owner " + s.Owner + " not live"
			case !slices.Contains(live, s.Backup) || s.Backup == s.Owner:
				why = fmt.Sprintf("backup %q not another live node", s.Backup)
			default:
				why = ""
			}
			if why == "" || time.Now().After(deadline) {
				break
			}
		}
		switch {
		case why != "":
			t.Errorf("%s: registry after the fault: %s (%+v)", u.name, why, s)
		case s.Session != u.before.Session:
			t.Errorf("%s: session changed %s → %s: continuity lost", u.name, u.before.Session, s.Session)
		case s.Epoch < u.before.Epoch:
			t.Errorf("%s: epoch went back %d → %d", u.name, u.before.Epoch, s.Epoch)
		}
	}
}

// dupHandler counts the SDK's "dropping duplicate" debug records.
type dupHandler struct{ n *atomic.Int64 }

func (h dupHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h dupHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "dropping duplicate" {
		h.n.Add(1)
	}
	return nil
}
func (h dupHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h dupHandler) WithGroup(string) slog.Handler      { return h }

// TestNoAckedMessageLostWhenOwnerProcessIsKilled: three processes (zones
// r1/a, r1/b, r1/c); the process owning most users gets SIGKILL while
// every user is being published to. A real crash: no close frames, the
// kernel resets the connections.
func TestNoAckedMessageLostWhenOwnerProcessIsKilled(t *testing.T) {
	f := newFleet(t)
	ports := freePorts(t, 9)
	n1 := f.startMember("n1", "a", "127.0.0.1", [3]int(ports[0:3]), nil, nil, nil)
	n2 := f.startMember("n2", "b", "127.0.0.1", [3]int(ports[3:6]), n1, nil, nil)
	n3 := f.startMember("n3", "c", "127.0.0.1", [3]int(ports[6:9]), n1, nil, nil)
	nodes := map[string]*member{"n1": n1, "n2": n2, "n3": n3}
	for _, n := range nodes {
		waitReady(t, n.base(), n.proc)
	}
	var mu sync.Mutex
	dead := ""
	live := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for _, id := range []string{"n1", "n2", "n3"} {
			if id != dead {
				out = append(out, id)
			}
		}
		return out
	}
	w := startProcWorkload(t, nodes, []string{"n2", "n2", "n1", "n3"}, 16, live)
	w.waitEach(20, 20*time.Second, "acknowledged messages", func(u *procUser) int { return len(u.acks) })
	victim, n := w.snapshot(n1)
	via := n1
	if victim == "n1" {
		via = n3
	}
	t.Logf("SIGKILL %s, owner of %d of %d users", victim, n, len(w.users))
	w.faultT.Store(true)
	mu.Lock()
	dead = victim
	mu.Unlock()
	nodes[victim].kill(t)
	time.Sleep(3 * time.Second)
	w.waitEach(10, 20*time.Second, "publishes acknowledged after the kill", func(u *procUser) int { return u.afterFault })
	w.check(via, live())
}

// netLab is a private network of Linux network namespaces: a bridge in
// its own namespace, one namespace per node with address 10.77.0.i/24
// on a veth to the bridge, and one veth into the root namespace
// (10.77.0.254) through which the test reaches every node. Nothing else
// on the machine is touched; every name starts with labPrefix, and what
// a crashed earlier run left behind is deleted first.
type netLab struct {
	t  *testing.T
	ip string
}

const labPrefix = "sbt-"

func labRun(ip string, args ...string) error {
	out, err := exec.Command(ip, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newNetLab builds the lab for nodes 1..n, or skips (fails under
// SWITCHBOARD_REQUIRE_ALL) when namespaces are not available here.
func newNetLab(t *testing.T, n int) *netLab {
	t.Helper()
	ip, err := exec.LookPath("ip")
	if err == nil {
		_, err = exec.LookPath("iptables")
	}
	if err == nil {
		cleanLab(ip)
		if err = labRun(ip, "netns", "add", labPrefix+"probe"); err == nil {
			_ = labRun(ip, "netns", "del", labPrefix+"probe")
		}
	}
	testenv.Require(t, err == nil, fmt.Sprintf("ip netns unavailable: %v", err))
	l := &netLab{t: t, ip: ip}
	t.Cleanup(func() { cleanLab(ip) })
	br := labPrefix + "br"
	steps := [][]string{
		{"netns", "add", br},
		{"-n", br, "link", "set", "lo", "up"},
		{"-n", br, "link", "add", "br0", "type", "bridge"},
		{"-n", br, "link", "set", "br0", "up"},
		{"link", "add", labPrefix + "host", "type", "veth", "peer", "name", "host", "netns", br},
		{"-n", br, "link", "set", "host", "master", "br0"},
		{"-n", br, "link", "set", "host", "up"},
		{"addr", "add", "10.77.0.254/24", "dev", labPrefix + "host"},
		{"link", "set", labPrefix + "host", "up"},
	}
	for i := 1; i <= n; i++ {
		ns, port := l.ns(i), fmt.Sprintf("%sn%dp", labPrefix, i)
		steps = append(steps,
			[]string{"netns", "add", ns},
			[]string{"-n", ns, "link", "set", "lo", "up"},
			[]string{"-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", br},
			[]string{"-n", br, "link", "set", port, "master", "br0"},
			[]string{"-n", br, "link", "set", port, "up"},
			[]string{"-n", ns, "addr", "add", l.addr(i) + "/24", "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for _, s := range steps {
		if err := labRun(ip, s...); err != nil {
			t.Fatalf("building the network lab: %v", err)
		}
	}
	return l
}

func (l *netLab) ns(i int) string   { return fmt.Sprintf("%sn%d", labPrefix, i) }
func (l *netLab) addr(i int) string { return fmt.Sprintf("10.77.0.%d", i) }
func (l *netLab) iptables(i int, args ...string) error {
	return labRun(l.ip, append([]string{"netns", "exec", l.ns(i), "iptables"}, args...)...)
}

// cut drops every packet between node i and the nodes in others, in both
// directions, inside node i's namespace: the test (10.77.0.254) still
// reaches it, as clients in its own zone would.
func (l *netLab) cut(i int, others ...int) {
	l.t.Helper()
	for _, o := range others {
		for _, rule := range [][]string{{"-A", "INPUT", "-s", l.addr(o), "-j", "DROP"}, {"-A", "OUTPUT", "-d", l.addr(o), "-j", "DROP"}} {
			if err := l.iptables(i, rule...); err != nil {
				l.t.Fatalf("cut: %v", err)
			}
		}
	}
}

// heal removes node i's rules.
func (l *netLab) heal(i int) {
	l.t.Helper()
	if err := l.iptables(i, "-F"); err != nil {
		l.t.Fatalf("heal: %v", err)
	}
}

// cleanLab deletes every namespace and root link named with labPrefix;
// deleting a namespace deletes the veths in it and their peers.
func cleanLab(ip string) {
	out, _ := exec.Command(ip, "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if name, _, _ := strings.Cut(strings.TrimSpace(line), " "); strings.HasPrefix(name, labPrefix) {
			_ = exec.Command(ip, "netns", "del", name).Run()
		}
	}
	_ = exec.Command(ip, "link", "del", labPrefix+"host").Run()
}

// startMember starts a node with the §6 flags plus extra, behind the
// command prefix pre (empty, or `netns exec NS BINARY` when f.bin is ip).
// Each node gets its own secret files: startNode rewrites one shared set
// for every node, which a node already starting can read half-written.
func (f *fleet) startMember(id, zone, host string, ports [3]int, seed *member, pre, extra []string) *member {
	f.t.Helper()
	dir := filepath.Join(f.dir, id+"-secrets")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		f.t.Fatal(err)
	}
	tokenFile, apiFile, adminFile := writeSecrets(f.t, dir)
	n := &member{
		id: id, region: "r1", zone: zone,
		public:  fmt.Sprintf("%s:%d", host, ports[0]),
		cluster: fmt.Sprintf("%s:%d", host, ports[1]),
		gossip:  fmt.Sprintf("%s:%d", host, ports[2]),
	}
	args := append(append([]string(nil), pre...),
		"--node-id", id, "--region", "r1", "--zone", zone,
		"--data-dir", filepath.Join(f.dir, id+"-data"),
		"--public-addr", n.public, "--cluster-addr", n.cluster, "--gossip-addr", n.gossip,
	)
	if seed == nil {
		args = append(args, "--bootstrap")
	} else {
		args = append(args, "--join", seed.gossip)
	}
	args = append(args, "--token-secret-file", tokenFile, "--api-key-file", apiFile, "--admin-key-file", adminFile)
	n.proc = f.start(id, "", append(args, extra...), nil)
	return n
}

// startNodeIn starts node i of the lab inside its namespace on
// 10.77.0.i; heartbeat is 1 s so that clients notice a silent node
// within 2.5 s.
func (f *fleet) startNodeIn(l *netLab, bin string, i int, zone string, seed *member) *member {
	f.t.Helper()
	return f.startMember(fmt.Sprintf("n%d", i), zone, l.addr(i), [3]int{7700, 7701, 7702}, seed,
		[]string{"netns", "exec", l.ns(i), bin}, []string{"--heartbeat", "1s"})
}

// TestGuaranteesHoldWhenANodeIsPartitionedAway: three processes, each in
// its own network namespace (zones r1/a, r1/b, r1/c). The node owning
// most users is cut off from the other two nodes for 10 s — every
// packet, gossip (UDP) included — while clients and publishers keep
// reaching all three, as clients in the cut-off zone would. Long enough
// for each side to declare the other dead. Then the cut heals.
//
// What it proves: with a real partition, the majority side takes the
// cut-off node's streams over from their backups, while the cut-off
// node must not acknowledge anything it cannot replicate (its view of
// the cluster says it is alone, which is not a single-node cluster);
// after the heal every acknowledged message reaches its user exactly
// once, in order, in the same session.
func TestGuaranteesHoldWhenANodeIsPartitionedAway(t *testing.T) {
	l := newNetLab(t, 3)
	f := newFleet(t)
	bin := f.bin
	f.bin = l.ip // each node runs as `ip netns exec sbt-nI switchboard …`, which execs in place
	n1 := f.startNodeIn(l, bin, 1, "a", nil)
	n2 := f.startNodeIn(l, bin, 2, "b", n1)
	n3 := f.startNodeIn(l, bin, 3, "c", n1)
	nodes := map[string]*member{"n1": n1, "n2": n2, "n3": n3}
	idx := map[string]int{"n1": 1, "n2": 2, "n3": 3}
	for _, n := range nodes {
		waitReady(t, n.base(), n.proc)
	}
	eventually(t, 30*time.Second, "3 voters", []*proc{n1.proc, n2.proc, n3.proc}, func() bool {
		cv, ok := clusterOf(n1.base(), procAdminKey)
		v := 0
		for _, m := range cv.Nodes {
			if m.Raft == "leader" || m.Raft == "voter" {
				v++
			}
		}
		return ok && v == 3
	})
	cv, _ := clusterOf(n1.base(), procAdminKey)
	var followers []string
	for _, id := range []string{"n1", "n2", "n3"} {
		if id != cv.Leader {
			followers = append(followers, id)
		}
	}
	all := func() []string { return []string{"n1", "n2", "n3"} }
	w := startProcWorkload(t, nodes, []string{followers[0], followers[0], cv.Leader, followers[1]}, 16, all)
	w.waitEach(20, 20*time.Second, "acknowledged messages", func(u *procUser) int { return len(u.acks) })
	victim, n := w.snapshot(nodes[cv.Leader])
	var others []int
	for id, i := range idx {
		if id != victim {
			others = append(others, i)
		}
	}
	t.Logf("cutting %s (owner of %d of %d users) off from the other nodes for 10s; leader %s", victim, n, len(w.users), cv.Leader)
	w.faultT.Store(true)
	l.cut(idx[victim], others...)
	time.Sleep(10 * time.Second)
	l.heal(idx[victim])
	t.Logf("healed")
	time.Sleep(3 * time.Second)
	w.waitEach(10, 20*time.Second, "publishes acknowledged after the cut", func(u *procUser) int { return u.afterFault })
	w.check(nodes[cv.Leader], all())
}
