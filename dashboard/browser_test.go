package dashboard_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard/switchboard/client"
	"github.com/switchboard/switchboard/internal/browsertest"
	"github.com/switchboard/switchboard/internal/clustertest"
)

// page drives the dashboard in a real browser; a step that fails keeps a
// screenshot and the page's text, so the failure can be seen.
type page struct {
	t   *testing.T
	ctx context.Context
}

func (p page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(browsertest.Step(p.t, p.ctx), actions...); err != nil {
		p.fail(what, err)
	}
}

// until waits for the JavaScript expression cond to be true.
func (p page) until(what, cond string) {
	p.t.Helper()
	if _, err := chromedp.Run(browsertest.Step(p.t, p.ctx), chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		p.fail(what, err)
	}
}

func (p page) eval(expr string) string {
	p.t.Helper()
	v, err := chromedp.Run(browsertest.Step(p.t, p.ctx), chromedp.Evaluate[string](expr))
	if err != nil {
		p.fail("evaluate "+expr, err)
	}
	return v
}

// signIn opens the dashboard at url and enters the admin key in its form.
func (p page) signIn(url string) {
	p.t.Helper()
	p.do("open "+url, chromedp.Navigate(url))
	p.do("the key form", chromedp.WaitVisible(`#admin-key`))
	p.do("enter the admin key",
		chromedp.SendKeys(`#admin-key`, clustertest.AdminKey),
		chromedp.Click(`#login-submit`))
	p.until("signed in", `!document.querySelector('#app').hidden`)
	if got := p.eval(`sessionStorage.getItem('switchboard.adminKey')`); got != clustertest.AdminKey {
		p.t.Fatalf("key kept in sessionStorage: %q", got)
	}
}

func (p page) screenshot(name string) string {
	p.t.Helper()
	shot, err := chromedp.Run(browsertest.Step(p.t, p.ctx), chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatalf("screenshot: %v", err)
	}
	return browsertest.SaveArtifact(p.t, name, shot)
}

func (p page) fail(what string, err error) {
	p.t.Helper()
	text, _ := chromedp.Run(browsertest.Step(p.t, p.ctx), chromedp.Evaluate[string](`document.body.innerText`))
	if shot, serr := chromedp.Run(browsertest.Step(p.t, p.ctx), chromedp.FullScreenshot(100)); serr == nil {
		p.t.Logf("screenshot: %s", browsertest.SaveArtifact(p.t, "dashboard-failure.png", shot))
	}
	p.t.Fatalf("%s: %v\npage text:\n%s", what, err, text)
}

// The acceptance test of the dashboard (issue 11): a real browser opens
// /ui/ on a three-node cluster spread over two regions, signs in with the
// admin key, sees every node in its region and zone with the leader
// marked, looks a session and a channel up and sees their owners, moves
// the Raft leadership, and drains a node with its button, confirmed, and
// sees its state change. The drill panel has its own test
// (drillpanel_test.go).
func TestDashboardInHeadlessChromium(t *testing.T) {
	ctx := browsertest.Start(t, chromedp.WindowSize(1440, 1000))
	c := clustertest.Start(t, 3, clustertest.Options{Zones: []string{"r1/a", "r1/b", "r2/a"}})
	leader := c.WaitLeader()

	// Connected users, and steady traffic, so that sessions exist and the
	// rates and sparklines move.
	for user, at := range map[string]string{"dash-user": "n2", "trader-1": "n1", "trader-2": "n3"} {
		connect(t, c, user, at)
	}
	traffic(t, c)
	sess, st := c.Session("n1", "dash-user")
	if st != http.StatusOK || sess.Owner == "" {
		t.Fatalf("session of dash-user: %d %+v", st, sess)
	}

	p := page{t, ctx}
	pageErrors := browsertest.PageErrors(t, ctx)
	p.do("open /ui/ and enter a wrong key",
		chromedp.Navigate(c.URL("n1")+"/ui/"),
		chromedp.WaitVisible(`#admin-key`),
		chromedp.SendKeys(`#admin-key`, "not-the-key"),
		chromedp.Click(`#login-submit`))
	p.until("the refusal", `!document.querySelector('#login-error').hidden && document.querySelector('#login-error').textContent.includes('refused') && sessionStorage.getItem('switchboard.adminKey') === null`)
	p.signIn(c.URL("n1") + "/ui/")

	// Every node in its region and zone, the leader marked on its card
	// and in the Raft panel, and the figures of /v1/stats shown.
	for _, n := range []struct{ id, region, zone string }{{"n1", "r1", "a"}, {"n2", "r1", "b"}, {"n3", "r2", "a"}} {
		p.until(n.id+" in region "+n.region+" zone "+n.zone, `document.querySelector('.region[data-region="`+n.region+`"] .zone[data-zone="`+n.zone+`"] article[data-node="`+n.id+`"][data-state="alive"]') !== null`)
	}
	p.until("the leader marked", `(() => {
		const l = [...document.querySelectorAll('article[data-node][data-leader="true"]')];
		return l.length === 1 && l[0].dataset.node === "`+leader+`" && l[0].dataset.raft === "leader" &&
			!l[0].querySelector('[data-field="leader"]').hidden &&
			document.querySelector('#raft-servers tr[data-leader="true"]')?.dataset.server === "`+leader+`";
	})()`)
	p.until("n2's connection and delivered messages shown", `(() => {
		const n2 = document.querySelector('article[data-node="n2"]');
		return n2.querySelector('[data-field="connections"]').textContent === "1" &&
			document.querySelectorAll('article[data-node] svg.spark polyline.del[points*=","]').length === 3;
	})()`)
	p.until("a few samples in the sparklines", `document.querySelector('article[data-node="n1"] polyline.pub').getAttribute('points').split(' ').length >= 6`)
	if got := p.eval(`document.querySelector('#sum-nodes').textContent`); got != "3 live / 3" {
		t.Errorf("summary nodes %q", got)
	}

	// The session lookup shows the owner the admin API names.
	p.do("look up dash-user",
		chromedp.SendKeys(`#session-user`, "dash-user"),
		chromedp.Click(`#session-form button[type=submit]`))
	p.until("the session's owner", `document.querySelector('#session-owner dd')?.textContent === "`+sess.Owner+`"`)
	var ch struct{ Owner string }
	if st, body := c.Get("n1", "/v1/channels/ticker:BTC", clustertest.AdminKey); st != http.StatusOK || json.Unmarshal(body, &ch) != nil || ch.Owner == "" {
		t.Fatalf("GET /v1/channels/ticker:BTC: %d %s", st, body)
	}
	p.do("look up a channel",
		chromedp.SetValue(`#channel-name`, "ticker:BTC"),
		chromedp.Click(`#channel-form button[type=submit]`))
	p.until("the channel's owner", `document.querySelector('#channel-owner dd')?.textContent === "`+ch.Owner+`"`)
	p.do("look up a missing channel",
		chromedp.SetValue(`#channel-name`, "no:such"),
		chromedp.Click(`#channel-form button[type=submit]`))
	p.until("the channel lookup's 404", `(() => { const r = document.querySelector('#channel-result');
		return !r.hidden && r.classList.contains('error') && r.textContent.startsWith('404'); })()`)

	// The page knows the node serving it, which cannot be a drill's target.
	p.until("n1 marked as this console", `document.querySelector('article[data-node="n1"]').dataset.self === "true" &&
		[...document.querySelectorAll('#drill-target option')].map((o) => o.value).join() === "n2,n3"`)

	p.do("scroll to the top", chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
	desktop := p.screenshot("dashboard.png")

	// Leadership moves with the Raft panel's button, confirmed.
	p.do("transfer leadership",
		chromedp.Click(`#transfer-leadership`),
		chromedp.WaitVisible(`#confirm-ok`),
		chromedp.Click(`#confirm-ok`))
	p.until("leadership moved", `(() => { const r = document.querySelector('#raft-result');
		const l = document.querySelector('article[data-node][data-leader="true"]');
		return !r.hidden && r.textContent.startsWith('Leadership moved from `+leader+`') && l && l.dataset.node !== "`+leader+`"; })()`)
	t.Logf("%s", p.eval(`document.querySelector('#raft-result').textContent`))

	// Drain n3 with its button, confirmed; its card follows it out.
	p.do("drain n3",
		chromedp.Click(`button[data-action="drain"][data-node="n3"]`),
		chromedp.WaitVisible(`#confirm-ok`))
	if got := p.eval(`document.querySelector('#confirm-title').textContent`); !strings.Contains(got, "n3") {
		t.Errorf("confirmation %q does not name n3", got)
	}
	p.do("confirm the drain", chromedp.Click(`#confirm-ok`))
	p.until("the drain's answer", `document.querySelector('#banner').textContent.startsWith('n3 is draining')`)
	p.until("n3 draining or gone", `["draining", "left", "dead"].includes(document.querySelector('article[data-node="n3"]')?.dataset.state)`)
	t.Logf("n3 is %s", p.eval(`document.querySelector('article[data-node="n3"]').dataset.state`))
	p.until("n3 left", `["left", "dead"].includes(document.querySelector('article[data-node="n3"]')?.dataset.state)`)
	p.do("scroll to the top", chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
	drained := p.screenshot("dashboard-drained.png")

	// The same page at a phone's width.
	p.do("phone width", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)))
	p.until("one column", `document.querySelector('#lookup-panel').getBoundingClientRect().width <= 390`)
	if overflow := p.eval(`String(document.documentElement.scrollWidth - window.innerWidth)`); overflow != "0" {
		t.Errorf("the page scrolls sideways at 390 px: %s px too wide", overflow)
	}
	phone := p.screenshot("dashboard-phone.png")
	t.Logf("screenshots: %s, %s, %s", desktop, drained, phone)
	if errs := pageErrors(); len(errs) > 0 {
		t.Errorf("the page reported errors:\n%s", strings.Join(errs, "\n"))
	}
}

// connect keeps user connected at node id until the test ends.
func connect(t *testing.T, c *clustertest.Cluster, user, id string) {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.Endpoints = []string{c.ConnectURL(id)}
	cfg.Token = client.StaticToken(c.Token(user))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("connect %s at %s: %v", user, id, err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	// Nobody reads the messages: drain them so the client keeps up.
	go func() {
		for range cl.Messages() {
		}
	}()
}

// traffic publishes to the users and a channel through n1 and n2 until
// the test ends, at a rate that rises and falls.
func traffic(t *testing.T, c *clustertest.Cluster) {
	t.Helper()
	if st, _, body := c.PublishChannel("n1", "ticker:BTC", map[string]float64{"px": 101.5}, ""); st != http.StatusOK {
		t.Fatalf("publish to a channel: %d %s", st, body)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for j := range 1 + i%7 {
				user := []string{"dash-user", "trader-1", "trader-2"}[j%3]
				c.Publish([]string{"n1", "n2"}[j%2], user, map[string]int{"n": i}, "")
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		wg.Wait()
	})
}
