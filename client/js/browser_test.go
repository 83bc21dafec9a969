package js_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/internal/testenv"
	"github.com/switchboard/switchboard/node"
)

// chromium finds a headless Chromium from Debian's packages.
func chromium() string {
	for _, name := range []string{"chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// A real browser loads the example page from a test server (another
// origin than the node's, which --allowed-origins lets in), connects
// through switchboard.js, subscribes to a channel with presence, and
// shows a message published to the channel, and one to its user.
func TestExamplePageInHeadlessChromium(t *testing.T) {
	browser := chromium()
	testenv.Require(t, browser != "", "no headless Chromium (apt-get install chromium-headless-shell)")

	pages := httptest.NewServer(http.FileServer(http.Dir(".")))
	t.Cleanup(pages.Close)
	c := clustertest.Start(t, 1, clustertest.Options{Configure: func(cfg *node.Config) {
		cfg.AllowedOrigins = []string{pages.URL}
	}})
	id := c.IDs()[0]
	q := url.Values{
		"endpoints":   {c.ConnectURL(id)},
		"token":       {c.Token("browser-user")},
		"channel":     {"ticker:BTC"},
		"autoconnect": {"1"},
	}
	page := pages.URL + "/example/index.html?" + q.Encode()

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	// The first action starts the browser, which lives as long as this
	// context: no timeout on it, one on each step instead.
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	step := func() context.Context {
		sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
		t.Cleanup(scancel)
		return sctx
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(page)); err != nil {
		t.Fatalf("load %s: %v", page, err)
	}
	if err := chromedp.Do(step(), chromedp.WaitReady(`#state`)); err != nil {
		t.Fatalf("load %s: %v", page, err)
	}
	if _, err := chromedp.Run(step(), chromedp.Poll[bool](`document.getElementById('presence').textContent.includes('browser-user')`, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("the page did not connect and subscribe with presence: %v", err)
	}
	state, err := chromedp.Run(step(), chromedp.Text(`#state`))
	if err != nil {
		t.Fatal(err)
	}
	if state != "connected" {
		t.Fatalf("state %q, want connected", state)
	}
	if st, _, body := c.PublishChannel(id, "ticker:BTC", map[string]any{"px": 101.5}, ""); st != http.StatusOK {
		t.Fatalf("publish to the channel: %d %s", st, body)
	}
	if st, _, body := c.Publish(id, "browser-user", map[string]any{"fill": 7}, ""); st != http.StatusOK {
		t.Fatalf("publish to the user: %d %s", st, body)
	}
	if _, err := chromedp.Run(step(), chromedp.Poll[bool](`document.querySelector('#channel-messages li') !== null && document.querySelector('#user-messages li') !== null`, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("no message shown: %v", err)
	}
	channelText, err := chromedp.Run(step(), chromedp.Text(`#channel-messages`))
	if err != nil {
		t.Fatal(err)
	}
	userText, err := chromedp.Run(step(), chromedp.Text(`#user-messages`))
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(step(), chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(channelText, `#1 {"px":101.5}`) || !strings.Contains(userText, `#1 {"fill":7}`) {
		t.Fatalf("channel list %q, user list %q", channelText, userText)
	}
	// The screenshot (PNG at quality 100) is the test's artifact, kept
	// in SWITCHBOARD_ARTIFACTS when set.
	dir := os.Getenv("SWITCHBOARD_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.WriteFile(filepath.Join(dir, "example-page.png"), shot, 0o644); err != nil {
		t.Fatal(err)
	}
}
