// Package testenv lets tests depend on things outside the Go toolchain (an
// external binary, root, a kernel feature) without silently losing coverage:
// locally a missing dependency skips the test, in CI it fails it.
package testenv

import (
	"fmt"
	"os"
	"sync"
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
// goroutines are left behind (see FindLeaks).
func VerifyNoLeaks(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := FindLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// NoLeaks fails t if it leaves goroutines behind. Call it first in a test,
// so that its cleanup runs after every other cleanup (the Close of what the
// test started). Goroutines that already ran when it was called are
// ignored, so other tests of the package cannot make it fail.
func NoLeaks(t testing.TB) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// FindLeaks reports goroutines other than the caller's that are still
// running, apart from those dependencies are known to leave behind. It
// polls for a few seconds first: after a node stops, memberlist's prober
// may still finish a probe already in flight (at most one probe interval),
// and HTTP keep-alive goroutines end a moment after their servers; neither
// is a leak.
func FindLeaks() error {
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = goleak.Find(ignoredLeaks...); err == nil {
			return nil
		}
	}
	return err
}

// ignoredLeaks are goroutines that dependencies leave behind and that no
// code of ours can stop.
var ignoredLeaks = []goleak.Option{
	// A raft future that raced Shutdown never resolves (hashicorp/raft#498);
	// consensus stops waiting for it, but the goroutine blocked on it
	// cannot be stopped from outside.
	goleak.IgnoreTopFunction("github.com/hashicorp/raft.(*deferError).Error"),
	// toxiproxy (tests' fault injection, v2.5.0 to v2.12.0): when a link's
	// write to its destination fails with bytes still in flight, the
	// link's reader and toxic goroutines stay blocked on channels nobody
	// reads any more, even after the proxy stops. The proxies themselves
	// (listeners, accept loops) are still checked.
	goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run"),
	goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).read"),
}

// Watch calls check every interval on a goroutine of its own until the
// returned stop is called, and stop returns everything check reported:
// for a test that asserts something never happened while it acted.
func Watch(interval time.Duration, check func() []string) (stop func() []string) {
	done := make(chan struct{})
	var seen []string
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			seen = append(seen, check()...)
			select {
			case <-done:
				return
			case <-time.After(interval):
			}
		}
	})
	return func() []string {
		close(done)
		wg.Wait()
		return seen
	}
}
