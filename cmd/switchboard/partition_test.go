package main

// Fault tests against real switchboard processes: SIGKILL of an owner, and
// a real network partition built from Linux network namespaces. Both run
// the fault workload the in-process fault tests run (internal/faultload):
// many users with SDK clients and continuous publishers, and the
// guarantees (DESIGN.md §1) asserted on what the clients received and what
// the publishers were told, not merely that nothing returned an error.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/faultload"
	"github.com/switchboard/switchboard/internal/testenv"
	"github.com/switchboard/switchboard/internal/token"
)

// procUsers is how many users the fault workload runs here.
const procUsers = 16

// contract describes nodes to the fault workload (internal/faultload,
// which the in-process fault tests run too) as their clients and
// operators see them; publishers use the nodes live returns (nil: all).
func contract(live func() []string, nodes ...*member) faultload.Cluster {
	c := faultload.Cluster{
		APIKey: procAPIKey, AdminKey: procAdminKey, Live: live, TLS: trusted.config(),
		Token: func(user string) (string, error) {
			return token.MintChannels([]byte(procTokenSecret), user, time.Hour, []string{"*"})
		},
	}
	for _, n := range nodes {
		c.Nodes = append(c.Nodes, faultload.Node{ID: n.id, BaseURL: n.base(), WSURL: n.wsURL()})
	}
	return c
}

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
	w := faultload.Start(t, contract(live, n1, n2, n3), faultload.Options{
		Users: procUsers, Placement: []string{"n2", "n2", "n1", "n3"}, GiveUp: 20 * time.Second,
	})
	w.WaitAcked(20, 20*time.Second)
	w.Snapshot("n1")
	victim, n := w.MostOwned()
	t.Logf("SIGKILL %s, owner of %d of %d users", victim, n, procUsers)
	w.MarkFault()
	mu.Lock()
	dead = victim
	mu.Unlock()
	nodes[victim].kill(t)
	w.RunThrough(3*time.Second, 10, 20*time.Second)
	w.CheckClientsLeft(victim)
	w.Check(live())
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
	w := faultload.Start(t, contract(nil, n1, n2, n3), faultload.Options{
		Users: procUsers, Placement: []string{followers[0], followers[0], cv.Leader, followers[1]}, GiveUp: 20 * time.Second,
	})
	w.WaitAcked(20, 20*time.Second)
	w.Snapshot(cv.Leader)
	victim, n := w.MostOwned()
	var others []int
	for id, i := range idx {
		if id != victim {
			others = append(others, i)
		}
	}
	t.Logf("cutting %s (owner of %d of %d users) off from the other nodes for 10s; leader %s", victim, n, procUsers, cv.Leader)
	w.MarkFault()
	l.cut(idx[victim], others...)
	time.Sleep(10 * time.Second)
	l.heal(idx[victim])
	t.Logf("healed")
	w.RunThrough(3*time.Second, 10, 20*time.Second)
	w.Check([]string{"n1", "n2", "n3"})
}
