package js_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard/switchboard/internal/browsertest"
	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/node"
)

// A real browser loads the example page from a test server (another
// origin than the node's, which --allowed-origins lets in), connects
// through switchboard.js, subscribes to a channel with presence, and
// shows a message published to the channel, and one to its user.
func TestExamplePageInHeadlessChromium(t *testing.T) {
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

	ctx := browsertest.Start(t)
	step := func() context.Context { return browsertest.Step(t, ctx) }
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
	// The screenshot (PNG at quality 100) is the test's artifact.
	browsertest.SaveArtifact(t, "example-page.png", shot)
}
