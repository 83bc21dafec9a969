package auth

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuffer collects log lines for tests that count them.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

// TestKeyFileRotation follows an operator rotating the PEM file: the new
// file is picked up within KeyFileCheck, a bad one keeps the keys in
// force (and is logged once), and a replacement by rename works too.
func TestKeyFileRotation(t *testing.T) {
	a, b, c := testKey(t, "rsa", 0), testKey(t, "ec", 0), testKey(t, "ed", 0)
	path := keyFilePath(t, pemPublic(t, a.public()))
	clk := newClock()
	logs := &logBuffer{}
	cfg := testConfig(t, clk)
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	cfg.PublicKeyFile = path
	v := newVerifier(t, cfg)
	tokA, tokB, tokC := sign(t, a, "", claims(nil)), sign(t, b, "", claims(nil)), sign(t, c, "", claims(nil))
	wantOK(t, v, tokA)

	// The file changes; it is looked at once KeyFileCheck has passed.
	writeFile(t, path, append(pemPublic(t, a.public()), pemPublic(t, b.public())...))
	wantRefused(t, v, tokB, "no key")
	clk.Advance(999 * time.Millisecond)
	wantRefused(t, v, tokB, "no key")
	clk.Advance(time.Millisecond)
	wantOK(t, v, tokB)
	wantOK(t, v, tokA)

	// a is withdrawn.
	writeFile(t, path, pemPublic(t, b.public()))
	clk.Advance(time.Second)
	wantRefused(t, v, tokA, "no key")
	wantOK(t, v, tokB)

	// A bad file keeps b, and is logged once however often it is looked at.
	writeFile(t, path, []byte("-----BEGIN PUBLIC KEY-----\ntruncated"))
	for range 5 {
		clk.Advance(time.Second)
		wantOK(t, v, tokB)
	}
	if n := logs.count("public key file not reloaded"); n != 1 {
		t.Errorf("the bad file was logged %d times, want once:\n%s", n, logs.buf.String())
	}
	if err := v.Reload(); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("Reload of a bad file: %v", err)
	}
	wantOK(t, v, tokB)

	// The file disappears for a while: b stays, logged once.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		clk.Advance(time.Second)
		wantOK(t, v, tokB)
	}
	if n := logs.count("public key file not reloaded"); n != 3 { // the Reload's, and one for the missing file
		t.Errorf("logged %d times, want 3:\n%s", n, logs.buf.String())
	}

	// A new file renamed into place.
	tmp := filepath.Join(filepath.Dir(path), "keys.pem.new")
	writeFile(t, tmp, pemCert(t, c))
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	wantOK(t, v, tokC)
	wantRefused(t, v, tokB, "no key")
	if n := logs.count("public key file reloaded"); n != 3 {
		t.Errorf("%d reloads logged, want 3:\n%s", n, logs.buf.String())
	}
	if err := v.Reload(); err != nil {
		t.Errorf("Reload of a good file: %v", err)
	}
}

func TestReloadWithoutFile(t *testing.T) {
	cfg := testConfig(t, newClock())
	cfg.Secret = secret
	if err := newVerifier(t, cfg).Reload(); err != nil {
		t.Fatalf("Reload without a key file: %v", err)
	}
}

// TestSecretFileRotation follows an operator rotating the HS256 secret
// without a restart: the new secret is added as a second line (both
// verify), issuers move to it, and the old one is removed.
func TestSecretFileRotation(t *testing.T) {
	old, next := []byte("old-secret-0123456789"), []byte("new-secret-0123456789")
	path := filepath.Join(t.TempDir(), "token-secret")
	writeFile(t, path, append(old, '\n'))
	clk := newClock()
	cfg := testConfig(t, clk)
	cfg.SecretFile = path
	v := newVerifier(t, cfg)
	tokOld, tokNew := signHS256(t, old, "", claims(nil)), signHS256(t, next, "", claims(nil))
	wantOK(t, v, tokOld)
	wantRefused(t, v, tokNew, "signature")

	writeFile(t, path, []byte(string(next)+"\n"+string(old)+"\n"))
	clk.Advance(time.Second)
	wantOK(t, v, tokNew)
	wantOK(t, v, tokOld)

	writeFile(t, path, append(next, '\n'))
	clk.Advance(time.Second)
	wantOK(t, v, tokNew)
	wantRefused(t, v, tokOld, "signature")

	// A version without a key keeps the one in force.
	writeFile(t, path, []byte(" \n"))
	clk.Advance(time.Second)
	wantOK(t, v, tokNew)
}
