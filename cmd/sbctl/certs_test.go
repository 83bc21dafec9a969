package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/internal/secret"
	"github.com/switchboard/switchboard/membership"
)

func TestCertsInit(t *testing.T) {
	clearEnv(t)
	dir := filepath.Join(t.TempDir(), "certs")
	code, out, errOut := sbctl(t, "certs", "init", "--dir", dir, "--nodes", "n1, n2,n3", "--hosts", "sb.example.com,10.0.0.7")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "new cluster CA") || !strings.Contains(out, "--cluster-ca-file "+filepath.Join(dir, "ca.pem")) {
		t.Errorf("output:\n%s", out)
	}
	for name, mode := range map[string]os.FileMode{"ca.pem": 0o644, "ca-key.pem": 0o600, "n1.pem": 0o644, "n1-key.pem": 0o600, "n3.pem": 0o644, "n3-key.pem": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))

	// Again: the CA stays and issues (a new node, renewals).
	code, out, errOut = sbctl(t, "certs", "init", "--dir", dir, "--nodes", "n4")
	again, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if code != 0 || !strings.Contains(out, "existing CA") || !bytes.Equal(ca, again) {
		t.Fatalf("second init: exit %d, %s%s", code, out, errOut)
	}
	// Only --new-ca replaces it.
	code, _, errOut = sbctl(t, "certs", "init", "--dir", dir, "--nodes", "n1", "--new-ca")
	replaced, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if code != 0 || bytes.Equal(ca, replaced) {
		t.Fatalf("--new-ca: exit %d, %s", code, errOut)
	}

	for _, args := range [][]string{
		{"certs"},
		{"certs", "init", "--nodes", "n1"},
		{"certs", "init", "--dir", dir},
		{"certs", "init", "--dir", dir, "--nodes", "n1", "--validity", "-1h"},
	} {
		if code, _, _ := sbctl(t, args...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
		}
	}
	if code, _, errOut := sbctl(t, "certs", "init", "--dir", dir, "--nodes", "../x"); code != exitFail || !strings.Contains(errOut, "node id") {
		t.Errorf("bad node id: exit %d, %s", code, errOut)
	}
}

// An https:// node is reached with --ca-file or SWITCHBOARD_CA_FILE, and
// refused without: its CA is not among the system's.
func TestCAFileForHTTPS(t *testing.T) {
	clearEnv(t)
	c := clustertest.Start(t, 1, clustertest.Options{PublicTLS: true, ClusterTLS: true})
	addr := c.URL("n1")
	if !strings.HasPrefix(addr, "https://") {
		t.Fatalf("URL %s", addr)
	}
	ca := filepath.Join(c.CertDir(), "ca.pem")
	admin := []string{"--addr", addr, "--admin-key", clustertest.AdminKey}

	if code, _, errOut := sbctl(t, append(admin, "status")...); code != exitFail || !strings.Contains(errOut, "certificate") {
		t.Errorf("without the CA: exit %d, %s", code, errOut)
	}
	code, out, errOut := sbctl(t, append(admin, "--ca-file", ca, "status")...)
	if code != 0 || !strings.Contains(out, "cluster tls   on") {
		t.Errorf("--ca-file: exit %d, %s%s", code, out, errOut)
	}
	t.Setenv("SWITCHBOARD_CA_FILE", ca)
	if code, out, errOut := sbctl(t, append(admin, "status", "--json")...); code != 0 || !strings.Contains(out, `"cluster_tls":true`) {
		t.Errorf("SWITCHBOARD_CA_FILE: exit %d, %s%s", code, out, errOut)
	}
	if code, _, errOut := sbctl(t, append(admin, "--ca-file", filepath.Join(c.CertDir(), "missing.pem"), "status")...); code != exitFail || !strings.Contains(errOut, "CA file") {
		t.Errorf("missing CA file: exit %d, %s", code, errOut)
	}
}

// The compose lab's init: --secrets writes the missing secret files next
// to the certificates, --if-empty leaves a directory with files alone,
// --group makes keys and secrets readable by the nodes' group.
func TestCertsInitLabSecrets(t *testing.T) {
	clearEnv(t)
	dir := filepath.Join(t.TempDir(), "lab")
	gid := os.Getgid()
	code, out, errOut := sbctl(t, "certs", "init", "--dir", dir, "--nodes", "n1,n2", "--secrets", "--if-empty", "--owner-of", filepath.Dir(dir), "--group", strconv.Itoa(gid))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "new secret") {
		t.Errorf("output:\n%s", out)
	}
	modes := map[string]os.FileMode{
		"ca.pem": 0o644, "ca-key.pem": 0o600, "n1.pem": 0o644, "n1-key.pem": 0o640, "n2-key.pem": 0o640,
		"token-secret": 0o640, "api-key": 0o640, "admin-key": 0o640, "gossip-key": 0o640,
	}
	for name, mode := range modes {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
		if _, g, ok := fileOwner(fi); ok && g != gid {
			t.Errorf("%s: group %d, want %d", name, g, gid)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf("dir: %v %v, want mode 0750", fi.Mode(), err)
	}
	secrets := map[string]string{}
	for _, name := range []string{"token-secret", "api-key", "admin-key"} {
		v, err := secret.ReadFile(filepath.Join(dir, name))
		if err != nil || len(v) != 64 {
			t.Fatalf("%s: %d chars, %v", name, len(v), err)
		}
		secrets[name] = v
	}
	if len(map[string]bool{secrets["token-secret"]: true, secrets["api-key"]: true, secrets["admin-key"]: true}) != 3 {
		t.Error("two secrets are the same")
	}
	keys, err := membership.ReadKeyFile(filepath.Join(dir, "gossip-key"))
	if err != nil || len(keys) != 1 || len(keys[0]) != 32 {
		t.Fatalf("gossip key: %d keys, %v", len(keys), err)
	}

	// A directory with files is left alone: nothing is reissued.
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	n1, _ := os.ReadFile(filepath.Join(dir, "n1.pem"))
	code, out, errOut = sbctl(t, "certs", "init", "--dir", dir, "--nodes", "n1,n2,n3", "--secrets", "--if-empty", "--new-ca")
	if code != 0 || !strings.Contains(out, "left alone") {
		t.Fatalf("--if-empty on a full dir: exit %d, %s%s", code, out, errOut)
	}
	ca2, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	n12, _ := os.ReadFile(filepath.Join(dir, "n1.pem"))
	if !bytes.Equal(ca, ca2) || !bytes.Equal(n1, n12) {
		t.Error("--if-empty reissued certificates")
	}
	if _, err := os.Stat(filepath.Join(dir, "n3.pem")); !os.IsNotExist(err) {
		t.Errorf("--if-empty issued n3: %v", err)
	}

	// Without --if-empty, --secrets keeps the secrets there and writes
	// only the missing ones.
	if err := os.Remove(filepath.Join(dir, "api-key")); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := sbctl(t, "certs", "init", "--dir", dir, "--nodes", "n1", "--secrets"); code != 0 {
		t.Fatalf("again: exit %d, %s", code, errOut)
	}
	if v, _ := secret.ReadFile(filepath.Join(dir, "token-secret")); v != secrets["token-secret"] {
		t.Error("the token secret was replaced")
	}
	if v, err := secret.ReadFile(filepath.Join(dir, "api-key")); err != nil || v == secrets["api-key"] {
		t.Errorf("the missing API key: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "api-key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("a secret written without --group: %v", err)
	}

	if code, _, _ := sbctl(t, "certs", "init", "--dir", dir, "--nodes", "n1", "--group", "-2"); code != exitUsage {
		t.Errorf("--group -2: exit %d, want %d", code, exitUsage)
	}
	if code, _, errOut := sbctl(t, "certs", "init", "--dir", dir, "--nodes", "n1", "--owner-of", filepath.Join(dir, "missing")); code != exitFail || !strings.Contains(errOut, "--owner-of") {
		t.Errorf("--owner-of a missing path: exit %d, %s", code, errOut)
	}
}
