package node_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/internal/faultload"
	"github.com/switchboard/switchboard/node"
	"github.com/switchboard/switchboard/protocol"
)

// Fault injection (POST /v1/nodes/{id}/faults): refused unless the
// target allows it, forwarded by any node, and each fault keeps G1–G4
// under the fault workload.

func enableFaults(cfg *node.Config) { cfg.FaultInjection = true }

// inject asks node via to inject f into target.
func inject(c *clustertest.Cluster, via, target string, f protocol.Fault) (int, []byte) {
	b, _ := json.Marshal(f)
	return c.Do(via, http.MethodPost, "/v1/nodes/"+target+"/faults", clustertest.AdminKey, b)
}

// TestFaultInjectionIsRefusedUnlessEnabled: only n2 allows faults. The
// target's flag decides, whoever forwards; bad faults are 400 and an
// unknown node 404, wherever they are asked.
func TestFaultInjectionIsRefusedUnlessEnabled(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Configure: func(cfg *node.Config) {
		cfg.FaultInjection = cfg.NodeID == "n2"
	}})
	slow := protocol.Fault{Kind: protocol.FaultSlow, DurationMS: 100, LatencyMS: 1}
	for _, tc := range []struct {
		name, via, target string
		f                 protocol.Fault
		want              int
		says              string
	}{
		{"off, asked directly", "n1", "n1", protocol.Fault{Kind: protocol.FaultCrash}, 403, "--enable-fault-injection"},
		{"off, forwarded", "n2", "n1", protocol.Fault{Kind: protocol.FaultCrash}, 403, "--enable-fault-injection"},
		{"off, forwarded by a node that is off too", "n1", "n3", protocol.Fault{Kind: protocol.FaultIsolate, DurationMS: 10}, 403, "disabled on node n3"},
		// One body shape for every kind (DESIGN.md §5): fields a kind
		// does not use are ignored, and an off target says 403 first.
		{"off, crash with the other fields", "n1", "n1", protocol.Fault{Kind: protocol.FaultCrash, DurationMS: 5000, LatencyMS: 100}, 403, "--enable-fault-injection"},
		{"off, forwarded crash with the other fields", "n2", "n1", protocol.Fault{Kind: protocol.FaultCrash, DurationMS: 5000, LatencyMS: 100}, 403, "--enable-fault-injection"},
		{"off, asked directly, isolate without a duration", "n1", "n1", protocol.Fault{Kind: protocol.FaultIsolate}, 403, "--enable-fault-injection"},
		{"on, slow in the full body", "n1", "n2", protocol.Fault{Kind: protocol.FaultSlow, DurationMS: 100, LatencyMS: 1}, 202, `"latency_ms":1`},
		{"unknown kind", "n1", "n2", protocol.Fault{Kind: "flood"}, 400, "want crash, isolate or slow"},
		{"isolate without a duration", "n1", "n2", protocol.Fault{Kind: protocol.FaultIsolate}, 400, "duration_ms"},
		{"slow without latency", "n1", "n2", protocol.Fault{Kind: protocol.FaultSlow, DurationMS: 100}, 400, "latency_ms"},
		{"slow over the latency bound", "n2", "n2", protocol.Fault{Kind: protocol.FaultSlow, DurationMS: 100, LatencyMS: 60000}, 400, "latency_ms"},
		{"unknown node", "n1", "n9", slow, 404, "n9"},
		{"on, forwarded", "n1", "n2", slow, 202, `"node":"n2"`},
		{"on, asked directly", "n2", "n2", slow, 202, `"kind":"slow"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, body := inject(c, tc.via, tc.target, tc.f)
			if st != tc.want || !strings.Contains(string(body), tc.says) {
				t.Fatalf("%d %s; want %d mentioning %s", st, body, tc.want, tc.says)
			}
			if st != http.StatusAccepted && !strings.Contains(string(body), `"error"`) {
				t.Fatalf("error answer without an error field: %s", body)
			}
		})
	}
	st, body := c.Do("n1", http.MethodPost, "/v1/nodes/n2/faults", clustertest.AdminKey, []byte(`{"kind":"slow","duration_ms":5,"latency_ms":1,"extra":1}`))
	if st != http.StatusBadRequest {
		t.Fatalf("unknown field: %d %s, want 400", st, body)
	}
	if st, body = c.Do("n1", http.MethodPost, "/v1/nodes/n2/faults", "wrong", []byte(`{"kind":"crash"}`)); st != http.StatusUnauthorized {
		t.Fatalf("bad admin key: %d %s, want 401", st, body)
	}
}

// TestGuaranteesHoldWhenOwnerIsIsolatedByFaultInjection: the node owning
// most users is isolated through another node for 8 s: the others see it
// suspect or dead and take its users' streams over, every acknowledged
// message arrives once and in order, and the node comes back by itself.
func TestGuaranteesHoldWhenOwnerIsIsolatedByFaultInjection(t *testing.T) {
	c, leader, major, minor := faultRoles(t, clustertest.Options{Configure: enableFaults})
	w := faultload.Start(t, contract(c), faultload.Options{Users: faultUsers, Placement: []string{major, major, major, leader, minor}})
	rc := startRegistryCheck(t, c, 3)
	w.WaitAcked(20, 15*time.Second)
	w.Snapshot(leader)
	victim, n := w.MostOwned()
	others := without(c.IDs(), victim)
	t.Logf("isolating %s (owner of %d of %d users) through %s for 8s; leader %s", victim, n, faultUsers, others[0], leader)
	w.MarkFault()
	if st, body := inject(c, others[0], victim, protocol.Fault{Kind: protocol.FaultIsolate, DurationMS: 8000}); st != http.StatusAccepted {
		t.Fatalf("isolate: %d %s", st, body)
	}
	state := func(via, id string) string {
		ci, err := c.Cluster(via)
		if err != nil {
			return ""
		}
		for _, m := range ci.Nodes {
			if m.ID == id {
				return m.State
			}
		}
		return ""
	}
	c.Eventually(15*time.Second, "the others see "+victim+" suspect or dead", func() bool {
		for _, o := range others {
			if s := state(o, victim); s != "suspect" && s != "dead" {
				return false
			}
		}
		return true
	})
	c.Eventually(15*time.Second, "every user of "+victim+" taken over", func() bool {
		for _, u := range w.Users() {
			if s, st := c.Session(others[0], u); st != http.StatusOK || s.Owner == victim {
				return false
			}
		}
		return true
	})
	c.Eventually(40*time.Second, victim+" back, alive in every view", func() bool {
		for _, via := range c.IDs() {
			for _, id := range c.IDs() {
				if state(via, id) != "alive" {
					return false
				}
			}
		}
		return true
	})
	w.RunThrough(3*time.Second, 10, 15*time.Second)
	rc.check()
	w.Check(c.Running())
}

// TestGuaranteesHoldWhenOwnerCrashesByFaultInjection: an injected crash
// stops the node owning most users at once (in-process: as Kill does);
// the guarantees hold as for any crash.
func TestGuaranteesHoldWhenOwnerCrashesByFaultInjection(t *testing.T) {
	c, leader, major, minor := faultRoles(t, clustertest.Options{Configure: enableFaults})
	w := faultload.Start(t, contract(c), faultload.Options{Users: faultUsers, Placement: []string{major, major, major, leader, minor}})
	rc := startRegistryCheck(t, c, 3)
	w.WaitAcked(20, 15*time.Second)
	w.Snapshot(leader)
	victim, n := w.MostOwned()
	t.Logf("crashing %s, owner of %d of %d users", victim, n, faultUsers)
	w.MarkFault()
	if st, body := inject(c, victim, victim, protocol.Fault{Kind: protocol.FaultCrash}); st != http.StatusAccepted {
		t.Fatalf("crash: %d %s", st, body)
	}
	c.Eventually(5*time.Second, victim+" gone", func() bool { return c.Node(victim) == nil })
	w.RunThrough(3*time.Second, 10, 15*time.Second)
	w.CheckClientsLeft(victim)
	rc.check()
	w.Check(c.Running())
}

// TestSlowFaultDelaysPeerCalls: with 300 ms on n2's peer links, a publish
// entering at n1 for a user n2 owns waits for n2's answer, so it takes
// at least 300 ms; once the fault ends it is fast again. Only a lower
// bound is asserted: a slow machine can only add to it.
func TestSlowFaultDelaysPeerCalls(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Configure: enableFaults})
	publish := func(id string) time.Duration {
		t.Helper()
		start := time.Now()
		st, res, body := c.Publish("n1", "slowpoke", map[string]int{"x": 1}, id)
		if st != http.StatusOK {
			t.Fatalf("publish %s: %d %s", id, st, body)
		}
		if res.Node != "n2" {
			t.Fatalf("publish %s stored at %s, want n2", id, res.Node)
		}
		return time.Since(start)
	}
	// The user's stream is claimed where its first publish is routed to:
	// make it n2 by publishing there first.
	if st, _, body := c.Publish("n2", "slowpoke", 0, "first"); st != http.StatusOK {
		t.Fatalf("first publish: %d %s", st, body)
	}
	publish("warm")
	if st, body := inject(c, "n1", "n2", protocol.Fault{Kind: protocol.FaultSlow, DurationMS: 3000, LatencyMS: 300}); st != http.StatusAccepted {
		t.Fatalf("slow: %d %s", st, body)
	}
	time.Sleep(100 * time.Millisecond) // the answer to the fault itself may be in flight
	for i := range 3 {
		if d := publish("slow" + string(rune('a'+i))); d < 300*time.Millisecond {
			t.Fatalf("publish through slowed n2 took %v, want at least 300ms", d)
		}
	}
	time.Sleep(3 * time.Second)
	var fastest time.Duration = time.Hour
	for i := range 5 {
		fastest = min(fastest, publish("fast"+string(rune('a'+i))))
	}
	if fastest >= 300*time.Millisecond {
		t.Fatalf("after the fault every publish still took at least 300ms (fastest %v)", fastest)
	}
}
