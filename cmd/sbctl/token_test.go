package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTokenBesideDevNode: DESIGN.md §6 lists `sbctl … token --user U`
// with no secret flag; beside a `switchboard --dev` node (its secret in
// ./switchboard-data/token-secret) that mints a token the node accepts.
func TestTokenBesideDevNode(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	t.Chdir(dir)
	if code, _, errOut := sbctl(t, "token", "--user", "u"); code != exitUsage || !strings.Contains(errOut, "--token-secret-file") {
		t.Fatalf("no secret anywhere: exit %d, stderr %q; want 2 naming --token-secret-file", code, errOut)
	}
	const secret = "dev-secret-0123456789abcdef"
	if err := os.MkdirAll(filepath.Join(dir, "switchboard-data"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "switchboard-data", "token-secret"), []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := sbctl(t, "--addr", "http://127.0.0.1:7700", "--admin-key", "k", "token", "--user", "u")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	parts := strings.Split(strings.TrimSpace(out), ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", out)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(parts[0] + "." + parts[1]))
	if got, want := parts[2], base64.RawURLEncoding.EncodeToString(mac.Sum(nil)); got != want {
		t.Fatalf("token not signed with the dev node's secret: %q", out)
	}
	// A secret named explicitly still wins.
	other := writeFile(t, "other", "other-secret")
	if _, out2, _ := sbctl(t, "token", "--user", "u", "--token-secret-file", other); strings.Split(strings.TrimSpace(out2), ".")[2] == parts[2] {
		t.Fatal("--token-secret-file ignored")
	}
}
