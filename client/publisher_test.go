package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"
)

// fakeAPI is a publish endpoint whose answers are scripted per request;
// the last answer repeats.
type fakeAPI struct {
	srv *httptest.Server

	mu    sync.Mutex
	reqs  []apiReq
	reply []func(w http.ResponseWriter, body []byte)
}

type apiReq struct {
	at   time.Time
	path string
	auth string
	body []byte
}

func newFakeAPI(t *testing.T, reply ...func(w http.ResponseWriter, body []byte)) *fakeAPI {
	t.Helper()
	f := &fakeAPI{reply: reply}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		i := len(f.reqs)
		f.reqs = append(f.reqs, apiReq{at: time.Now(), path: r.URL.Path, auth: r.Header.Get("Authorization"), body: body})
		h := f.reply[min(i, len(f.reply)-1)]
		f.mu.Unlock()
		h(w, body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) requests() []apiReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]apiReq(nil), f.reqs...)
}

func status(code int, retryAfter string) func(http.ResponseWriter, []byte) {
	return func(w http.ResponseWriter, _ []byte) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte(`{"error":"scripted"}`))
	}
}

// accept answers a publish like a node: seq 7 from node "n".
func accept(w http.ResponseWriter, body []byte) {
	var req struct{ User, ID string }
	_ = json.Unmarshal(body, &req)
	_ = json.NewEncoder(w).Encode(PublishResult{User: req.User, Seq: 7, ID: req.ID, Node: "n"})
}

func testPublisher(t *testing.T, bases ...string) *Publisher {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	p := NewPublisher(bases, "key", &http.Client{Transport: tr, Timeout: 5 * time.Second})
	p.RetryBase, p.RetryMax = time.Millisecond, 5*time.Millisecond
	return p
}

func publishedID(t *testing.T, body []byte) string {
	t.Helper()
	var req struct {
		User string
		ID   string
		Data json.RawMessage
	}
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	return req.ID
}

func TestPublishRetries503OnAnotherNodeWithSameIDAfterRetryAfter(t *testing.T) {
	a := newFakeAPI(t, status(http.StatusServiceUnavailable, "1"))
	b := newFakeAPI(t, accept)
	p := testPublisher(t, a.srv.URL, b.srv.URL+"/")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	res, err := p.Publish(ctx, "u1", map[string]int{"x": 1}, "")
	if err != nil {
		t.Fatal(err)
	}
	ra, rb := a.requests(), b.requests()
	if len(ra) != 1 || len(rb) != 1 {
		t.Fatalf("requests: %d to first node, %d to second", len(ra), len(rb))
	}
	id := publishedID(t, ra[0].body)
	if len(id) != 32 || publishedID(t, rb[0].body) != id || res.ID != id {
		t.Fatalf("ids %q then %q, result %q: retries must reuse one generated id", id, publishedID(t, rb[0].body), res.ID)
	}
	if gap := rb[0].at.Sub(ra[0].at); gap < 900*time.Millisecond {
		t.Fatalf("retried after %v, before Retry-After: 1", gap)
	}
	if ra[0].auth != "Bearer key" || ra[0].path != "/v1/publish" {
		t.Fatalf("request %+v", ra[0])
	}
	if want := (PublishResult{User: "u1", Seq: 7, ID: id, Node: "n"}); res != want {
		t.Fatalf("result %+v, want %+v", res, want)
	}
}

func TestPublishStopsWhenRetryAfterPassesDeadline(t *testing.T) {
	a := newFakeAPI(t, status(http.StatusServiceUnavailable, "60"))
	p := testPublisher(t, a.srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := p.Publish(ctx, "u1", 1, "my-id")
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want unavailable and deadline", err)
	}
	if reqs := a.requests(); len(reqs) != 1 || publishedID(t, reqs[0].body) != "my-id" {
		t.Fatalf("requests %d", len(reqs))
	}
}

func TestPublishDefiniteErrorsAreNotRetried(t *testing.T) {
	tests := []struct {
		status int
		is     error
	}{
		{http.StatusBadRequest, nil},
		{http.StatusUnauthorized, ErrUnauthorized},
		{http.StatusRequestEntityTooLarge, nil},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			a := newFakeAPI(t, status(tt.status, ""))
			p := testPublisher(t, a.srv.URL)
			_, err := p.Publish(context.Background(), "u1", 1, "")
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != tt.status || ae.Message != "scripted" {
				t.Fatalf("error %v", err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("error %v is not %v", err, tt.is)
			}
			if n := len(a.requests()); n != 1 {
				t.Fatalf("%d requests, want 1", n)
			}
		})
	}
}

func TestPublishGivesUpAfterMaxAttempts(t *testing.T) {
	a := newFakeAPI(t, status(http.StatusServiceUnavailable, ""))
	p := testPublisher(t, a.srv.URL)
	p.MaxAttempts = 3
	_, err := p.Publish(context.Background(), "u1", 1, "")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("error %v", err)
	}
	reqs := a.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	for _, r := range reqs[1:] {
		if publishedID(t, r.body) != publishedID(t, reqs[0].body) {
			t.Fatal("retry changed the id")
		}
	}
}

func TestPublishRetriesUnreachableNode(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	b := newFakeAPI(t, accept)
	p := testPublisher(t, dead.URL, b.srv.URL)
	if _, err := p.Publish(context.Background(), "u1", 1, ""); err != nil {
		t.Fatal(err)
	}
}

func TestPublishBatch(t *testing.T) {
	a := newFakeAPI(t, status(http.StatusServiceUnavailable, "0"), func(w http.ResponseWriter, body []byte) {
		var req struct{ Messages []PublishRequest }
		_ = json.Unmarshal(body, &req)
		var res struct {
			Results []PublishResult `json:"results"`
		}
		for i, m := range req.Messages {
			if m.User == "bad" {
				res.Results = append(res.Results, PublishResult{Error: "scripted"})
				continue
			}
			res.Results = append(res.Results, PublishResult{User: m.User, Seq: uint64(i + 1), ID: m.ID, Node: "n"})
		}
		_ = json.NewEncoder(w).Encode(res)
	})
	p := testPublisher(t, a.srv.URL)
	msgs := []PublishRequest{{User: "u1", Data: 1}, {User: "bad", Data: 2}, {User: "u2", Data: 3, ID: "given"}}
	orig := append([]PublishRequest(nil), msgs...)
	res, err := p.PublishBatch(context.Background(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(msgs, orig) {
		t.Fatal("PublishBatch modified its argument")
	}
	if len(res) != 3 || res[0].User != "u1" || res[1].Error != "scripted" || res[2].ID != "given" || res[0].ID == "" {
		t.Fatalf("results %+v", res)
	}
	reqs := a.requests()
	if len(reqs) != 2 || reqs[0].path != "/v1/publish/batch" || string(reqs[0].body) != string(reqs[1].body) {
		t.Fatalf("the 503 must be retried with the same body and ids: %d requests", len(reqs))
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"2", 2 * time.Second},
		{" 3 ", 3 * time.Second},
		{"-1", 0},
		{"0", 0},
		{"junk", 0},
		{"999999999999", 30 * time.Second},
		{now.Add(5 * time.Second).Format(http.TimeFormat), 5 * time.Second},
		{now.Add(-5 * time.Second).Format(http.TimeFormat), 0},
		{now.Add(time.Hour).Format(http.TimeFormat), 30 * time.Second},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now, 30*time.Second); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestNewIDIsRandom128BitHex(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := NewID()
		if len(id) != 32 || seen[id] {
			t.Fatalf("id %q", id)
		}
		seen[id] = true
	}
}
