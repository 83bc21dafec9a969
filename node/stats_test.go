package node_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/protocol"
)

// stats asks node id for GET /v1/stats, failing the test on anything but
// a 200 with a body that decodes.
func stats(t *testing.T, c *clustertest.Cluster, id string) map[string]protocol.NodeStats {
	t.Helper()
	st, body := c.Get(id, "/v1/stats", clustertest.AdminKey)
	if st != http.StatusOK {
		t.Fatalf("GET /v1/stats on %s: %d %s", id, st, body)
	}
	var s protocol.Stats
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("GET /v1/stats on %s: %v in %s", id, err, body)
	}
	if s.At.IsZero() {
		t.Fatalf("GET /v1/stats on %s: no time in %s", id, body)
	}
	out := make(map[string]protocol.NodeStats, len(s.Nodes))
	for _, n := range s.Nodes {
		out[n.ID] = n
	}
	return out
}

// Publishes through n1's API to a user connected at n2 show as n1's
// publish rate and n2's delivery rate, and on no other node; every live
// node is there with its place and its Raft role; the call needs the
// admin key.
func TestStatsShowRatesOnTheNodesThatDidTheWork(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Zones: []string{"r1/a", "r1/b", "r2/a"}})
	leader := c.WaitLeader()
	if st, body := c.Get("n3", "/v1/stats", ""); st != http.StatusUnauthorized {
		t.Fatalf("GET /v1/stats without the admin key: %d %s", st, body)
	}
	cl := subscribe(t, c, "stats-user", []string{c.ConnectURL("n2")})
	if st, _, body := c.PublishChannel("n1", "stats:ch", map[string]int{"x": 1}, ""); st != http.StatusOK {
		t.Fatalf("publish to a channel: %d %s", st, body)
	}
	var last map[string]protocol.NodeStats
	sent := 0
	c.Eventually(30*time.Second, "publish rate on n1 and delivery rate on n2 only", func() bool {
		// Publish while polling: the rates cover the last few seconds
		// only, and a slow machine may take that long between polls.
		for range 5 {
			sent++
			if st, _, body := c.Publish("n1", "stats-user", map[string]int{"n": sent}, ""); st != http.StatusOK {
				t.Fatalf("publish: %d %s", st, body)
			}
		}
		receive(t, cl, 5, 10*time.Second)
		last = stats(t, c, "n3")
		n1, n2, n3 := last["n1"], last["n2"], last["n3"]
		return n1.PublishRate > 0 && n2.DeliveryRate > 0 &&
			n2.PublishRate == 0 && n3.PublishRate == 0 && n1.DeliveryRate == 0 && n3.DeliveryRate == 0
	})
	t.Logf("stats after %d publishes: %+v", sent, last)
	places := map[string]string{"n1": "r1/a", "n2": "r1/b", "n3": "r2/a"}
	sessions, channels := 0, 0
	for id, place := range places {
		n, ok := last[id]
		if !ok {
			t.Fatalf("%s missing from /v1/stats: %+v", id, last)
		}
		if got := n.Region + "/" + n.Zone; got != place || n.State != "alive" || n.Error != "" {
			t.Errorf("%s: place %s state %s error %q, want %s alive", id, got, n.State, n.Error, place)
		}
		if want := map[bool]string{true: "leader", false: "voter"}[id == leader]; n.Raft != want {
			t.Errorf("%s: raft %q, want %q", id, n.Raft, want)
		}
		if n.WindowMS <= 0 {
			t.Errorf("%s: rate window %d ms", id, n.WindowMS)
		}
		sessions += n.SessionsOwned
		channels += n.ChannelsOwned
	}
	if last["n2"].Connections < 1 || last["n1"].Published < uint64(sent) || last["n2"].Delivered < uint64(sent) {
		t.Errorf("counts: n2 connections %d, n1 published %d, n2 delivered %d, want ≥ 1, %d, %d",
			last["n2"].Connections, last["n1"].Published, last["n2"].Delivered, sent, sent)
	}
	if sessions != 1 || channels != 1 {
		t.Errorf("sessions owned %d, channels owned %d over the cluster, want 1 and 1", sessions, channels)
	}
}

// A node that does not answer costs GET /v1/stats one bounded peer call:
// the others' figures come back, and the silent node says why it has
// none. A killed node likewise.
func TestStatsDoNotHangOnASilentOrDeadNode(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Faults: true})
	c.WaitLeader()
	// n3's answers to n1 take far longer than the per-node bound.
	const silence = 8 * time.Second
	c.Latency("n3", "n1", silence)
	start := time.Now()
	got := stats(t, c, "n1")
	took := time.Since(start)
	if took >= silence {
		t.Fatalf("GET /v1/stats took %v: it waited for the silent node", took)
	}
	if got["n3"].Error == "" {
		t.Errorf("n3 answered through %v of latency: %+v", silence, got["n3"])
	}
	t.Logf("stats with n3 silent took %v; n3: %s", took, got["n3"].Error)
	if got["n2"].Error != "" || got["n1"].Error != "" {
		t.Errorf("n1 or n2 without figures: %+v", got)
	}
	c.Heal()
	c.Kill("n3")
	got = stats(t, c, "n1")
	if n3, ok := got["n3"]; ok && n3.Error == "" {
		t.Errorf("killed n3 has figures: %+v", n3)
	}
	if len(got) < 2 {
		t.Errorf("live nodes missing: %+v", got)
	}
}
