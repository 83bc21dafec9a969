package peer

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/internal/testenv"
)

func testSpanContext(t *testing.T, flags trace.TraceFlags, state string) trace.SpanContext {
	t.Helper()
	cfg := trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: flags,
	}
	if state != "" {
		ts, err := trace.ParseTraceState(state)
		if err != nil {
			t.Fatal(err)
		}
		cfg.TraceState = ts
	}
	return trace.NewSpanContext(cfg)
}

func TestTraceContextRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		state string
	}{
		{"ids only", ""},
		{"with tracestate", "vendor=abc,other=42"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := testSpanContext(t, trace.FlagsSampled, tt.state)
			for _, bp := range []*[]byte{encodeRequest(3, 9, 250, sc, []byte("payload")), encodeOneway(3, sc, []byte("payload"))} {
				var hb [headerLen]byte
				h, err := readHeader(bytes.NewReader(*bp), &hb, 1<<10)
				if err != nil {
					t.Fatal(err)
				}
				if h.kind != kindRequestTraced && h.kind != kindOnewayTraced {
					t.Fatalf("kind %d: a sampled span context must make a traced frame", h.kind)
				}
				got, rest, err := decodeTraceContext((*bp)[headerLen:])
				if err != nil {
					t.Fatal(err)
				}
				if got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() || got.TraceFlags() != sc.TraceFlags() || !got.IsRemote() {
					t.Fatalf("decoded %v, want %v (remote)", got, sc)
				}
				if got.TraceState().String() != tt.state {
					t.Fatalf("tracestate %q, want %q", got.TraceState().String(), tt.state)
				}
				if h.kind == kindRequestTraced {
					rest = rest[4:] // the caller's timeout
				}
				if string(rest) != "payload" {
					t.Fatalf("payload %q after the trace context", rest)
				}
			}
		})
	}
}

// A frame without trace context is byte for byte what it was before trace
// context existed.
func TestUntracedFramesKeepTheirLayout(t *testing.T) {
	req := encodeRequest(3, 9, 250, trace.SpanContext{}, []byte("p"))
	want := []byte{0, 0, 0, 15, kindRequest, 3, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 250, 'p'}
	if !bytes.Equal(*req, want) {
		t.Fatalf("request frame %x, want %x", *req, want)
	}
	ow := encodeOneway(3, trace.SpanContext{}, []byte("p"))
	want = []byte{0, 0, 0, 11, kindOneway, 3, 0, 0, 0, 0, 0, 0, 0, 0, 'p'}
	if !bytes.Equal(*ow, want) {
		t.Fatalf("oneway frame %x, want %x", *ow, want)
	}
}

func TestBadTraceContextIsRefused(t *testing.T) {
	for _, body := range [][]byte{nil, {0}, {24}, {25, 1, 2}, {200, 1}} {
		if _, _, err := decodeTraceContext(body); !errors.Is(err, errProtocol) {
			t.Errorf("decodeTraceContext(%x) = %v, want errProtocol", body, err)
		}
	}
	// All-zero ids are no span context: the frame is served without one.
	sc, rest, err := decodeTraceContext(append([]byte{25}, make([]byte, 26)...))
	if err != nil || sc.IsValid() || len(rest) != 1 {
		t.Fatalf("zero ids: %v, %d bytes left, %v", sc, len(rest), err)
	}
}

// TestPeerCallsCarryTraceContext: a handler runs under the caller's
// sampled span context (its spans join the caller's trace); an unsampled
// caller sends a plain frame and the handler sees no span context.
func TestPeerCallsCarryTraceContext(t *testing.T) {
	testenv.NoLeaks(t)
	seen := make(chan trace.SpanContext, 4)
	srv := peerStartServer(t, "127.0.0.1:0", Config{}, func(p *Links) {
		p.Handle(1, func(ctx context.Context, _ string, b []byte) ([]byte, error) {
			seen <- trace.SpanContextFromContext(ctx)
			return b, nil
		}, false)
		p.Handle(2, func(ctx context.Context, _ string, _ []byte) ([]byte, error) {
			seen <- trace.SpanContextFromContext(ctx)
			return nil, nil
		}, true)
	})
	cli := peerStartClient(t, Config{})
	next := func() trace.SpanContext {
		t.Helper()
		select {
		case sc := <-seen:
			return sc
		case <-time.After(10 * time.Second):
			t.Fatal("handler not called")
			return trace.SpanContext{}
		}
	}
	sc := testSpanContext(t, trace.FlagsSampled, "k=v")
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	if _, err := cli.Call(ctx, srv.addr, 1, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if got := next(); got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() || !got.IsRemote() || got.TraceState().String() != "k=v" {
		t.Fatalf("call: handler saw %v, want the caller's %v", got, sc)
	}
	if err := cli.Send(ctx, srv.addr, 2, nil); err != nil {
		t.Fatal(err)
	}
	if got := next(); got.SpanID() != sc.SpanID() {
		t.Fatalf("send: handler saw %v, want the caller's %v", got, sc)
	}
	unsampled := trace.ContextWithSpanContext(context.Background(), testSpanContext(t, 0, ""))
	if _, err := cli.Call(unsampled, srv.addr, 1, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if got := next(); got.IsValid() {
		t.Fatalf("unsampled call: handler saw %v, want no span context", got)
	}
}
