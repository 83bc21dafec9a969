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
