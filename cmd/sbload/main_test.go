package main

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/switchboard/switchboard/internal/testenv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/internal/load"
)

func TestMain(m *testing.M) {
	testenv.VerifyNoLeaks(m) // memberlist probes may outlive a stopped node briefly
}

// sbload runs the CLI in-process (stdout not a terminal) and returns its
// exit code and output.
func sbload(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, args, &out, &errOut, false)
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// clusterArgs are the endpoint and secret flags for an in-process cluster.
func clusterArgs(t *testing.T, c *clustertest.Cluster) []string {
	var eps []string
	for _, id := range c.IDs() {
		eps = append(eps, c.URL(id))
	}
	return []string{
		"--endpoints", strings.Join(eps, ","),
		"--api-key-file", writeFile(t, "api-key", clustertest.APIKey),
		"--admin-key-file", writeFile(t, "admin-key", clustertest.AdminKey),
		"--token-secret-file", writeFile(t, "token-secret", clustertest.TokenSecret),
	}
}

func decode[T any](t *testing.T, out string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, out)
	}
	return v
}

func TestUsageErrors(t *testing.T) {
	base := []string{"--endpoints", "http://127.0.0.1:1,http://127.0.0.1:2", "--token-secret", "s", "--api-key", "k"}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no endpoints", []string{"--token-secret", "s"}, "--endpoints is required"},
		{"no token secret", []string{"--endpoints", "http://127.0.0.1:1"}, "token-secret"},
		{"bad scenario", append(base, "--scenario", "flood"), "want idle, unicast, broadcast, storm or drill"},
		{"no channels", append(base, "--scenario", "broadcast", "--channels", "0"), "--channels must be positive"},
		{"drill without a kill", append(base, "--scenario", "drill", "--target", "n1"), "drill needs"},
		{"two kills", append(base, "--scenario", "drill", "--target", "n1", "--kill-pid", "1", "--drain"), "one of"},
		{"kill and fault", append(base, "--scenario", "drill", "--target", "n1", "--kill-pid", "1", "--fault", "crash"), "one of"},
		{"bad fault", append(base, "--scenario", "drill", "--target", "n1", "--fault", "flood"), "want drain, crash or isolate"},
		{"key twice", append(base, "--admin-key", "a", "--admin-key-file", "f"), "not both"},
		{"over the process cap", append(base, "--users", "20", "--conns-per-process", "10"), "split the users"},
		{"bad pids", append(base, "--pids", "n1:12"), "ID=PID"},
		{"stray argument", append(base, "extra"), "unexpected arguments"},
		{"missing CA file", append(base, "--ca-file", "/nonexistent/ca.pem"), "--ca-file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := sbload(t, tc.args...)
			if code != exitUsage || !strings.Contains(errOut, tc.want) || out != "" {
				t.Fatalf("exit %d, stderr %q, stdout %q; want exit %d mentioning %q", code, errOut, out, exitUsage, tc.want)
			}
		})
	}
}

func TestUnreachableClusterFails(t *testing.T) {
	code, out, errOut := sbload(t, "--endpoints", "http://127.0.0.1:1,http://127.0.0.1:2", "--token-secret", "s",
		"--api-key", "k", "--scenario", "unicast", "--users", "1", "--duration", "100ms")
	if code != exitFail || out != "" || !strings.Contains(errOut, "healthz") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestIdleAndUnicast runs both scenarios briefly against one cluster.
func TestIdleAndUnicast(t *testing.T) {
	c := clustertest.Start(t, 3)
	args := clusterArgs(t, c)

	t.Run("idle", func(t *testing.T) {
		jsonOut := filepath.Join(t.TempDir(), "idle.json")
		code, out, errOut := sbload(t, append(args, "--scenario", "idle", "--users", "6", "--duration", "300ms",
			"--pids", "n1="+strconv.Itoa(os.Getpid()), "--json-out", jsonOut)...)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		rep := decode[load.IdleReport](t, out)
		if rep.Scenario != "idle" || rep.Users != 6 || rep.Connected != 6 || rep.ConnectMS <= 0 || len(rep.Nodes) != 3 {
			t.Fatalf("report: %+v", rep)
		}
		for _, n := range rep.Nodes {
			if got := n.Connections - n.ConnectionsBefore; got != 2 {
				t.Errorf("node %s gained %d connections, want 2 (round-robin)", n.ID, got)
			}
			if n.ID == "n1" && (n.RSS <= 0 || n.RSSPerConn <= 0 || n.PID != os.Getpid()) {
				t.Errorf("n1 memory figures missing: %+v", n)
			}
		}
		if b, err := os.ReadFile(jsonOut); err != nil || string(b) != out {
			t.Errorf("--json-out differs from stdout (%v)", err)
		}
	})

	t.Run("unicast", func(t *testing.T) {
		code, out, errOut := sbload(t, append(args, "--scenario", "unicast", "--users", "6", "--rate", "300",
			"--duration", "1s", "--batch", "8", "--grace", "10s")...)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		rep := decode[load.UnicastReport](t, out)
		switch {
		case rep.Published < 100 || rep.Acked != rep.Published || rep.Delivered != rep.Acked:
			t.Fatalf("published %d acked %d delivered %d", rep.Published, rep.Acked, rep.Delivered)
		case rep.Lost != 0 || rep.Duplicated != 0 || rep.Gaps != 0 || rep.OutOfOrder != 0 || rep.SeqMismatch != 0 || rep.Misrouted != 0:
			t.Fatalf("delivery broke a guarantee: %+v", rep.Accounting)
		case rep.Latency.Count != uint64(rep.Delivered) || rep.Latency.P50 <= 0 || rep.Latency.P99 < rep.Latency.P50 || rep.Latency.Max < rep.Latency.P99:
			t.Fatalf("latency: %+v", rep.Latency)
		case rep.AckedPerS <= 0 || rep.DeliveredPerS <= 0:
			t.Fatalf("rates: %v %v", rep.AckedPerS, rep.DeliveredPerS)
		case rep.OwnerChecked == 0 || rep.OwnerMismatch != 0:
			t.Fatalf("owners: %d checked, %d mismatched", rep.OwnerChecked, rep.OwnerMismatch)
		}
	})
}

// TestBroadcast: subscribers on all three nodes, channels owned by the
// other nodes, publishes through n1: every subscriber gets every
// acknowledged message of its channel, once, in order, and each message
// crosses the cluster once per other node with subscribers.
func TestBroadcast(t *testing.T) {
	c := clustertest.Start(t, 3)
	args := clusterArgs(t, c)
	code, out, errOut := sbload(t, append(args, "--scenario", "broadcast", "--users", "12", "--channels", "2", "--rate", "200",
		"--duration", "1s", "--batch", "8", "--grace", "10s", "--pids", "n1="+strconv.Itoa(os.Getpid()))...)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	rep := decode[load.BroadcastReport](t, out)
	switch {
	case rep.Scenario != "broadcast" || rep.Subscribers != 12 || rep.Channels != 2 || rep.PublishVia != "n1":
		t.Fatalf("report: %+v", rep)
	case rep.ChannelOwners["n1"] != 0 || rep.ChannelOwners["n2"]+rep.ChannelOwners["n3"] != 2:
		t.Fatalf("channel owners %v: n1 must own none", rep.ChannelOwners)
	case rep.Published < 100 || rep.Expected != rep.Published*6 || rep.Delivered != rep.Expected:
		t.Fatalf("published %d expected %d delivered %d", rep.Published, rep.Expected, rep.Delivered)
	case rep.Lost != 0 || rep.OutOfOrder != 0 || rep.ContinuityLost != 0:
		t.Fatalf("lost %d out of order %d continuity lost %d", rep.Lost, rep.OutOfOrder, rep.ContinuityLost)
	case rep.PeerDeliveriesPerMessage != 2:
		// Each channel's subscribers are on all three nodes: its owner
		// sends each message to the two others, once.
		t.Fatalf("peer deliveries per message %v, want 2", rep.PeerDeliveriesPerMessage)
	case rep.Latency.Count != uint64(rep.Delivered) || rep.Latency.P99 < rep.Latency.P50:
		t.Fatalf("latency: %+v", rep.Latency)
	case rep.CPUPercent["n1"] <= 0:
		t.Fatalf("cpu: %v", rep.CPUPercent)
	}
}

// TestUnicastOverTLS: with --ca-file, sbload's clients and HTTP calls
// reach a cluster that serves HTTPS and WSS with its own CA.
func TestUnicastOverTLS(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{PublicTLS: true, ClusterTLS: true})
	args := append(clusterArgs(t, c), "--ca-file", filepath.Join(c.CertDir(), "ca.pem"))
	code, out, errOut := sbload(t, append(args, "--scenario", "unicast", "--users", "4", "--rate", "200",
		"--duration", "1s", "--grace", "10s")...)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	rep := decode[load.UnicastReport](t, out)
	if rep.Published < 50 || rep.Acked != rep.Published || rep.Delivered != rep.Acked || rep.Lost != 0 {
		t.Fatalf("published %d acked %d delivered %d lost %d", rep.Published, rep.Acked, rep.Delivered, rep.Lost)
	}
}

// TestStormDrain drains the node every user is on, through the CLI, and
// checks the report: users come back elsewhere, never on the drained node.
func TestStormDrain(t *testing.T) {
	c := clustertest.Start(t, 3)
	code, out, errOut := sbload(t, append(clusterArgs(t, c), "--scenario", "storm", "--users", "8",
		"--target", "n3", "--drain", "--duration", "5s")...)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	rep := decode[load.StormReport](t, out)
	t.Logf("storm: %s", out)
	if rep.Trigger != "drain" || rep.Target != "n3" || rep.OnTargetBefore != 8 {
		t.Fatalf("setup: %+v", rep)
	}
	checkStorm(t, rep, "n3")
}

// checkStorm checks that a storm report is consistent. Whether every user
// came back resumed is the cluster's business, which the report shows;
// here it is logged, not asserted.
func checkStorm(t *testing.T, rep load.StormReport, target string) {
	t.Helper()
	switch {
	case rep.Rewelcomed+rep.NotRewelcomed+rep.ConnectFailed != rep.Users || rep.Rewelcomed == 0:
		t.Fatalf("rewelcomed %d + not %d != users %d", rep.Rewelcomed, rep.NotRewelcomed, rep.Users)
	case rep.ByNode[target] != 0:
		t.Fatalf("users came back to %s: %v", target, rep.ByNode)
	case rep.Resumed > rep.Rewelcomed || rep.Rewelcome.Count != uint64(rep.Rewelcomed):
		t.Fatalf("resumed %d of %d rewelcomed, %d welcome times", rep.Resumed, rep.Rewelcomed, rep.Rewelcome.Count)
	case rep.StormMS != rep.Rewelcome.Max || rep.StormMS < 0 || rep.ClaimsPerS <= 0:
		t.Fatalf("storm_ms %v vs max rewelcome %v, claims/s %v", rep.StormMS, rep.Rewelcome.Max, rep.ClaimsPerS)
	}
	if rep.NotRewelcomed > 0 || rep.Resumed != rep.Users {
		t.Logf("NOTE: cluster did not bring every user back resumed: %d not back, %d resumed, %d continuity lost",
			rep.NotRewelcomed, rep.Resumed, rep.ContinuityLost)
	}
}

// TestDrillKillLosesNothing kills the node owning the most drill users
// (Target auto) while messages are published through the others: the
// drill must account for every acknowledged message, once, in order.
func TestDrillKillLosesNothing(t *testing.T) {
	c := clustertest.Start(t, 3)
	cfg := load.DefaultConfig()
	for _, id := range c.IDs() {
		cfg.Endpoints = append(cfg.Endpoints, c.URL(id))
	}
	cfg.APIKey, cfg.AdminKey, cfg.TokenSecret = clustertest.APIKey, clustertest.AdminKey, []byte(clustertest.TokenSecret)
	cfg.Users, cfg.Rate, cfg.Batch = 10, 150, 10
	cfg.Duration, cfg.At, cfg.Grace = 3*time.Second, time.Second, 15*time.Second
	cfg.Target = load.AutoTarget
	killed := ""
	cfg.Trigger = func(_ context.Context, node string) error {
		killed = node
		c.Kill(node)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := load.Drill(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(rep)
	t.Logf("drill: %s", b)
	switch {
	case rep.Target == "" || killed != rep.Target || rep.Trigger != "kill" || rep.KillAtMS < 900:
		t.Fatalf("setup: target %q, killed %q, trigger %q at %v ms", rep.Target, killed, rep.Trigger, rep.KillAtMS)
	case rep.OnTargetBefore < 4 || rep.OnTargetBefore == 10 || rep.Affected < 4:
		// Users are spread over the nodes (10 over 3: 4, 3, 3) and the
		// target is the one owning the most.
		t.Fatalf("setup: %d users first on the target, %d on it at the kill", rep.OnTargetBefore, rep.Affected)
	case rep.Acked < 300 || rep.Unacked != 0:
		t.Fatalf("publishing: %+v", rep.Accounting)
	case rep.Lost != 0 || rep.Duplicated != 0 || rep.Gaps != 0 || rep.OutOfOrder != 0 || rep.SeqMismatch != 0 || rep.SeqConflict != 0:
		t.Fatalf("the kill broke a guarantee: %+v", rep.Accounting)
	case rep.Rewelcomed < rep.Affected || rep.ByNode[rep.Target] != 0:
		t.Fatalf("failover: %+v", rep.Failover)
	case rep.Resumed != rep.Rewelcomed || rep.ContinuityLost != 0:
		t.Fatalf("every user should resume: %+v", rep.Failover)
	case rep.RTO.Count != uint64(rep.Rewelcomed) || rep.RTO.Max < rep.RTO.P50 || rep.Rewelcome.Max > rep.RTO.Max:
		t.Fatalf("rto: %+v rewelcome: %+v", rep.RTO, rep.Rewelcome)
	}
}

// TestKillCommandNamesTheNode: {node} in --kill-cmd is the target's id.
func TestKillCommandNamesTheNode(t *testing.T) {
	out := filepath.Join(t.TempDir(), "killed")
	if err := load.Command("printf %s {node} > "+out)(context.Background(), "n7"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != "n7" {
		t.Fatalf("command wrote %q (%v), want n7", b, err)
	}
}

// TestStormKill kills the node every user is on (the Raft leader, n1)
// through the Go API, as a harness would, and checks the report.
func TestStormKill(t *testing.T) {
	c := clustertest.Start(t, 3)
	cfg := load.DefaultConfig()
	for _, id := range c.IDs() {
		cfg.Endpoints = append(cfg.Endpoints, c.URL(id))
	}
	cfg.TokenSecret = []byte(clustertest.TokenSecret)
	cfg.Users, cfg.Duration, cfg.Target = 8, 5*time.Second, "n1"
	cfg.Trigger = func(context.Context, string) error {
		c.Kill("n1")
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := load.Storm(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Trigger != "kill" || rep.OnTargetBefore != 8 {
		t.Fatalf("setup: %+v", rep)
	}
	checkStorm(t, rep, "n1")
}
