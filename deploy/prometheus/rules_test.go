// Package rules_test checks the alert rules (alerts.yml) and the Grafana
// dashboard (../grafana) against Prometheus' own parsers and against the
// /metrics of real Switchboard processes. It is a module of its own so
// that the main module does not depend on Prometheus.
package rules_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

const (
	rulesFile     = "alerts.yml"
	dashboardFile = "../grafana/switchboard.json"
	operationsDoc = "../../docs/operations.md"
	repoRoot      = "../.."
)

// synthetic are the series Prometheus makes itself for every target
// rather than scraping them: rules may use them, nodes do not export them.
var synthetic = map[string]bool{"up": true}

var promql = parser.NewParser(parser.Options{})

// loadRules parses alerts.yml exactly as Prometheus does when it loads a
// rule file (strict: unknown fields are errors).
func loadRules(t *testing.T) *rulefmt.RuleGroups {
	t.Helper()
	groups, errs := rulefmt.ParseFile(rulesFile, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	if groups == nil || len(errs) > 0 {
		t.FailNow()
	}
	return groups
}

func TestRulesParseAndPointAtTheRunbook(t *testing.T) {
	groups := loadRules(t)
	doc, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	anchors := headingAnchors(string(doc))
	var alerts []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: a recording rule (%s); this file holds alerts only", g.Name, r.Record)
				continue
			}
			alerts = append(alerts, r.Alert)
			if _, err := promql.ParseExpr(r.Expr); err != nil {
				t.Errorf("%s: expr does not parse: %v", r.Alert, err)
			}
			if r.For <= 0 {
				t.Errorf("%s: no for: (one bad scrape must not page)", r.Alert)
			}
			if s := r.Labels["severity"]; !slices.Contains([]string{"critical", "warning", "info"}, s) {
				t.Errorf("%s: severity label %q, want critical, warning or info", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			anchor, ok := strings.CutPrefix(r.Annotations["runbook"], "docs/operations.md#")
			if !ok || !anchors[anchor] {
				t.Errorf("%s: runbook %q is not a section of docs/operations.md (sections: %v)", r.Alert, r.Annotations["runbook"], sortedKeys(anchors))
			}
		}
	}
	// The alerts of DESIGN §8 are all there.
	for _, want := range []string{"SwitchboardNoLeader", "SwitchboardQuorumAtRisk", "SwitchboardNodeNotReady",
		"SwitchboardPublish5xx", "SwitchboardSlowConsumers", "SwitchboardTakeovers", "SwitchboardCertificateExpiresSoon"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s", want)
		}
	}
	// docs/operations.md "What to alert on" lists exactly the shipped alerts.
	section := markdownSection(string(doc), "## What to alert on")
	documented := regexp.MustCompile(`\bSwitchboard[A-Z][A-Za-z0-9]+`).FindAllString(section, -1)
	for _, a := range alerts {
		if !slices.Contains(documented, a) {
			t.Errorf("docs/operations.md \"What to alert on\" does not list %s", a)
		}
	}
	for _, d := range documented {
		if !slices.Contains(alerts, d) {
			t.Errorf("docs/operations.md \"What to alert on\" lists %s, which alerts.yml does not have", d)
		}
	}
}

func TestPrometheusConfigLoads(t *testing.T) {
	cfg, err := config.LoadFile("prometheus.yml", false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cfg.RuleFiles, filepath.Join(".", rulesFile)) && !slices.ContainsFunc(cfg.RuleFiles, func(f string) bool { return filepath.Base(f) == rulesFile }) {
		t.Errorf("rule_files %v does not load %s", cfg.RuleFiles, rulesFile)
	}
	if len(cfg.ScrapeConfigs) != 1 || cfg.ScrapeConfigs[0].JobName != "switchboard" || cfg.ScrapeConfigs[0].Scheme != "https" {
		t.Fatalf("want one https scrape job named switchboard, have %+v", cfg.ScrapeConfigs)
	}
	// The job name is what the rules select on (up{job="switchboard"}).
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if strings.Contains(r.Expr, "job=") && !strings.Contains(r.Expr, `job="switchboard"`) {
				t.Errorf("%s selects another job than switchboard: %s", r.Alert, r.Expr)
			}
		}
	}
}

func TestDashboardQueriesParse(t *testing.T) {
	exprs := dashboardQueries(t)
	if len(exprs) < 20 {
		t.Fatalf("found %d queries in %s", len(exprs), dashboardFile)
	}
	for _, e := range exprs {
		if _, err := promql.ParseExpr(e); err != nil {
			t.Errorf("dashboard query does not parse: %s: %v", e, err)
		}
	}
}

// TestQueriedSeriesAreExported runs three real nodes (the binary built
// from this repository, TLS on the public and cluster ports), connects
// clients, publishes and kills a node (sbload's drill), and then checks
// that every metric the rules and the dashboard query is on the
// survivors' /metrics.
func TestQueriedSeriesAreExported(t *testing.T) {
	var queries []string
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			queries = append(queries, r.Expr)
		}
	}
	queries = append(queries, dashboardQueries(t)...)
	names := map[string]bool{}
	for _, q := range queries {
		expr, err := promql.ParseExpr(q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		for _, n := range metricNames(expr) {
			names[n] = true
		}
	}
	if len(names) < 20 {
		t.Fatalf("the rules and the dashboard query only %d metrics: %v", len(names), sortedKeys(names))
	}

	c := startCluster(t)
	c.drill(t)
	var families map[string]string
	deadline := time.Now().Add(60 * time.Second)
	for {
		families = c.scrape(t, "n1", "n2")
		// The takeover of the killed node's streams is what the takeover
		// series count; the survivors must have seen it.
		if families["switchboard_broker_takeover_duration_seconds"] != "" && c.sum(t, "switchboard_broker_takeover_duration_seconds_count") > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no takeover counted on the survivors within 60 s of the kill")
		}
		time.Sleep(time.Second)
	}
	for _, n := range sortedKeys(names) {
		if synthetic[n] {
			continue
		}
		if _, ok := families[family(n, families)]; !ok {
			t.Errorf("the rules or the dashboard query %s; no running node exports it", n)
		}
	}
}

// dashboardQueries returns every PromQL query of the Grafana dashboard:
// panel targets' expr and the variables' label_values(…) selectors, with
// Grafana's interval variables replaced by a duration.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*[A-Za-z_][A-Za-z0-9_]*\)$`)
	interval := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")
	var out []string
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				walk(k, x)
			}
		case []any:
			for _, x := range v {
				walk(key, x)
			}
		case string:
			switch {
			case key == "expr":
				out = append(out, interval.Replace(v))
			case key == "query" || key == "definition":
				if m := labelValues.FindStringSubmatch(v); m != nil {
					out = append(out, m[1])
				}
			}
		}
	}
	walk("", dash)
	return out
}

// metricNames returns the metric names an expression selects.
func metricNames(expr parser.Expr) []string {
	var out []string
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel && name == "" {
				name = m.Value
			}
		}
		if name != "" {
			out = append(out, name)
		}
		return nil
	})
	return out
}

// family is the metric family a queried name belongs to: itself, or the
// histogram or summary whose _bucket, _count or _sum series it is.
func family(name string, families map[string]string) string {
	if _, ok := families[name]; ok {
		return name
	}
	for _, suffix := range []string{"_bucket", "_count", "_sum"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if typ := families[base]; typ == "histogram" || typ == "summary" {
				return base
			}
		}
	}
	return name
}

// cluster is three switchboard processes on loopback.
type cluster struct {
	dir     string
	bin     map[string]string // switchboard, sbctl, sbload
	nodes   map[string]*proc
	order   []string
	client  *http.Client
	secrets map[string]string // flag → file
	last    map[string][]byte // last /metrics body by node
}

type proc struct {
	id, public, cluster, gossip string
	cmd                         *exec.Cmd
	log                         string
	done                        chan struct{}
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	dir := t.TempDir()
	c := &cluster{dir: dir, bin: map[string]string{}, nodes: map[string]*proc{}, last: map[string][]byte{}}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"switchboard", "sbctl", "sbload"} {
		c.bin[name] = filepath.Join(dir, name)
		build := exec.Command("go", "build", "-o", c.bin[name], "./cmd/"+name)
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build ./cmd/%s in %s: %v\n%s", name, root, err, out)
		}
	}
	certs := filepath.Join(dir, "certs")
	if out, err := exec.Command(c.bin["sbctl"], "certs", "init", "--dir", certs, "--nodes", "n1,n2,n3").CombinedOutput(); err != nil {
		t.Fatalf("sbctl certs init: %v\n%s", err, out)
	}
	c.secrets = map[string]string{}
	for _, s := range []string{"token-secret-file", "api-key-file", "admin-key-file"} {
		var b [24]byte
		_, _ = rand.Read(b[:])
		f := filepath.Join(dir, strings.TrimSuffix(s, "-file"))
		if err := os.WriteFile(f, []byte(hex.EncodeToString(b[:])+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c.secrets[s] = f
	}
	ca, err := os.ReadFile(filepath.Join(certs, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("ca.pem holds no certificate")
	}
	c.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(c.client.CloseIdleConnections)

	placement := map[string][2]string{"n1": {"r1", "a"}, "n2": {"r1", "b"}, "n3": {"r2", "a"}}
	for _, id := range []string{"n1", "n2", "n3"} {
		ports := freePorts(t, 3)
		p := &proc{id: id, done: make(chan struct{}),
			public:  fmt.Sprintf("127.0.0.1:%d", ports[0]),
			cluster: fmt.Sprintf("127.0.0.1:%d", ports[1]),
			gossip:  fmt.Sprintf("127.0.0.1:%d", ports[2]),
			log:     filepath.Join(dir, id+".log"),
		}
		cert, key := filepath.Join(certs, id+".pem"), filepath.Join(certs, id+"-key.pem")
		args := []string{"--node-id", id, "--region", placement[id][0], "--zone", placement[id][1],
			"--data-dir", filepath.Join(dir, id+"-data"),
			"--public-addr", p.public, "--cluster-addr", p.cluster, "--gossip-addr", p.gossip,
			"--tls-cert-file", cert, "--tls-key-file", key,
			"--cluster-ca-file", filepath.Join(certs, "ca.pem"), "--cluster-cert-file", cert, "--cluster-key-file", key,
		}
		if id == "n1" {
			args = append(args, "--bootstrap")
		} else {
			args = append(args, "--join", c.nodes["n1"].gossip)
		}
		for flag, f := range c.secrets {
			args = append(args, "--"+flag, f)
		}
		logFile, err := os.Create(p.log)
		if err != nil {
			t.Fatal(err)
		}
		p.cmd = exec.Command(c.bin["switchboard"], args...)
		p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", id, err)
		}
		go func() {
			_ = p.cmd.Wait()
			_ = logFile.Close()
			close(p.done)
		}()
		t.Cleanup(func() {
			_ = p.cmd.Process.Kill()
			<-p.done
			if t.Failed() {
				b, _ := os.ReadFile(p.log)
				if len(b) > 4000 {
					b = b[len(b)-4000:]
				}
				t.Logf("%s log (tail):\n%s", id, b)
			}
		})
		c.nodes[id] = p
		c.order = append(c.order, id)
	}
	for _, id := range c.order {
		c.waitReady(t, id)
	}
	return c
}

func (c *cluster) url(id string) string { return "https://" + c.nodes[id].public }

func (c *cluster) waitReady(t *testing.T, id string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := c.client.Get(c.url(id) + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-c.nodes[id].done:
			t.Fatalf("%s exited before it was ready", id)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 90 s (last error %v)", id, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// drill runs sbload's drill: users connected over the three nodes,
// publishes through the API, and n3 SIGKILLed while they run, so that
// the survivors take its streams over.
func (c *cluster) drill(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var endpoints []string
	for _, id := range c.order {
		endpoints = append(endpoints, c.url(id))
	}
	args := []string{"--scenario", "drill", "--endpoints", strings.Join(endpoints, ","),
		"--ca-file", filepath.Join(c.dir, "certs", "ca.pem"),
		"--users", "9", "--rate", "30", "--duration", "6s", "--at", "2s",
		"--target", "n3", "--kill-pid", fmt.Sprint(c.nodes["n3"].cmd.Process.Pid)}
	for flag, f := range c.secrets {
		args = append(args, "--"+flag, f)
	}
	cmd := exec.CommandContext(ctx, c.bin["sbload"], args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	// 3: the drill found a loss; the metrics are still what this test is about.
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 3) {
		t.Fatalf("sbload drill: %v\nstdout: %s\nstderr: %s", err, stdout.Bytes(), stderr.Bytes())
	}
	select {
	case <-c.nodes["n3"].done:
	case <-time.After(10 * time.Second):
		t.Fatalf("n3 still runs after the drill killed it")
	}
	t.Logf("drill: %s", bytes.TrimSpace(stdout.Bytes()))
}

// scrape reads /metrics of the nodes and returns the union of their
// metric families with their types.
func (c *cluster) scrape(t *testing.T, ids ...string) map[string]string {
	t.Helper()
	families := map[string]string{}
	for _, id := range ids {
		resp, err := c.client.Get(c.url(id) + "/metrics")
		if err != nil {
			t.Fatalf("GET %s/metrics: %v", id, err)
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s/metrics: %d %v", id, resp.StatusCode, err)
		}
		c.last[id] = body
		parser := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := parser.TextToMetricFamilies(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("%s/metrics is not the Prometheus text format: %v", id, err)
		}
		for name, mf := range mfs {
			families[name] = strings.ToLower(mf.GetType().String())
		}
	}
	return families
}

// sum adds the samples named series (no labels compared) over the nodes
// last scraped.
func (c *cluster) sum(t *testing.T, series string) float64 {
	t.Helper()
	total := 0.0
	for _, body := range c.last {
		for _, line := range strings.Split(string(body), "\n") {
			if !strings.HasPrefix(line, series+" ") && !strings.HasPrefix(line, series+"{") {
				continue
			}
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				total += v
			}
		}
	}
	return total
}

// freePorts returns n ports free on loopback for both TCP and UDP (the
// gossip port uses both).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	for len(out) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		_ = l.Close()
		if err != nil {
			continue
		}
		_ = u.Close()
		if !slices.Contains(out, port) {
			out = append(out, port)
		}
	}
	return out
}

// headingAnchors returns the GitHub anchors of a Markdown document's
// headings ("### Node not ready" → node-not-ready).
func headingAnchors(doc string) map[string]bool {
	out := map[string]bool{}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	for _, line := range strings.Split(doc, "\n") {
		h := strings.TrimLeft(line, "#")
		if h == line || !strings.HasPrefix(h, " ") {
			continue
		}
		slug := drop.ReplaceAllString(strings.ToLower(strings.TrimSpace(h)), "")
		out[strings.ReplaceAll(slug, " ", "-")] = true
	}
	return out
}

// markdownSection is the text under heading up to the next heading of
// the same or a higher level.
func markdownSection(doc, heading string) string {
	level := strings.IndexByte(heading, ' ')
	lines := strings.Split(doc, "\n")
	for i, line := range lines {
		if strings.TrimSpace(line) != heading {
			continue
		}
		var out []string
		for _, l := range lines[i+1:] {
			if h := strings.IndexByte(l, ' '); h > 0 && h <= level && strings.Trim(l[:h], "#") == "" {
				break
			}
			out = append(out, l)
		}
		return strings.Join(out, "\n")
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
