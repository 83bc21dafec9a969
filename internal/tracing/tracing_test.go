package tracing

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/internal/testenv"
)

func TestConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		c    Config
		want string // "" = valid
	}{
		{Config{SampleRatio: 0.01}, ""},
		{Config{Endpoint: "http://collector:4318", SampleRatio: 1}, ""},
		{Config{Endpoint: "https://collector.example/otlp/", SampleRatio: 0}, ""},
		{Config{SampleRatio: 1.5}, "trace-sample-ratio"},
		{Config{SampleRatio: -0.1}, "trace-sample-ratio"},
		{Config{Endpoint: "collector:4318", SampleRatio: 0.01}, "otlp-endpoint"},
		{Config{Endpoint: "grpc://collector:4317", SampleRatio: 0.01}, "otlp-endpoint"},
		{Config{Endpoint: "http://user:pw@collector:4318", SampleRatio: 0.01}, "credentials"},
	} {
		err := tt.c.Validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%+v: Validate() = %v, want %q", tt.c, err, tt.want)
		}
		if err != nil && tt.c.Endpoint != "" && strings.Contains(err.Error(), "pw") {
			t.Errorf("the error repeats the URL's password: %v", err)
		}
	}
}

// Tracing off (a nil *Tracer) costs the hot path no allocation.
func TestOffAllocatesNothing(t *testing.T) {
	var tr *Tracer
	ctx := context.Background()
	h := http.Header{"Traceparent": []string{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	allocs := testing.AllocsPerRun(1000, func() {
		c, s := tr.Start(ctx, SpanPublish, trace.SpanKindServer)
		c = tr.Extract(c, h)
		c2, s2 := tr.Child(c, SpanPublishRoute, trace.SpanKindInternal)
		_, s3 := tr.Under(c2, tr.Sampled(c2), SpanGatewayDeliver, trace.SpanKindProducer)
		if s.IsRecording() || s2.IsRecording() || s3.IsRecording() {
			t.Fatal("a nil tracer recorded a span")
		}
		End(s3, nil)
		s2.End()
		s.End()
	})
	if allocs != 0 {
		t.Fatalf("tracing off: %v allocations per publish, want 0", allocs)
	}
}

// With tracing on, steps of an unsampled publish start nothing and
// allocate nothing: only the root decides, once.
func TestUnsampledStepsAllocateNothing(t *testing.T) {
	testenv.NoLeaks(t)
	tr := newTestTracer(t, 0, nil)
	ctx, root := tr.Start(context.Background(), SpanPublish, trace.SpanKindServer)
	if root.IsRecording() || !root.SpanContext().IsValid() {
		t.Fatalf("ratio 0 sampled the root (%v)", root.SpanContext())
	}
	allocs := testing.AllocsPerRun(1000, func() {
		c, s := tr.Child(ctx, SpanStreamAppend, trace.SpanKindInternal)
		_, s2 := tr.Under(c, tr.Sampled(c), SpanGatewayDeliver, trace.SpanKindProducer)
		End(s2, nil)
		End(s, nil)
	})
	if allocs != 0 {
		t.Fatalf("unsampled steps: %v allocations, want 0", allocs)
	}
	root.End()
}

// A caller's traceparent decides: sampled is recorded even at ratio 0,
// not sampled is not recorded even at ratio 1.
func TestTraceparentDecides(t *testing.T) {
	testenv.NoLeaks(t)
	const tid = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, tt := range []struct {
		ratio  float64
		flags  string
		record bool
	}{
		{0, "01", true},
		{1, "00", false},
	} {
		tr := newTestTracer(t, tt.ratio, nil)
		h := http.Header{"Traceparent": []string{"00-" + tid + "-00f067aa0ba902b7-" + tt.flags}}
		_, s := tr.Start(tr.Extract(context.Background(), h), SpanPublish, trace.SpanKindServer)
		if s.IsRecording() != tt.record || s.SpanContext().TraceID().String() != tid {
			t.Errorf("ratio %v flags %s: recording %v trace %s, want %v %s", tt.ratio, tt.flags, s.IsRecording(), s.SpanContext().TraceID(), tt.record, tid)
		}
		s.End()
	}
}

// Shutdown flushes what is queued to the endpoint's /v1/traces.
func TestShutdownFlushes(t *testing.T) {
	testenv.NoLeaks(t)
	var posts atomic.Int64
	tr := newTestTracer(t, 1, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/base/v1/traces" && r.Method == http.MethodPost {
			posts.Add(1)
		}
		_, _ = io.Copy(io.Discard, r.Body)
	})
	_, s := tr.Start(context.Background(), SpanPublish, trace.SpanKindServer)
	s.End()
	if err := tr.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if posts.Load() == 0 {
		t.Fatal("Shutdown exported nothing to <endpoint>/v1/traces")
	}
}

// newTestTracer starts a tracer exporting to an httptest server at
// <url>/base, shut down with the test.
func newTestTracer(t *testing.T, ratio float64, h http.HandlerFunc) *Tracer {
	t.Helper()
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }
	}
	srv := httptest.NewServer(h)
	tr, err := New(Config{Endpoint: srv.URL + "/base/", SampleRatio: ratio, NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = tr.Shutdown()
		srv.Close()
	})
	return tr
}
