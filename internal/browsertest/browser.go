// Package browsertest runs tests in a real headless Chromium (Debian's
// chromium-headless-shell) through chromedp: it finds the browser, starts
// it for a test, bounds each step, and keeps screenshots as artifacts.
package browsertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/switchboard/switchboard/internal/testenv"
)

// ArtifactsEnv names the directory where screenshots are kept (.ci/run
// sets it); without it they go to the test's temporary directory.
const ArtifactsEnv = "SWITCHBOARD_ARTIFACTS"

// StepTimeout bounds one step of a test (a navigation, a wait, a click).
const StepTimeout = 30 * time.Second

// Path returns the first headless Chromium found on PATH, or "".
func Path() string {
	for _, name := range []string{"chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// Start starts a browser for t and returns its context; the browser
// stops when the test ends. Without a browser the test skips, or fails
// under SWITCHBOARD_REQUIRE_ALL (testenv.Require). opts add to chromedp's
// defaults (a window size, say).
func Start(t testing.TB, opts ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	browser := Path()
	testenv.Require(t, browser != "", "no headless Chromium (apt-get install chromium-headless-shell)")
	all := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(all, opts...)...)
	// The first action starts the browser, which lives as long as this
	// context: no timeout on it, one on each step instead (Step).
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", browser, err)
	}
	return ctx
}

// Step returns ctx bounded by StepTimeout, for one step of the test.
func Step(t testing.TB, ctx context.Context) context.Context {
	sctx, cancel := context.WithTimeout(ctx, StepTimeout)
	t.Cleanup(cancel)
	return sctx
}

// SaveArtifact keeps png (a screenshot) as name in $SWITCHBOARD_ARTIFACTS,
// or in the test's temporary directory, and returns its path.
func SaveArtifact(t testing.TB, name string, png []byte) string {
	t.Helper()
	dir := os.Getenv(ArtifactsEnv)
	if dir == "" {
		dir = t.TempDir()
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// PageErrors collects, from now on, what the page in ctx reports as
// broken: uncaught exceptions and unhandled rejections, console.error
// calls, and the browser's own error entries (a Content-Security-Policy
// violation, a module that did not load) but those of the network, which
// a page shows on purpose when an API answers an error status. The
// returned func reads what was collected so far.
func PageErrors(t testing.TB, ctx context.Context) func() []string {
	t.Helper()
	var mu sync.Mutex
	var errs []string
	add := func(s string) {
		mu.Lock()
		errs = append(errs, s)
		mu.Unlock()
	}
	err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg += " " + d.Exception.Description
			}
			add(fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber+1, msg))
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, strings.Trim(string(a.Value), `"`)+a.Description)
				}
				add("console.error: " + strings.Join(parts, " "))
			}
		case *cdplog.EventEntryAdded:
			if e := ev.Entry; e.Level == cdplog.EntryLevelError && e.Source != cdplog.EntrySourceNetwork {
				add(fmt.Sprintf("%s: %s (%s)", e.Source, e.Text, e.URL))
			}
		}
	})
	if err != nil {
		t.Fatalf("listen to the page: %v", err)
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(errs)
	}
}
