package secret

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadFileTrimsAndRefusesEmpty(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if v, err := ReadFile(write("k", "  s3cret\n")); err != nil || v != "s3cret" {
		t.Errorf("ReadFile = %q, %v; want the trimmed secret", v, err)
	}
	if _, err := ReadFile(write("empty", " \n\t")); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("an empty file: %v, want an error saying so", err)
	}
	if _, err := ReadFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file was read")
	}
}

// A file being rotated holds several keys, one a line; the tools use the
// first, a node accepts all.
func TestSeveralKeys(t *testing.T) {
	keys, err := ParseKeys([]byte("\n  new-key \r\n\nold-key\n"))
	if err != nil || len(keys) != 2 || keys[0] != "new-key" || keys[1] != "old-key" {
		t.Fatalf("ParseKeys = %q, %v", keys, err)
	}
	p := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(p, []byte("new-key\nold-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := ReadFile(p); err != nil || v != "new-key" {
		t.Errorf("ReadFile = %q, %v; want the first key", v, err)
	}
	if _, err := ParseKeys([]byte(strings.Repeat("k\n", MaxKeys+1))); err == nil {
		t.Errorf("%d keys accepted", MaxKeys+1)
	}
}
