package node_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/clustertest"
)

// bootstrapLog keeps the nodes' logs so a test can see which nodes
// bootstrapped a Raft cluster (consensus logs each bootstrap).
type bootstrapLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *bootstrapLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *bootstrapLog) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

var bootstrapLine = regexp.MustCompile(`msg="bootstrapped single-voter cluster".* node=(\S+)`)

// bootstraps lists the nodes that bootstrapped, in order.
func (l *bootstrapLog) bootstraps() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for _, m := range bootstrapLine.FindAllStringSubmatch(l.buf.String(), -1) {
		ids = append(ids, m[1])
	}
	return ids
}

func (l *bootstrapLog) expect(t *testing.T, want ...string) {
	t.Helper()
	if got := l.bootstraps(); !slices.Equal(got, want) {
		t.Fatalf("nodes that bootstrapped: %v, want %v", got, want)
	}
}

// Nodes started together with the same flags (--bootstrap-expect 3 and
// --join listing all of them) form one cluster: only the lowest id
// bootstraps, the leader adds the others, and the cluster serves.
func TestBootstrapExpectFormsOneClusterFromNodesStartedTogether(t *testing.T) {
	var logs bootstrapLog
	c := clustertest.Start(t, 3, clustertest.Options{BootstrapExpect: 3, Logger: logs.logger()})
	c.WaitLeader()
	logs.expect(t, "n1")
	if st, _, body := c.Publish("n3", "alice", map[string]int{"n": 1}, ""); st != http.StatusOK {
		t.Fatalf("publish: %d %s", st, body)
	}
}

// With fewer live nodes than expected nobody bootstraps and no node is
// ready; the last one arriving lets the cluster form.
func TestBootstrapExpectWaitsForEveryExpectedNode(t *testing.T) {
	var logs bootstrapLog
	c := clustertest.Start(t, 3, clustertest.Options{BootstrapExpect: 3, Logger: logs.logger(), Held: []string{"n3"}})
	c.Eventually(30*time.Second, "n1 and n2 to see each other in gossip", func() bool {
		ci, err := c.Cluster("n1")
		return err == nil && len(ci.Nodes) == 2
	})
	// Well past the settle time: a node that saw two members of three
	// must not have bootstrapped.
	time.Sleep(5 * time.Second)
	logs.expect(t)
	for _, id := range []string{"n1", "n2"} {
		if st, body := c.Get(id, "/readyz", ""); st == http.StatusOK {
			t.Fatalf("%s ready without a cluster: %s", id, body)
		}
	}
	c.Restart("n3") // its first start
	for _, id := range c.IDs() {
		c.WaitReady(id)
	}
	c.WaitVoters(3)
	c.WaitLeader()
	logs.expect(t, "n1")
}

// Restarting with the same flags never bootstraps again: not a node that
// lost its data dir while the others run (it is added back to their
// cluster), not the whole cluster restarted with its data.
func TestBootstrapExpectNeverBootstrapsAgain(t *testing.T) {
	var logs bootstrapLog
	c := clustertest.Start(t, 3, clustertest.Options{BootstrapExpect: 3, Logger: logs.logger()})
	logs.expect(t, "n1")
	if st, _, body := c.Publish("n2", "alice", map[string]int{"n": 1}, "m1"); st != http.StatusOK {
		t.Fatalf("publish: %d %s", st, body)
	}

	c.Kill("n1")
	if err := os.RemoveAll(c.Config("n1").DataDir); err != nil {
		t.Fatal(err)
	}
	c.Restart("n1")
	c.WaitReady("n1")
	c.WaitLeader()
	logs.expect(t, "n1")

	for _, id := range c.IDs() {
		c.Kill(id)
	}
	for _, id := range c.IDs() {
		c.Restart(id)
	}
	for _, id := range c.IDs() {
		c.WaitReady(id)
	}
	c.WaitLeader()
	c.WaitVoters(3)
	logs.expect(t, "n1")
	if st, _, body := c.Publish("n3", "bob", map[string]int{"n": 2}, "m2"); st != http.StatusOK {
		t.Fatalf("publish after the restart: %d %s", st, body)
	}
}
