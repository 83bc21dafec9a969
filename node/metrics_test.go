package node_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/client"
	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/node"
)

// TestMetricsOfARunningCluster scrapes /metrics of a three-node cluster
// with TLS on both ports, n1 owning the process's metrics as the real
// binary does (GlobalMetrics), after a client, publishes and a takeover:
// the runtime, process, Raft and memberlist series are there, the
// takeover and replication histograms counted what happened, and every
// metric docs/operations.md names exists (so the docs cannot drift).
func TestMetricsOfARunningCluster(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{
		ClusterTLS: true, PublicTLS: true,
		Configure: func(cfg *node.Config) { cfg.GlobalMetrics = cfg.NodeID == "n1" },
	})
	// The user's stream is made on n3 (where it connects) with a backup on
	// another node; n3 is then killed and the backup takes the stream over.
	const user = "metrics-user"
	cl := subscribe(t, c, user, []string{c.ConnectURL("n3"), c.ConnectURL("n2"), c.ConnectURL("n1")},
		func(cfg *client.Config) { cfg.TLS = c.ClientTLS() })
	for i := 1; i <= 3; i++ {
		mustPublish(t, c, "n1", user, i, fmt.Sprintf("m-%d", i))
	}
	receive(t, cl, 3, 10*time.Second)
	if st, body := c.Do("n1", http.MethodPost, "/v1/publish", "wrong-key", []byte(`{}`)); st != http.StatusUnauthorized {
		t.Fatalf("publish with a wrong key: %d %s", st, body)
	}
	owner := ""
	c.Eventually(10*time.Second, user+" to have an owner", func() bool {
		s, st := c.Session("n1", user)
		owner = s.Owner
		return st == http.StatusOK && owner != ""
	})
	if owner == "n1" {
		t.Fatalf("%s's stream is owned by n1; it connected to n3, where its stream should have been made", user)
	}
	c.Kill(owner)
	for i := 4; i <= 6; i++ {
		publishRetrying(t, c, "n1", user, i, fmt.Sprintf("m-%d", i), 30*time.Second)
	}
	receive(t, cl, 3, 30*time.Second)

	scrape := func() (map[string]float64, map[string]string, []byte) {
		values, families := map[string]float64{}, map[string]string{}
		var n1 []byte
		for _, id := range c.Running() {
			st, body := c.Get(id, "/metrics", "")
			if st != http.StatusOK {
				t.Fatalf("GET /metrics on %s: %d %s", id, st, body)
			}
			if id == "n1" {
				n1 = body
			}
			for k, v := range parseMetrics(body) {
				values[id+" "+k] = v
			}
			for name, typ := range metricFamilies(body) {
				families[name] = typ
			}
		}
		return values, families, n1
	}
	sum := func(values map[string]float64, series string) (total float64) {
		for k, v := range values {
			if _, s, _ := strings.Cut(k, " "); s == series {
				total += v
			}
		}
		return total
	}
	var values map[string]float64
	var families map[string]string
	var n1 []byte
	c.Eventually(20*time.Second, "the takeover to be counted", func() bool {
		values, families, n1 = scrape()
		// memberlist reports its suspicion of the killed node a probe
		// interval or two after the kill.
		return sum(values, `switchboard_broker_takeover_duration_seconds_count{result="ok"}`) >= 1 &&
			families["memberlist_msg_suspect"] != "" &&
			sum(values, "switchboard_node_ready") == 2 && sum(values, "switchboard_raft_has_leader") == 2
	})

	t.Run("runtime, process, raft and memberlist on the node that owns the process", func(t *testing.T) {
		own := metricFamilies(n1)
		for _, prefix := range []string{"go_", "process_", "raft_", "memberlist_"} {
			if !slices.ContainsFunc(keys(own), func(name string) bool { return strings.HasPrefix(name, prefix) }) {
				t.Errorf("n1's /metrics has no %s* series", prefix)
			}
		}
		for _, name := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "process_resident_memory_bytes",
			"process_open_fds", "raft_commitTime", "memberlist_gossip", "memberlist_health_score"} {
			if _, ok := own[name]; !ok {
				t.Errorf("n1's /metrics has no %s", name)
			}
		}
		// Nodes that do not own the process export no go-metrics bridge.
		st, body := c.Get("n2", "/metrics", "")
		if st == http.StatusOK && bytes.Contains(body, []byte("\nraft_")) {
			t.Errorf("n2 (GlobalMetrics off) exports raft_* series")
		}
	})

	t.Run("new metrics counted what happened", func(t *testing.T) {
		checks := []struct {
			series string
			ok     func(float64) bool
			want   string
		}{
			{`switchboard_broker_takeover_duration_seconds_count{result="ok"}`, func(v float64) bool { return v >= 1 }, ">= 1"},
			{`switchboard_broker_replication_duration_seconds_count`, func(v float64) bool { return v >= 3 }, ">= 3"},
			{`switchboard_publish_requests_total{code="2xx"}`, func(v float64) bool { return v >= 6 }, ">= 6"},
			{`switchboard_publish_requests_total{code="4xx"}`, func(v float64) bool { return v == 1 }, "1"},
			{`switchboard_publish_requests_total{code="5xx"}`, func(v float64) bool { return v >= 0 }, "present"},
			{`switchboard_node_ready`, func(v float64) bool { return v == 2 }, "2 (both survivors)"},
			{`switchboard_raft_has_leader`, func(v float64) bool { return v == 2 }, "2"},
			{`switchboard_raft_leader`, func(v float64) bool { return v == 1 }, "1"},
			{`switchboard_gossip_members{state="alive"}`, func(v float64) bool { return v >= 4 }, ">= 4 (each survivor sees both)"},
			{`switchboard_gateway_slow_consumer_closes_total`, func(v float64) bool { return v == 0 }, "0"},
			{`switchboard_broker_continuity_lost_total`, func(v float64) bool { return v == 0 }, "0"},
		}
		for _, ch := range checks {
			if v := sum(values, ch.series); !ch.ok(v) {
				t.Errorf("%s summed over the survivors = %v, want %s", ch.series, v, ch.want)
			}
		}
		// Every node sees the voters; at least the two survivors alive.
		for _, id := range c.Running() {
			if v := values[id+" switchboard_raft_voters_alive"]; v < 2 || v > values[id+" switchboard_raft_voters"] {
				t.Errorf("%s: switchboard_raft_voters_alive %v, voters %v", id, v, values[id+" switchboard_raft_voters"])
			}
			for _, cert := range []string{"public", "cluster"} {
				v := values[id+` switchboard_tls_cert_expiry_timestamp_seconds{cert="`+cert+`"}`]
				if exp := time.Unix(int64(v), 0); !exp.After(time.Now()) || exp.After(time.Now().Add(20*365*24*time.Hour)) {
					t.Errorf("%s: %s certificate expiry %v", id, cert, exp)
				}
			}
		}
	})

	t.Run("every metric docs/operations.md names exists", func(t *testing.T) {
		names := documentedMetrics(t)
		if len(names) < 20 {
			t.Fatalf("found only %d metric names in docs/operations.md: %v", len(names), names)
		}
		for _, name := range names {
			if _, ok := families[familyOf(name, families)]; !ok {
				t.Errorf("docs/operations.md names %s; no running node exports it", name)
			}
		}
	})
}

// metricFamilies maps each metric family of a Prometheus text exposition
// to its type (# TYPE lines).
func metricFamilies(body []byte) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = f[3]
		}
	}
	return out
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// familyOf is the family a documented name belongs to: itself, or a
// histogram's or summary's family for its _bucket, _count and _sum series.
func familyOf(name string, families map[string]string) string {
	if _, ok := families[name]; ok {
		return name
	}
	for _, suffix := range []string{"_bucket", "_count", "_sum"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if typ := families[base]; typ == "histogram" || typ == "summary" {
				return base
			}
		}
	}
	return name
}

// metricName finds metric names; a match ending in "_" is a prefix
// ("switchboard_consensus_*"), not a name.
var metricName = regexp.MustCompile(`\b(?:switchboard|go|process|raft|memberlist)_[A-Za-z0-9_]+`)

// documentedMetrics returns the metric names docs/operations.md uses in
// its /metrics section and its alert section.
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, heading := range []string{"### /metrics", "## What to alert on"} {
		section := markdownSection(string(doc), heading)
		if section == "" {
			t.Fatalf("docs/operations.md has no %q section", heading)
		}
		for _, name := range metricName.FindAllString(section, -1) {
			if !strings.HasSuffix(name, "_") && !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	return names
}

// markdownSection is the text under heading up to the next heading of
// the same or a higher level.
func markdownSection(doc, heading string) string {
	level := strings.IndexByte(heading, ' ')
	lines := strings.Split(doc, "\n")
	for i, line := range lines {
		if strings.TrimSpace(line) != heading {
			continue
		}
		var out []string
		for _, l := range lines[i+1:] {
			if h := strings.IndexByte(l, ' '); h > 0 && h <= level && strings.Trim(l[:h], "#") == "" {
				break
			}
			out = append(out, l)
		}
		return strings.Join(out, "\n")
	}
	return ""
}
