package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/testenv"
	"github.com/switchboard/switchboard/protocol"

	"github.com/gorilla/websocket"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/internal/load"
	"github.com/switchboard/switchboard/node"
)

func TestMain(m *testing.M) {
	testenv.VerifyNoLeaks(m) // memberlist probes may outlive a stopped node briefly
}

// sbctl runs the CLI in-process and returns its exit code and output.
func sbctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// clearEnv keeps the developer's environment out of the tests.
func clearEnv(t *testing.T) {
	for _, k := range []string{"SWITCHBOARD_ADDR", "SWITCHBOARD_ADMIN_KEY", "SWITCHBOARD_ADMIN_KEY_FILE", "SWITCHBOARD_TOKEN_SECRET_FILE", "SWITCHBOARD_CA_FILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k) // t.Setenv restores the old value at the end
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAgainstCluster exercises every command against a one-node cluster.
func TestAgainstCluster(t *testing.T) {
	clearEnv(t)
	c := clustertest.Start(t, 1)
	addr := c.URL("n1")
	admin := []string{"--addr", addr, "--admin-key", clustertest.AdminKey}

	t.Run("status table", func(t *testing.T) {
		code, out, errOut := sbctl(t, append(admin, "status")...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		for _, want := range []string{"leader        n1", "term", "commit index", "ID", "RAFT", "CONNECTIONS", "SESSIONS"} {
			if !strings.Contains(out, want) {
				t.Errorf("status output lacks %q:\n%s", want, out)
			}
		}
		var row []string
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == "n1" {
				row = f
			}
		}
		if want := []string{"n1", "r1", "a", "alive", "leader"}; len(row) < 5 || strings.Join(row[:5], " ") != strings.Join(want, " ") {
			t.Errorf("n1 row = %q, want it to start with %q:\n%s", row, want, out)
		}
	})

	t.Run("status json", func(t *testing.T) {
		code, out, errOut := sbctl(t, append(admin, "status", "--json")...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var ci clustertest.ClusterInfo
		if err := json.Unmarshal([]byte(out), &ci); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if ci.Leader != "n1" || len(ci.Nodes) != 1 || ci.Term == 0 {
			t.Errorf("cluster = %+v", ci)
		}
	})

	t.Run("sessions unknown user is a clear 404", func(t *testing.T) {
		code, out, errOut := sbctl(t, append(admin, "sessions", "nobody")...)
		if code != 1 || out != "" {
			t.Fatalf("exit %d, stdout %q", code, out)
		}
		if !strings.Contains(errOut, "404") || !strings.Contains(errOut, `no session for user "nobody"`) {
			t.Errorf("stderr = %q", errOut)
		}
	})

	t.Run("token connects and shows up in sessions", func(t *testing.T) {
		secret := writeFile(t, "token-secret", "  "+clustertest.TokenSecret+"\n")
		code, out, errOut := sbctl(t, "token", "--user", "alice", "--ttl", "10m", "--token-secret-file", secret)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		tok := strings.TrimSpace(out)
		ws, _, err := websocket.DefaultDialer.Dial(c.ConnectURL("n1"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		hello, _ := json.Marshal(map[string]any{"type": "hello", "token": tok})
		if err := ws.WriteMessage(websocket.TextMessage, hello); err != nil {
			t.Fatal(err)
		}
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("no welcome: %v", err)
		}
		var welcome struct{ Type, Session, Node string }
		if err := json.Unmarshal(msg, &welcome); err != nil || welcome.Type != "welcome" || welcome.Node != "n1" {
			t.Fatalf("first frame = %s", msg)
		}

		code, out, errOut = sbctl(t, append(admin, "sessions", "alice")...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		for _, want := range []string{"owner    n1", "session  " + welcome.Session, "state    attached"} {
			if !strings.Contains(out, want) {
				t.Errorf("sessions output lacks %q:\n%s", want, out)
			}
		}
		code, out, _ = sbctl(t, append(admin, "sessions", "--json", "alice")...)
		var si clustertest.SessionInfo
		if code != 0 || json.Unmarshal([]byte(out), &si) != nil || si.Session != welcome.Session {
			t.Errorf("sessions --json: exit %d, %s", code, out)
		}

		code, out, errOut = sbctl(t, append(admin, "raft")...)
		if code != 0 || !strings.Contains(out, "n1 *") || !strings.Contains(out, "voter") || !strings.Contains(out, "leader n1") {
			t.Errorf("raft: exit %d, %s%s", code, out, errOut)
		}
		code, out, _ = sbctl(t, append(admin, "raft", "--json")...)
		var rs protocol.Raft
		if code != 0 || json.Unmarshal([]byte(out), &rs) != nil || rs.Leader != "n1" || len(rs.Servers) != 1 || rs.Servers[0].Suffrage != "voter" || rs.Servers[0].Region == "" || rs.AppliedIndex == 0 {
			t.Errorf("raft --json: exit %d, %s", code, out)
		}

		if code, _, errOut := sbctl(t, append(admin, "channels", "news")...); code != 1 || !strings.Contains(errOut, "404") {
			t.Errorf("channels of an unknown channel: exit %d, %s", code, errOut)
		}
		if st, _, body := c.PublishChannel("n1", "news", "hi", ""); st != 200 {
			t.Fatalf("publish to news: %d %s", st, body)
		}
		code, out, errOut = sbctl(t, append(admin, "channels", "news")...)
		if code != 0 || !strings.Contains(out, "owner        n1") || !strings.Contains(out, "seq          1") {
			t.Errorf("channels news: exit %d, %s%s", code, out, errOut)
		}
	})

	t.Run("drain of an unknown node fails cleanly", func(t *testing.T) {
		code, out, errOut := sbctl(t, append(admin, "drain", "n9")...)
		if code != 1 || out != "" {
			t.Fatalf("exit %d, stdout %q", code, out)
		}
		if !strings.Contains(errOut, "404") || !strings.Contains(errOut, `no live node "n9"`) {
			t.Errorf("stderr = %q", errOut)
		}
	})

	t.Run("bad admin key", func(t *testing.T) {
		code, _, errOut := sbctl(t, "--addr", addr, "--admin-key", "wrong", "status")
		if code != 1 || !strings.Contains(errOut, "401") || !strings.Contains(errOut, "admin key") {
			t.Errorf("exit %d, stderr %q", code, errOut)
		}
	})

	t.Run("flags from the environment", func(t *testing.T) {
		t.Setenv("SWITCHBOARD_ADDR", strings.TrimPrefix(addr, "http://"))
		t.Setenv("SWITCHBOARD_ADMIN_KEY_FILE", writeFile(t, "admin-key", clustertest.AdminKey+"\n"))
		code, out, errOut := sbctl(t, "status", "--json")
		if code != 0 || !strings.Contains(out, `"leader":"n1"`) {
			t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})

	t.Run("leader transfer without another voter fails cleanly", func(t *testing.T) {
		code, _, errOut := sbctl(t, append(admin, "leader-transfer")...)
		if code != 1 || !strings.Contains(errOut, "503") || !strings.Contains(errOut, "leadership transfer") {
			t.Errorf("exit %d, stderr %q", code, errOut)
		}
	})

	// Last: draining n1 stops it.
	t.Run("drain", func(t *testing.T) {
		code, out, errOut := sbctl(t, append(admin, "drain", "n1")...)
		if code != 0 || !strings.Contains(out, "n1: draining") {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		select {
		case <-c.Node("n1").Done():
		case <-time.After(30 * time.Second):
			t.Fatal("n1 did not stop after drain")
		}
	})
}

func TestUsage(t *testing.T) {
	clearEnv(t)
	keyFile := writeFile(t, "k", "key")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "no command given"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown flag", []string{"--nope", "status"}, "flag provided but not defined: -nope"},
		{"sessions without user", []string{"--admin-key", "k", "sessions"}, "missing USER"},
		{"sessions with two users", []string{"--admin-key", "k", "sessions", "a", "b"}, "unexpected arguments"},
		{"drain without node", []string{"--admin-key", "k", "drain"}, "missing NODE"},
		{"status with an argument", []string{"--admin-key", "k", "status", "x"}, "unexpected arguments"},
		{"token without user", []string{"token", "--token-secret-file", keyFile}, "--user is required"},
		{"token without secret", []string{"token", "--user", "u"}, "--token-secret-file"},
		{"token with negative ttl", []string{"token", "--user", "u", "--ttl", "-1s", "--token-secret-file", keyFile}, "--ttl must be positive"},
		{"no admin key", []string{"status"}, "an admin key is required"},
		{"key and key file", []string{"--admin-key", "k", "--admin-key-file", keyFile, "status"}, "give one"},
		{"bad scheme", []string{"--addr", "ftp://x", "--admin-key", "k", "status"}, "want an http:// or https:// URL"},
		{"zero timeout", []string{"--timeout", "0s", "--admin-key", "k", "status"}, "--timeout must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := sbctl(t, tc.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2 (stdout %q)", code, out)
			}
			if !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "usage: sbctl") {
				t.Errorf("stderr lacks %q and the usage:\n%s", tc.want, errOut)
			}
		})
	}
	if code, out, _ := sbctl(t, "--help"); code != 0 || !strings.Contains(out, "usage: sbctl") {
		t.Errorf("--help: exit %d, stdout %q", code, out)
	}
}

func TestAdminKeyFromFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(good, []byte("\n  s3cret \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		g       globals
		env     map[string]string
		want    string
		wantErr string
	}{
		{name: "flag", g: globals{adminKey: "k1"}, env: map[string]string{"SWITCHBOARD_ADMIN_KEY": "k2"}, want: "k1"},
		{name: "flag file is trimmed", g: globals{adminKeyFile: good}, want: "s3cret"},
		{name: "env key", env: map[string]string{"SWITCHBOARD_ADMIN_KEY": "k2"}, want: "k2"},
		{name: "env file", env: map[string]string{"SWITCHBOARD_ADMIN_KEY_FILE": good}, want: "s3cret"},
		{name: "flags win over env", g: globals{adminKeyFile: good}, env: map[string]string{"SWITCHBOARD_ADMIN_KEY": "k2"}, want: "s3cret"},
		{name: "both in env", env: map[string]string{"SWITCHBOARD_ADMIN_KEY": "k", "SWITCHBOARD_ADMIN_KEY_FILE": good}, wantErr: "give one"},
		{name: "empty file", g: globals{adminKeyFile: empty}, wantErr: "is empty"},
		{name: "missing file", g: globals{adminKeyFile: filepath.Join(dir, "nope")}, wantErr: "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			got, err := tc.g.resolveKey()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("key = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestBaseURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"127.0.0.1:7700", "http://127.0.0.1:7700"},
		{"http://127.0.0.1:7700/", "http://127.0.0.1:7700"},
		{"https://sb.example.com/admin/", "https://sb.example.com/admin"},
		{" localhost:1 ", "http://localhost:1"},
		{"ws://x:1", ""},
		{"http://", ""},
	} {
		got, err := baseURL(tc.in)
		if (err != nil) != (tc.want == "") || got != tc.want {
			t.Errorf("baseURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestHTTPErrors checks that failures name the status and the server's
// message, whatever shape the error body has.
func TestHTTPErrors(t *testing.T) {
	clearEnv(t)
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"json error", http.StatusServiceUnavailable, `{"error":"no quorum"}`, "GET /v1/cluster: 503 Service Unavailable: no quorum"},
		{"html error", http.StatusBadGateway, "<html>\n<body>bad   gateway</body></html>", "502 Bad Gateway: <html> <body>bad gateway</body></html>"},
		{"empty body", http.StatusForbidden, "", "GET /v1/cluster: 403 Forbidden"},
		{"2xx that is not JSON", http.StatusOK, "hello", "answer is not the expected JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") != "Bearer k" {
					t.Errorf("Authorization = %q", r.Header.Get("Authorization"))
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			code, out, errOut := sbctl(t, "--addr", srv.URL, "--admin-key", "k", "status")
			if code != 1 || out != "" || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %q", code, out, errOut, tc.want)
			}
		})
	}
	// Nothing listening: the error names the address.
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	code, _, errOut := sbctl(t, "--addr", url, "--admin-key", "k", "status")
	if code != 1 || !strings.Contains(errOut, url+"/v1/cluster") || !strings.Contains(errOut, "refused") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestPrintStatus(t *testing.T) {
	var b bytes.Buffer
	err := printStatus(&b, protocol.Cluster{Term: 3, CommitIndex: 9, Nodes: []protocol.ClusterNode{
		{ID: "n2", Region: "r1", Zone: "b", State: "suspect", Raft: "voter", Connections: 12, SessionsOwned: 4},
		{ID: "n1", Region: "r1", Zone: "a", State: "alive", Raft: "nonvoter"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "(none") {
		t.Errorf("no leader not shown:\n%s", out)
	}
	i1, i2 := strings.Index(out, "\nn1 "), strings.Index(out, "\nn2 ")
	if i1 < 0 || i2 < 0 || i1 > i2 {
		t.Errorf("rows not sorted by id:\n%s", out)
	}
	if !strings.Contains(out, "suspect") || !strings.Contains(out, "12") {
		t.Errorf("n2 row incomplete:\n%s", out)
	}
}

func TestLeaderTransfer(t *testing.T) {
	clearEnv(t)
	c := clustertest.Start(t, 3)
	prev := c.WaitLeader()
	code, out, errOut := sbctl(t, "--addr", c.URL("n2"), "--admin-key", clustertest.AdminKey, "leader-transfer")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var from, to string
	if _, err := fmt.Sscanf(out, "leadership transferred from %s to %s", &from, &to); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	if from != prev || to == prev || c.Node(to) == nil {
		t.Errorf("output %q; leader was %s", out, prev)
	}
}

// TestDrill runs sbctl drill against a three-node cluster: the JSON
// report has the §6 names, accounts for every message, and a crash of
// n3 loses, duplicates and reorders nothing; the fault refused (a node
// without fault injection) fails the drill, with exit 1.
func TestDrill(t *testing.T) {
	clearEnv(t)
	c := clustertest.Start(t, 3, clustertest.Options{Configure: func(cfg *node.Config) { cfg.FaultInjection = cfg.NodeID != "n2" }})
	args := []string{"--addr", c.URL("n1"), "--admin-key", clustertest.AdminKey, "drill",
		"--token-secret-file", writeFile(t, "token-secret", clustertest.TokenSecret),
		"--users", "9", "--rate", "100", "--duration", "3s", "--at", "1s"}

	t.Run("usage", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			says string
		}{
			{[]string{"--fault", "crash"}, "--target is required"},
			{[]string{"--target", "n3", "--fault", "slow"}, "want crash, isolate or drain"},
			{[]string{"--target", "n3", "--fault", "crash", "--at", "5s"}, "--at"},
			{[]string{"--target", "n3", "--fault", "crash"}, "api-key-file"},
		} {
			code, _, errOut := sbctl(t, append(slices.Clone(args), tc.args...)...)
			if code != exitUsage || !strings.Contains(errOut, tc.says) {
				t.Errorf("%v: exit %d, stderr %q; want exit 2 mentioning %q", tc.args, code, errOut, tc.says)
			}
		}
	})
	t.Setenv("SWITCHBOARD_API_KEY_FILE", writeFile(t, "api-key", clustertest.APIKey))

	t.Run("fault refused", func(t *testing.T) {
		code, out, errOut := sbctl(t, append(slices.Clone(args), "--target", "n2", "--fault", "crash", "--json")...)
		if code != exitFail || !strings.Contains(errOut, "fault was not injected") || !strings.Contains(out, "--enable-fault-injection") {
			t.Fatalf("exit %d, stdout %s, stderr %s", code, out, errOut)
		}
	})

	t.Run("crash", func(t *testing.T) {
		code, out, errOut := sbctl(t, append(slices.Clone(args), "--target", "n3", "--fault", "crash", "--json")...)
		if code != exitOK {
			t.Fatalf("exit %d: %s\n%s", code, errOut, out)
		}
		var fields map[string]any
		if err := json.Unmarshal([]byte(out), &fields); err != nil {
			t.Fatalf("not one JSON object: %v\n%s", err, out)
		}
		for _, name := range []string{"users", "acked", "lost", "duplicated", "gaps", "out_of_order", "resumed",
			"continuity_lost", "rto_p50_ms", "rto_p99_ms", "rto_max_ms", "new_owner_ms"} {
			if _, ok := fields[name].(float64); !ok {
				t.Errorf("report has no number %q: %s", name, out)
			}
		}
		var rep load.DrillReport
		_ = json.Unmarshal([]byte(out), &rep)
		switch {
		case rep.Users != 9 || rep.Target != "n3" || rep.Trigger != "crash" || rep.Acked < 100:
			t.Fatalf("report: %s", out)
		case rep.Violated() || rep.Affected == 0 || rep.Resumed != rep.Rewelcomed || rep.Rewelcomed < rep.Affected:
			t.Fatalf("report: %s", out)
		}
		if c.Node("n3") != nil {
			t.Fatal("n3 still runs")
		}
	})
}
