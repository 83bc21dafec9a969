package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/node"
	"github.com/switchboard/switchboard/protocol"
)

func gossipKey(seed byte) string {
	return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{seed}, 32))
}

// fingerprint is the first 16 hex digits of the SHA-256 of a base64 key.
func fingerprint(key string) string {
	b, _ := base64.StdEncoding.DecodeString(key)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// TestKeyringAgainstCluster rotates the gossip key of a two-node cluster
// with sbctl keyring, and checks what it prints and how it exits when a
// step is refused.
func TestKeyringAgainstCluster(t *testing.T) {
	clearEnv(t)
	k1, k2, k3 := gossipKey(1), gossipKey(2), gossipKey(3)
	raw, _ := base64.StdEncoding.DecodeString(k1)
	c := clustertest.Start(t, 2, clustertest.Options{Configure: func(cfg *node.Config) { cfg.Gossip.Keys = [][]byte{raw} }})
	admin := []string{"--addr", c.URL("n2"), "--admin-key", clustertest.AdminKey, "keyring"}
	ok := func(args ...string) string {
		t.Helper()
		code, out, errOut := sbctl(t, append(admin, args...)...)
		if code != 0 {
			t.Fatalf("keyring %v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
		return out
	}
	rows := func() []string {
		t.Helper()
		var out []string
		for _, line := range strings.Split(strings.TrimSpace(ok("list")), "\n")[1:] {
			out = append(out, strings.Join(strings.Fields(line), " "))
		}
		return out
	}
	if got := rows(); strings.Join(got, "|") != fingerprint(k1)+" yes 2/2" {
		t.Fatalf("list = %q", got)
	}

	if out := ok("install", k2); !strings.Contains(out, "install "+fingerprint(k2)+": done on 2 nodes (2 changed)") ||
		!strings.Contains(out, "n1  changed") || !strings.Contains(out, "n2  changed") {
		t.Fatalf("install: %q", out)
	}
	if got := rows(); strings.Join(got, "|") != fingerprint(k1)+" yes 2/2|"+fingerprint(k2)+" - 2/2" {
		t.Fatalf("list after install = %q", got)
	}
	var gk protocol.GossipKeys
	if out := ok("list", "--json"); json.Unmarshal([]byte(out), &gk) != nil || !gk.Encrypted || len(gk.Keys) != 2 || gk.Nodes != 2 {
		t.Fatalf("list --json = %s", out)
	}

	// A refused step exits 1, says why, and shows every node's part.
	code, out, errOut := sbctl(t, append(admin, "use", k3)...)
	if code != 1 || !strings.Contains(errOut, "409 Conflict") || !strings.Contains(errOut, "is not installed on n1, n2: install it first") ||
		!strings.Contains(out, "not done everywhere") || !strings.Contains(out, "n1  failed: key not installed here") {
		t.Fatalf("use of a key not installed: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	ok("use", "--key-file", writeFile(t, "new-key", "\n "+k2+" \n"))
	if out := ok("remove", k1); !strings.Contains(out, "done on 2 nodes (2 changed)") {
		t.Fatalf("remove: %q", out)
	}
	if got := rows(); strings.Join(got, "|") != fingerprint(k2)+" yes 2/2" {
		t.Fatalf("list after the rotation = %q", got)
	}
	code, _, errOut = sbctl(t, append(admin, "remove", k2)...)
	if code != 1 || !strings.Contains(errOut, "is the primary on n1, n2: use another key first") {
		t.Fatalf("remove of the primary: exit %d, stderr %q", code, errOut)
	}
}

func TestKeyringUsage(t *testing.T) {
	clearEnv(t)
	keyFile := writeFile(t, "k", gossipKey(1)+"\n")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", []string{"keyring"}, "want list, install, use or remove"},
		{"unknown subcommand", []string{"keyring", "rotate"}, `unknown subcommand "rotate"`},
		{"install without key", []string{"--admin-key", "k", "keyring", "install"}, "missing K (a base64 key) or --key-file"},
		{"key and key file", []string{"--admin-key", "k", "keyring", "install", "--key-file", keyFile, gossipKey(1)}, "unexpected arguments"},
		{"not base64", []string{"--admin-key", "k", "keyring", "use", "no-base64!"}, "the key is not base64"},
		{"short key", []string{"--admin-key", "k", "keyring", "remove", base64.StdEncoding.EncodeToString([]byte("short"))}, "the key is 5 bytes, want 16, 24 or 32"},
		{"list with an argument", []string{"--admin-key", "k", "keyring", "list", "x"}, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := sbctl(t, tc.args...)
			if code != 2 || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "usage: sbctl") {
				t.Errorf("exit %d (want 2), stdout %q, stderr %q; want %q", code, out, errOut, tc.want)
			}
		})
	}
}

// TestKeyringAnswers checks how sbctl shows answers a healthy test
// cluster does not give: nodes that could not be asked, an unencrypted
// cluster, a step that reached only some nodes.
func TestKeyringAnswers(t *testing.T) {
	clearEnv(t)
	for _, tc := range []struct {
		name         string
		args         []string
		status       int
		body         any
		code         int
		stdout, errs []string
	}{
		{"list with a node unreachable", []string{"list"}, 200,
			protocol.GossipKeys{Encrypted: true, Nodes: 2, Unreachable: []string{"n3"}, Keys: []protocol.GossipKeyInfo{
				{Fingerprint: "aaaaaaaaaaaaaaaa", Nodes: 2, PrimaryOn: 1}, {Fingerprint: "bbbbbbbbbbbbbbbb", Nodes: 1, PrimaryOn: 1}}},
			1, []string{"aaaaaaaaaaaaaaaa  on 1 of 2  2/2", "bbbbbbbbbbbbbbbb  on 1 of 2  1/2"}, []string{"n3 could not be asked: the list is incomplete"}},
		{"list without encryption", []string{"list"}, 200, protocol.GossipKeys{Nodes: 3, Keys: []protocol.GossipKeyInfo{}},
			0, []string{"gossip encryption is off (start the nodes with --gossip-key-file)"}, nil},
		{"install reaching some nodes", []string{"install", gossipKey(1)}, 503,
			protocol.GossipKeyOpResult{Op: "install", Fingerprint: "cccccccccccccccc", Error: "n2 could not be reached: the keyrings now differ", Nodes: []protocol.GossipKeyNode{
				{Node: "n1", OK: true, Changed: true}, {Node: "n2", Error: "unreachable: i/o timeout"}}},
			1, []string{"not done everywhere", "n1  changed", "n2  failed: unreachable: i/o timeout"}, []string{"503 Service Unavailable: n2 could not be reached"}},
		{"install refused without detail", []string{"install", gossipKey(1)}, 409, protocol.Error{Error: "gossip encryption is off"},
			1, nil, []string{"409 Conflict: gossip encryption is off"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v1/gossip/keys" {
					t.Errorf("path %s", r.URL.Path)
				}
				if r.Method == http.MethodPost {
					var op protocol.GossipKeyOp
					if err := json.NewDecoder(r.Body).Decode(&op); err != nil || op.Op != tc.args[0] || op.Key != tc.args[1] ||
						r.Header.Get("Content-Type") != "application/json" {
						t.Errorf("body %+v, %v", op, err)
					}
				}
				w.WriteHeader(tc.status)
				_ = json.NewEncoder(w).Encode(tc.body)
			}))
			defer srv.Close()
			code, out, errOut := sbctl(t, append([]string{"--addr", srv.URL, "--admin-key", "k", "keyring"}, tc.args...)...)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stdout %q, stderr %q)", code, tc.code, out, errOut)
			}
			for _, want := range tc.stdout {
				if !strings.Contains(out, want) {
					t.Errorf("stdout lacks %q:\n%s", want, out)
				}
			}
			for _, want := range tc.errs {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr lacks %q: %s", want, errOut)
				}
			}
		})
	}
}
