package filewatch

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// replace writes data to a new file and renames it over path, as
// operators (and configuration tools) replace files.
func replace(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestFileFollowsItsVersions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	replace(t, path, "one")
	clk := &clock{t: time.Unix(1000, 0)}
	parses := 0
	f, err := Load(Config[string]{
		Path: path, What: "test file", Every: time.Second, MaxBytes: 16, Now: clk.now,
		Logger: slog.New(slog.DiscardHandler),
		Parse: func(b []byte) (string, error) {
			parses++
			if strings.HasPrefix(string(b), "bad") {
				return "", errors.New("bad version")
			}
			return string(b), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Current(); got != "one" {
		t.Fatalf("Current = %q", got)
	}

	replace(t, path, "two")
	if got := f.Current(); got != "one" {
		t.Errorf("within the interval: %q, want the file not looked at", got)
	}
	clk.advance(time.Second)
	if got := f.Current(); got != "two" {
		t.Errorf("after the interval: %q, want two", got)
	}

	for _, bad := range []string{"bad one", strings.Repeat("x", 17)} {
		replace(t, path, bad)
		clk.advance(time.Second)
		if got := f.Current(); got != "two" {
			t.Errorf("after a refused version: %q, want two kept", got)
		}
	}
	before := parses
	clk.advance(time.Second)
	f.Current()
	if parses != before {
		t.Errorf("a refused version was parsed again")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	clk.advance(time.Second)
	if got := f.Current(); got != "two" {
		t.Errorf("file gone: %q, want two kept", got)
	}
	replace(t, path, "three")
	clk.advance(time.Second)
	if got := f.Current(); got != "three" {
		t.Errorf("file back: %q, want three", got)
	}
	if _, err := Load(Config[string]{Path: path + ".missing", Every: time.Second, MaxBytes: 16,
		Parse: func(b []byte) (string, error) { return string(b), nil }}); err == nil {
		t.Error("a missing file was loaded")
	}
}
