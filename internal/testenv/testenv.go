// Package testenv lets tests depend on things outside the Go toolchain (an
// external binary, root, a kernel feature) without silently losing coverage:
// locally a missing dependency skips the test, in CI it fails it.
package testenv

import (
	"os"
	"testing"
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
