package dashboard_test

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/switchboard/switchboard/internal/browsertest"
	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/node"
)

// The drill panel runs a real drill on the node serving the page (POST
// /v1/drills, the engine of sbctl drill): a request the node refuses shows
// its reason; a crash drill of n2 shows its progress while it runs and
// then its report, with every guarantee held.
func TestDrillPanelInHeadlessChromium(t *testing.T) {
	ctx := browsertest.Start(t, chromedp.WindowSize(1440, 1000))
	c := clustertest.Start(t, 3, clustertest.Options{
		Zones:     []string{"r1/a", "r1/b", "r2/a"},
		Configure: func(cfg *node.Config) { cfg.FaultInjection = true },
	})
	c.WaitLeader()
	p := page{t, ctx}
	pageErrors := browsertest.PageErrors(t, ctx)
	p.signIn(c.URL("n1") + "/ui/")
	p.until("drill targets", `[...document.querySelectorAll('#drill-target option')].map((o) => o.value).join() === "n2,n3"`)

	// More users than a node runs: the node's 400 and its reason.
	p.do("ask for too many users",
		chromedp.SetValue(`#drill-target`, "n2"),
		chromedp.SetValue(`#drill-fault`, "crash"),
		chromedp.SetValue(`#drill-users`, "50000"),
		chromedp.Click(`#drill-start`),
		chromedp.WaitVisible(`#confirm-ok`),
		chromedp.Click(`#confirm-ok`))
	p.until("the refusal", `(() => { const e = document.querySelector('#drill-error');
		return !e.hidden && e.textContent.startsWith('400') && e.textContent.includes('users must be'); })()`)

	p.do("start a crash drill of n2",
		chromedp.SetValue(`#drill-users`, "9"),
		chromedp.SetValue(`#drill-rate`, "100"),
		chromedp.SetValue(`#drill-duration`, "3"),
		chromedp.Click(`#drill-start`),
		chromedp.WaitVisible(`#confirm-ok`))
	if got := p.eval(`document.querySelector('#confirm-title').textContent`); !strings.Contains(got, "crash drill on n2") {
		t.Errorf("confirmation %q", got)
	}
	p.do("confirm the drill", chromedp.Click(`#confirm-ok`))
	p.until("the drill running", `document.querySelector('#drill-state')?.dataset.drillState === "running" && document.querySelector('#drill-error').hidden`)
	p.until("progress", `Number(document.querySelector('#drill-progress [data-field="sent"] .v')?.textContent.replaceAll(',', '')) > 0`)
	p.until("the drill's end", `document.querySelector('#drill-state')?.dataset.drillState !== "running"`)
	if state := p.eval(`document.querySelector('#drill-state').dataset.drillState`); state != "done" {
		t.Fatalf("drill %s: %s", state, p.eval(`document.querySelector('#drill-panel').innerText`))
	}
	p.until("the report", `!document.querySelector('#drill-report').hidden`)
	report := p.eval(`document.querySelector('#drill-report').innerText`)
	t.Logf("report:\n%s", report)
	if v := p.eval(`document.querySelector('#drill-report [data-verdict]').dataset.verdict`); v != "pass" {
		t.Errorf("verdict %s", v)
	}
	for _, field := range []string{"lost", "duplicated", "gaps", "out_of_order"} {
		if got := p.eval(`document.querySelector('#drill-report tr[data-field="` + field + `"] td').textContent`); got != "0" {
			t.Errorf("%s = %s", field, got)
		}
	}
	p.until("n2 down in the topology", `["dead", "left"].includes(document.querySelector('article[data-node="n2"]')?.dataset.state)`)
	p.until("the drill in the history", `document.querySelectorAll('#drill-history li').length === 1`)
	p.do("open the history, scroll to the top",
		chromedp.Evaluate[chromedp.Void](`document.querySelector('#drill-history-box').open = true; window.scrollTo(0, 0)`))
	t.Logf("screenshot: %s", p.screenshot("dashboard-drill.png"))
	if errs := pageErrors(); len(errs) > 0 {
		t.Errorf("the page reported errors:\n%s", strings.Join(errs, "\n"))
	}
}
