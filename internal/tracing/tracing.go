// Package tracing is a node's OpenTelemetry tracer: one TracerProvider per
// node (in-process test clusters run several nodes in one process, so the
// global provider is never used for Switchboard's spans), exporting OTLP
// over HTTP, with the span names and attribute keys of DESIGN.md §5a in one
// place.
//
// A nil *Tracer is tracing turned off, and every method is safe on it:
// without an endpoint the hot path pays a nil check, no allocation.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// Span names (DESIGN.md §5a).
const (
	SpanPublish         = "publish"          // entry node: the publish HTTP request
	SpanPublishRoute    = "publish.route"    // entry node: routing and forwarding
	SpanStreamAppend    = "stream.append"    // owner: append, wait for the backup
	SpanStreamReplicate = "stream.replicate" // owner (client) and backup (server)
	SpanGatewayDeliver  = "gateway.deliver"  // each node writing it to a client
	SpanSessionTakeover = "session.takeover" // a node taking a stream over
	SpanRegistryPropose = "registry.propose" // its claim through Raft
)

// Attribute keys. Values are ids, never secrets: no token, API key or
// message body is ever recorded.
const (
	AttrUser    = attribute.Key("switchboard.user")
	AttrChannel = attribute.Key("switchboard.channel")
	AttrSeq     = attribute.Key("switchboard.seq")
	AttrSeqLast = attribute.Key("switchboard.seq_last")
	AttrEpoch   = attribute.Key("switchboard.epoch")
	AttrID      = attribute.Key("switchboard.message_id")
	AttrCount   = attribute.Key("switchboard.messages")
	AttrNode    = attribute.Key("switchboard.node")       // the node recording the span
	AttrEntry   = attribute.Key("switchboard.node.entry") // where the publish came in
	AttrOwner   = attribute.Key("switchboard.node.owner")
	AttrBackup  = attribute.Key("switchboard.node.backup")
	AttrFrom    = attribute.Key("switchboard.node.from") // the caller of a peer call
	AttrTo      = attribute.Key("switchboard.node.to")   // the callee of a peer call
	AttrConn    = attribute.Key("switchboard.conn")
	AttrReason  = attribute.Key("switchboard.reason")
)

// Config turns tracing on for one node.
type Config struct {
	// Endpoint is the OTLP/HTTP base URL; /v1/traces is appended. Empty:
	// tracing off.
	Endpoint string
	// SampleRatio is the share of new traces recorded, 0..1; a caller's
	// sampled traceparent is followed whatever it is.
	SampleRatio float64
	// NodeID becomes service.instance.id.
	NodeID string
	// QueueSize bounds the spans waiting for export (dropped beyond it);
	// 0 means 2048.
	QueueSize int
	// ShutdownTimeout bounds the final flush; 0 means 5 s.
	ShutdownTimeout time.Duration
}

// DefaultSampleRatio is --trace-sample-ratio's default.
const DefaultSampleRatio = 0.01

// Validate checks the endpoint and the ratio, by their flag names.
func (c Config) Validate() error {
	var errs []error
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		errs = append(errs, fmt.Errorf("trace-sample-ratio %v: want 0..1", c.SampleRatio))
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		// The URL is repeated only once it is known to hold no password.
		switch {
		case err != nil:
			errs = append(errs, errors.New("otlp-endpoint: not a URL"))
		case u.User != nil:
			errs = append(errs, errors.New("otlp-endpoint: credentials in the URL are not supported"))
		case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
			errs = append(errs, fmt.Errorf("otlp-endpoint %q: want an http:// or https:// base URL", c.Endpoint))
		}
	}
	return errors.Join(errs...)
}

// Tracer records a node's spans. nil is tracing off.
type Tracer struct {
	node     string
	tp       *sdktrace.TracerProvider
	tr       *http.Transport // the exporter's
	t        trace.Tracer
	shutdown time.Duration
}

// New starts a node's tracer, or returns nil when c.Endpoint is empty.
// Nothing is dialed here: the exporter connects when it first exports.
func New(c Config) (*Tracer, error) {
	if c.Endpoint == "" {
		return nil, nil
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	u, _ := url.Parse(c.Endpoint)
	// The tracer's own transport, so that Shutdown can close its idle
	// connections (and their goroutines) with the node.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2
	tr.ResponseHeaderTimeout = 10 * time.Second
	opts := []otlptracehttp.Option{
		otlptracehttp.WithEndpointURL(strings.TrimSuffix(u.String(), "/") + "/v1/traces"),
		otlptracehttp.WithTimeout(10 * time.Second),
		otlptracehttp.WithHTTPClient(&http.Client{Transport: tr, Timeout: 10 * time.Second}),
	}
	exp, err := otlptracehttp.New(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	res := resource.NewSchemaless(
		semconv.ServiceName("switchboard"),
		semconv.ServiceInstanceID(c.NodeID),
	)
	queue := c.QueueSize
	if queue <= 0 {
		queue = 2048
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SampleRatio))),
		sdktrace.WithBatcher(exp,
			sdktrace.WithMaxQueueSize(queue),
			sdktrace.WithMaxExportBatchSize(min(512, queue)),
			sdktrace.WithBatchTimeout(time.Second),
			sdktrace.WithExportTimeout(10*time.Second)),
	)
	sd := c.ShutdownTimeout
	if sd <= 0 {
		sd = 5 * time.Second
	}
	return &Tracer{
		node:     c.NodeID,
		tr:       tr,
		tp:       tp,
		t:        tp.Tracer("github.com/switchboard/switchboard"),
		shutdown: sd,
	}, nil
}

// Enabled says whether spans are recorded at all.
func (t *Tracer) Enabled() bool { return t != nil }

// none is the span methods return when nothing is recorded: the API's
// no-op span, taken from an empty context without allocating.
var none = trace.SpanFromContext(context.Background())

// Start begins a span that may be a trace's root: it follows ctx's span
// (local or remote) if there is one, else the sampler decides.
func (t *Tracer) Start(ctx context.Context, name string, kind trace.SpanKind) (context.Context, trace.Span) {
	if t == nil {
		return ctx, none
	}
	ctx, s := t.t.Start(ctx, name, trace.WithSpanKind(kind))
	if s.IsRecording() {
		s.SetAttributes(AttrNode.String(t.node))
	}
	return ctx, s
}

// Child begins a span only under a sampled span of ctx: steps inside a
// publish never start traces of their own, so an unsampled publish costs
// them nothing.
func (t *Tracer) Child(ctx context.Context, name string, kind trace.SpanKind) (context.Context, trace.Span) {
	if t == nil || !trace.SpanContextFromContext(ctx).IsSampled() {
		return ctx, none
	}
	return t.Start(ctx, name, kind)
}

// Under begins a span under sc, a span context carried with a message
// (a delivery), if it is sampled.
func (t *Tracer) Under(ctx context.Context, sc trace.SpanContext, name string, kind trace.SpanKind) (context.Context, trace.Span) {
	if t == nil || !sc.IsSampled() {
		return ctx, none
	}
	return t.Start(trace.ContextWithSpanContext(ctx, sc), name, kind)
}

// Sampled returns ctx's span context when it is sampled, for carrying
// with a message; the zero value otherwise.
func (t *Tracer) Sampled(ctx context.Context) trace.SpanContext {
	if t == nil {
		return trace.SpanContext{}
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		return sc
	}
	return trace.SpanContext{}
}

// w3c reads and writes the traceparent and tracestate headers.
var w3c = propagation.TraceContext{}

// Extract continues the caller's trace from a request's W3C traceparent
// (and tracestate) headers, when tracing is on.
func (t *Tracer) Extract(ctx context.Context, h http.Header) context.Context {
	if t == nil || h.Get("Traceparent") == "" {
		return ctx
	}
	return w3c.Extract(ctx, propagation.HeaderCarrier(h))
}

// End ends s, marking it failed with err when err is not nil.
func End(s trace.Span, err error) {
	if err != nil && s.IsRecording() {
		s.RecordError(err)
		s.SetStatus(codes.Error, err.Error())
	}
	s.End()
}

// Shutdown flushes what is queued and stops the exporter, within the
// tracer's shutdown timeout: spans still queued after it are dropped.
func (t *Tracer) Shutdown() error {
	if t == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.shutdown)
	defer cancel()
	err := t.tp.Shutdown(ctx)
	t.tr.CloseIdleConnections()
	return err
}
