package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchboard/switchboard/internal/clustertest"
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
