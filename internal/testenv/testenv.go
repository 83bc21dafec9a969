// Package testenv lets tests depend on things outside the Go toolchain (an
// external binary, root, a kernel feature) without silently losing coverage:
// locally a missing dependency skips the test, in CI it fails it.
package testenv

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// RequireAllEnv is the environment variable that turns skips into failures.
// .ci/run sets it, so a CI machine missing a tool fails loudly instead of
// passing with the test skipped.
const RequireAllEnv = "SWITCHBOARD_REQUIRE_ALL"

// Require skips the test with reason unless ok; when SWITCHBOARD_REQUIRE_ALL
// is set it fails the test instead.
func Require(t testing.TB, ok bool, reason string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv(RequireAllEnv) != "" {
		t.Fatalf("required: %s", reason)
		return
	}
	t.Skip(reason)
}

// VerifyNoLeaks runs the package's tests and then fails the run if
// goroutines are left behind. It polls for a few seconds first: after a
// node stops, memberlist's prober may still finish a probe already in
// flight (at most one probe interval), which is not a leak.
func VerifyNoLeaks(m *testing.M) {
	code := m.Run()
	if code == 0 {
		var err error
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			// A raft Apply future that raced Shutdown never resolves
			// (hashicorp/raft#498); consensus stops waiting for it, but the
			// goroutine blocked on it cannot be stopped from outside.
			if err = goleak.Find(goleak.IgnoreTopFunction("github.com/hashicorp/raft.(*deferError).Error")); err == nil {
				break
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
