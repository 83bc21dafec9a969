package node_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/internal/load"
	"github.com/switchboard/switchboard/protocol"
)

func postDrill(c *clustertest.Cluster, via string, req any) (int, []byte) {
	b, _ := json.Marshal(req)
	return c.Do(via, http.MethodPost, "/v1/drills", clustertest.AdminKey, b)
}

// TestDrillRunnerRefusesBadDrills: bad input is 400 with the reason,
// and a drill that would take the runner down with its target too.
func TestDrillRunnerRefusesBadDrills(t *testing.T) {
	c := clustertest.Start(t, 3)
	good := protocol.DrillRequest{Target: "n2", Fault: "crash", Users: 5, Rate: 50, DurationMS: 2000}
	for _, tc := range []struct {
		name   string
		mutate func(*protocol.DrillRequest)
		says   string
	}{
		{"unknown fault", func(r *protocol.DrillRequest) { r.Fault = "slow" }, "want crash, isolate or drain"},
		{"no users", func(r *protocol.DrillRequest) { r.Users = 0 }, "users must be"},
		{"too many users", func(r *protocol.DrillRequest) { r.Users = protocol.MaxDrillUsers + 1 }, "users must be"},
		{"no rate", func(r *protocol.DrillRequest) { r.Rate = 0 }, "rate must be"},
		{"too short", func(r *protocol.DrillRequest) { r.DurationMS = 10 }, "duration_ms must be"},
		{"too long", func(r *protocol.DrillRequest) { r.DurationMS = protocol.MaxDrillDurationMS + 1 }, "duration_ms must be"},
		{"no target", func(r *protocol.DrillRequest) { r.Target = "" }, "target is required"},
		{"unknown target", func(r *protocol.DrillRequest) { r.Target = "n9" }, "not a live node"},
		{"crash this node", func(r *protocol.DrillRequest) { r.Target = "n1" }, "the runner would go down with it"},
		{"isolate this node", func(r *protocol.DrillRequest) { r.Target, r.Fault = "n1", "isolate" }, "the runner would go down with it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := good
			tc.mutate(&req)
			st, body := postDrill(c, "n1", req)
			if st != http.StatusBadRequest || !strings.Contains(string(body), tc.says) {
				t.Fatalf("%d %s; want 400 mentioning %q", st, body, tc.says)
			}
		})
	}
	if st, body := c.Do("n1", http.MethodPost, "/v1/drills", clustertest.AdminKey, []byte(`{"target":"n2","fault":"crash","users":1,"rate":1,"duration_ms":2000,"x":1}`)); st != http.StatusBadRequest {
		t.Fatalf("unknown field: %d %s", st, body)
	}
	if st, body := c.Do("n1", http.MethodPost, "/v1/drills", "wrong", []byte(`{}`)); st != http.StatusUnauthorized {
		t.Fatalf("bad admin key: %d %s", st, body)
	}
	if st, body := c.Get("n1", "/v1/drills/drill-none", clustertest.AdminKey); st != http.StatusNotFound {
		t.Fatalf("unknown drill: %d %s", st, body)
	}
	var list protocol.Drills
	if st, body := c.Get("n1", "/v1/drills", clustertest.AdminKey); st != http.StatusOK || json.Unmarshal(body, &list) != nil || list.Drills == nil || len(list.Drills) != 0 {
		t.Fatalf("no drills yet: %d %s", st, body)
	}
}

// TestDrillRunnerCrashLosesNothing: n1 runs a crash drill of n2 with
// the engine of sbctl drill; a second drill meanwhile is 409; the report
// it keeps accounts for every message, and every user of n2 resumed.
func TestDrillRunnerCrashLosesNothing(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Configure: enableFaults})
	st, body := postDrill(c, "n1", protocol.DrillRequest{Target: "n2", Fault: "crash", Users: 9, Rate: 100, DurationMS: 3000})
	var d protocol.Drill
	if st != http.StatusAccepted || json.Unmarshal(body, &d) != nil || d.ID == "" || d.State != protocol.DrillRunning || d.Target != "n2" {
		t.Fatalf("start: %d %s", st, body)
	}
	if st, body := postDrill(c, "n1", protocol.DrillRequest{Target: "n3", Fault: "drain", Users: 1, Rate: 1, DurationMS: 2000}); st != http.StatusConflict {
		t.Fatalf("second drill: %d %s, want 409", st, body)
	}
	c.Eventually(90*time.Second, "the drill ends", func() bool {
		st, body := c.Get("n1", "/v1/drills/"+d.ID, clustertest.AdminKey)
		return st == http.StatusOK && json.Unmarshal(body, &d) == nil && d.State != protocol.DrillRunning
	})
	t.Logf("drill %s: %s, progress %+v, report %s", d.ID, d.State, d.Progress, d.Report)
	if d.State != protocol.DrillDone || d.Error != "" || d.Progress.Phase != "done" || d.Progress.Connected != 9 {
		t.Fatalf("drill: %+v", d)
	}
	var rep load.DrillReport
	if err := json.Unmarshal(d.Report, &rep); err != nil {
		t.Fatal(err)
	}
	switch {
	case rep.Users != 9 || rep.Target != "n2" || rep.Trigger != "crash" || rep.TriggerError != "":
		t.Fatalf("report setup: %s", d.Report)
	case rep.Acked < 100 || rep.Lost != 0 || rep.Duplicated != 0 || rep.Gaps != 0 || rep.OutOfOrder != 0:
		t.Fatalf("accounting: %s", d.Report)
	case rep.Affected == 0 || rep.Rewelcomed < rep.Affected || rep.Resumed != rep.Rewelcomed || rep.ContinuityLost != 0:
		t.Fatalf("failover: %s", d.Report)
	case rep.RTOMax < rep.RTOP50 || rep.RTOMax <= 0 || rep.NewOwnerWatched == 0 || rep.NewOwnerMissing != 0 || rep.NewOwnerMS <= 0:
		t.Fatalf("times: %s", d.Report)
	case d.Progress.Acked != rep.Acked || d.Progress.Delivered != rep.Delivered:
		t.Fatalf("the finished drill's progress %+v disagrees with its report %s", d.Progress, d.Report)
	}
	if c.Node("n2") != nil {
		t.Fatal("n2 still runs after the crash")
	}
	var list protocol.Drills
	if st, body := c.Get("n1", "/v1/drills", clustertest.AdminKey); st != http.StatusOK || json.Unmarshal(body, &list) != nil || len(list.Drills) != 1 || list.Drills[0].ID != d.ID {
		t.Fatalf("list: %d %s", st, body)
	}
}
