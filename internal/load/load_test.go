package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/client"
)

func TestNormalizeNamesTheBadField(t *testing.T) {
	ok := func() Config {
		c := DefaultConfig()
		c.Endpoints = []string{"http://127.0.0.1:1/", "http://127.0.0.1:2"}
		c.APIKey, c.AdminKey, c.TokenSecret = "k", "a", []byte("s")
		c.Target = "n1"
		return c
	}
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string // "" = valid
	}{
		{"valid", func(*Config) {}, ""},
		{"no endpoints", func(c *Config) { c.Endpoints = nil }, "endpoints is empty"},
		{"ws endpoint", func(c *Config) { c.Endpoints[0] = "ws://h:1" }, "want http://"},
		{"endpoint with path", func(c *Config) { c.Endpoints[0] = "http://h:1/v1/connect" }, "without a path"},
		{"no secret", func(c *Config) { c.TokenSecret = nil }, "token secret"},
		{"no users", func(c *Config) { c.Users = 0 }, "users must be positive"},
		{"no duration", func(c *Config) { c.Duration = 0 }, "duration must be positive"},
		{"no api key", func(c *Config) { c.APIKey = "" }, "api key"},
		{"negative rate", func(c *Config) { c.Rate = -1 }, "rate"},
		{"negative tick", func(c *Config) { c.Tick = -time.Millisecond }, "tick"},
		{"tick over a second", func(c *Config) { c.Tick = 2 * time.Second }, "tick"},
		{"one endpoint", func(c *Config) { c.Endpoints = c.Endpoints[:1] }, "at least 2 endpoints"},
		{"no target", func(c *Config) { c.Target = "" }, "target is required"},
		{"drain without admin key", func(c *Config) { c.Drain, c.AdminKey = true, "" }, "admin key"},
		{"bad user prefix", func(c *Config) { c.UserPrefix = `we"ird` }, "user prefix"},
		{"drain and kill", func(c *Config) { c.Drain, c.Trigger = true, func(context.Context, string) error { return nil } }, "not both"},
		{"crash and kill", func(c *Config) { c.Fault, c.Trigger = FaultCrash, func(context.Context, string) error { return nil } }, "not both"},
		{"unknown fault", func(c *Config) { c.Fault = "flood" }, "want kill, drain, crash or isolate"},
		{"crash without admin key", func(c *Config) { c.Fault, c.AdminKey = FaultCrash, "" }, "crash needs the admin key"},
		{"kill without trigger", func(c *Config) { c.Fault = FaultKill }, "needs a trigger"},
		{"isolate too long", func(c *Config) { c.Fault, c.IsolateFor = FaultIsolate, time.Hour }, "isolate duration"},
		{"drain and isolate", func(c *Config) { c.Drain, c.Fault = true, FaultIsolate }, "give one"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			tc.mutate(&c)
			got, err := c.normalize(true, true)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got.Endpoints[0] != "http://127.0.0.1:1" || got.UserPrefix == "" || got.Logger == nil || got.Tick != time.Millisecond {
					t.Fatalf("defaults not filled: %+v", got)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrConfig mentioning %q", err, tc.want)
			}
		})
	}
}

func TestWSURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:7700":  "ws://127.0.0.1:7700/v1/connect",
		"https://sb.example:443": "wss://sb.example:443/v1/connect",
	} {
		if got := wsURL(in); got != want {
			t.Errorf("wsURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMetricValue(t *testing.T) {
	text := `# HELP switchboard_gateway_connections Open client connections.
# TYPE switchboard_gateway_connections gauge
switchboard_gateway_connections{otel_scope_name="switchboard"} 1234
switchboard_gateway_connections_total 99
switchboard_gateway_connections{zone="b"} 6
other 5
`
	cases := []struct {
		name  string
		want  float64
		found bool
	}{
		{"switchboard_gateway_connections", 1240, true},
		{"switchboard_gateway_connections_total", 99, true},
		{"other", 5, true},
		{"missing", 0, false},
	}
	for _, tc := range cases {
		got, found := metricValue([]byte(text), tc.name)
		if got != tc.want || found != tc.found {
			t.Errorf("%s = %v,%v want %v,%v", tc.name, got, found, tc.want, tc.found)
		}
	}
}

func TestProcParsers(t *testing.T) {
	rss, err := parseRSS([]byte("Name:\tx\nVmPeak:\t 9 kB\nVmRSS:\t   2048 kB\n"))
	if err != nil || rss != 2048<<10 {
		t.Fatalf("parseRSS = %d, %v", rss, err)
	}
	if _, err := parseRSS([]byte("Name: x\n")); err == nil {
		t.Fatal("parseRSS without VmRSS should fail")
	}
	stat := "4242 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 15"
	ticks, err := parseCPUTicks([]byte(stat))
	if err != nil || ticks != 333 {
		t.Fatalf("parseCPUTicks = %d, %v", ticks, err)
	}
	if _, err := parseCPUTicks([]byte("1 (x) S 1")); err == nil {
		t.Fatal("short stat should fail")
	}
	// The test process itself is always there.
	if v, err := procRSS(osPID()); err != nil || v <= 0 {
		t.Fatalf("procRSS(self) = %d, %v", v, err)
	}
}

func TestSeqHoles(t *testing.T) {
	cases := []struct {
		seqs           []uint64
		holes, repeats int64
	}{
		{nil, 0, 0},
		{[]uint64{1, 2, 3}, 0, 0},
		{[]uint64{3, 1, 2}, 0, 0},
		{[]uint64{1, 4}, 2, 0},
		{[]uint64{1, 2, 2, 3}, 0, 1},
		{[]uint64{10, 11, 15}, 3, 0},
	}
	for _, tc := range cases {
		h, r := seqHoles(append([]uint64(nil), tc.seqs...))
		if h != tc.holes || r != tc.repeats {
			t.Errorf("seqHoles(%v) = %d,%d want %d,%d", tc.seqs, h, r, tc.holes, tc.repeats)
		}
	}
}

func TestScheduleIsOpenLoop(t *testing.T) {
	start := time.Unix(100, 0)
	cases := []struct {
		d    time.Duration
		rate float64
		want uint64
	}{
		{0, 1000, 0},
		{time.Nanosecond, 1000, 1},
		{time.Second, 1000, 1001},
		{1500 * time.Millisecond, 2, 4},
	}
	for _, tc := range cases {
		if got := due(tc.d, tc.rate); got != tc.want {
			t.Errorf("due(%v, %v) = %d, want %d", tc.d, tc.rate, got, tc.want)
		}
	}
	if got := intendedAt(start, 500, 1000); !got.Equal(start.Add(500 * time.Millisecond)) {
		t.Errorf("intendedAt(500 @1000/s) = %v", got.Sub(start))
	}
}

func TestTrackerAccounting(t *testing.T) {
	var tr tracker
	now := time.Now()
	msg := func(k uint64, u int, seq uint64) client.Message {
		return client.Message{Seq: seq, Data: appendPayload(nil, payload{T: now.UnixNano(), U: u, K: k})}
	}
	for k := uint64(0); k < 6; k++ {
		tr.add(k, int(k%2))
	}
	// user 0: k0 seq1, k2 seq2, k4 seq3; user 1: k1 seq1, k3 seq2, k5 seq3
	for k := uint64(0); k < 5; k++ { // k5 is never acknowledged
		tr.ack(k, k/2+1, now.UnixNano(), now)
	}
	tr.ack(0, 1, now.UnixNano(), now) // a retry answered with the same seq
	tr.deliver(0, msg(0, 0, 1), now)
	tr.deliver(0, msg(0, 0, 1), now) // duplicate
	tr.deliver(0, msg(4, 0, 3), now) // k2 (seq 2) never arrives: lost and a hole
	tr.deliver(1, msg(1, 1, 1), now)
	tr.deliver(1, msg(3, 1, 2), now)
	tr.deliver(1, msg(5, 1, 3), now) // delivered without an ack
	tr.deliver(0, msg(3, 1, 2), now) // wrong user
	tr.deliver(1, client.Message{Data: []byte(`"x"`)}, now)
	if n := tr.undelivered(); n != 1 {
		t.Fatalf("undelivered = %d, want 1", n)
	}
	name := func(u int) string { return fmt.Sprintf("u%d", u) }
	a := tr.account(2, name, func(int) bool { return false })
	want := Accounting{Published: 6, Acked: 5, Unacked: 1, Delivered: 5, Lost: 1, Duplicated: 1, Gaps: 1,
		Misrouted: 2, DeliveredUnacked: 1, LostSample: []string{"u0/m2@2"}}
	if !reflect.DeepEqual(a, want) {
		t.Fatalf("account =\n %+v\nwant\n %+v", a, want)
	}
	if tr.latency.Count() != 5 || tr.ackLatency.Count() != 5 {
		t.Fatalf("latency counts %d %d", tr.latency.Count(), tr.ackLatency.Count())
	}
	// A user that lost continuity restarts its seq line: no gap counted.
	if a := tr.account(2, name, func(u int) bool { return u == 0 }); a.Gaps != 0 {
		t.Fatalf("gaps with continuity lost = %d", a.Gaps)
	}
	tr.ack(2, 9, now.UnixNano(), now)
	if tr.seqConflict.Load() != 1 {
		t.Fatal("an id acknowledged with two seqs must count as a conflict")
	}
}

// fakeBatch is a /v1/publish/batch that answers 503 to the first requests,
// fails one item once, and records every id it stores.
type fakeBatch struct {
	mu       sync.Mutex
	fail503  int
	itemFail map[string]bool
	stored   map[string]uint64
	seq      uint64
}

func (f *fakeBatch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/publish/batch" || r.Header.Get("Authorization") != "Bearer key" {
		http.Error(w, `{"error":"no"}`, http.StatusUnauthorized)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var req struct {
		Messages []struct {
			User string          `json:"user"`
			ID   string          `json:"id"`
			Data json.RawMessage `json:"data"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, `{"error":"bad"}`, http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail503 > 0 {
		f.fail503--
		w.Header().Set("Retry-After", "1")
		http.Error(w, `{"error":"no quorum"}`, http.StatusServiceUnavailable)
		return
	}
	type res struct {
		Seq   uint64 `json:"seq,omitempty"`
		Error string `json:"error,omitempty"`
	}
	out := make([]res, len(req.Messages))
	for i, m := range req.Messages {
		var p payload
		if json.Unmarshal(m.Data, &p) != nil {
			out[i].Error = "bad data"
			continue
		}
		if f.itemFail[m.ID] {
			delete(f.itemFail, m.ID)
			out[i].Error = "owner unavailable"
			continue
		}
		if s, ok := f.stored[m.ID]; ok {
			out[i].Seq = s
			continue
		}
		f.seq++
		f.stored[m.ID] = f.seq
		out[i].Seq = f.seq
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"results": out})
}

func TestPublisherRetriesSameIDsUntilAcked(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Users, cfg.Batch, cfg.Inflight, cfg.Rate = 3, 4, 2, 2000
	cfg.RetryFor, cfg.UserPrefix, cfg.APIKey = 10*time.Second, "t", "key"
	fb := &fakeBatch{fail503: 2, itemFail: map[string]bool{"t-m1": true}, stored: map[string]uint64{}}
	srv := httptest.NewServer(fb)
	defer srv.Close()
	cl := newCluster(&cfg)
	defer cl.close()
	cl.apiKey = cfg.APIKey
	cl.nodes = []nodeRef{{ID: "a", Base: srv.URL}, {ID: "b", Base: srv.URL}}
	tr := &tracker{}
	p := newPublisher(&cfg, cl, tr, func(int) []int { return []int{0, 1} })
	p.run(context.Background(), time.Now().Add(50*time.Millisecond))
	a := tr.account(cfg.Users, cfg.userName, func(int) bool { return false })
	if a.Published == 0 || a.Acked != a.Published || a.Unacked != 0 {
		t.Fatalf("every message should end acknowledged: %+v", a)
	}
	fb.mu.Lock()
	stored := len(fb.stored)
	fb.mu.Unlock()
	if int64(stored) != a.Published {
		t.Fatalf("server stored %d ids for %d messages", stored, a.Published)
	}
	st := p.stats()
	if st.Status503 != 2 || st.ItemErrors != 1 || st.Retries < 3 {
		t.Fatalf("stats = %+v, want 2 503s, 1 item error, ≥3 retries", st)
	}
}

func TestPublisherGivesUpAfterRetryFor(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Users, cfg.Batch, cfg.Inflight, cfg.Rate = 1, 10, 1, 100
	cfg.RetryFor, cfg.UserPrefix, cfg.APIKey = 300*time.Millisecond, "t", "key"
	fb := &fakeBatch{fail503: 1 << 30, stored: map[string]uint64{}}
	srv := httptest.NewServer(fb)
	defer srv.Close()
	cl := newCluster(&cfg)
	defer cl.close()
	cl.apiKey = cfg.APIKey
	cl.nodes = []nodeRef{{ID: "a", Base: srv.URL}}
	tr := &tracker{}
	p := newPublisher(&cfg, cl, tr, func(int) []int { return []int{0} })
	start := time.Now()
	p.run(context.Background(), time.Now().Add(20*time.Millisecond))
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("retries were not bounded: %v", d)
	}
	a := tr.account(1, cfg.userName, func(int) bool { return false })
	if a.Acked != 0 || a.Unacked != a.Published || a.Published == 0 {
		t.Fatalf("account = %+v", a)
	}
}

func TestEncodeIsValidBatch(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Users, cfg.UserPrefix = 2, "r-1.x_y"
	p := newPublisher(&cfg, nil, nil, nil)
	b := p.encode(nil, []pubMsg{{k: 7, user: 1, intended: 42}, {k: 8, user: 0, intended: 43}})
	var got struct {
		Messages []struct {
			User string  `json:"user"`
			ID   string  `json:"id"`
			Data payload `json:"data"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	m := got.Messages[0]
	if len(got.Messages) != 2 || m.User != "r-1.x_y-u1" || m.ID != "r-1.x_y-m7" || m.Data != (payload{T: 42, U: 1, K: 7}) {
		t.Fatalf("decoded %+v", got)
	}
}

// TestDrillReportText: the readable report names every guarantee and
// says FAIL as soon as one is broken.
func TestDrillReportText(t *testing.T) {
	rep := DrillReport{Users: 9, Target: "n2", Trigger: FaultCrash, Rate: 100, Affected: 3, RTOP50: 250, RTOMax: 300}
	rep.Acked, rep.Delivered, rep.Rewelcomed, rep.Resumed = 100, 100, 3, 3
	var b strings.Builder
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"crash of n2", "lost", "duplicated", "gaps", "out of order", "3 resumed", "p50 250", "PASS"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	rep.Gaps = 1
	b.Reset()
	_ = rep.WriteText(&b)
	if !rep.Violated() || !strings.Contains(b.String(), "FAIL") {
		t.Fatalf("a gap must fail the drill:\n%s", b.String())
	}
}
