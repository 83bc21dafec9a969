package node

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/gateway"
)

// metrics are the node's OpenTelemetry instruments, exported in the
// Prometheus text format at /metrics. Each node has its own registry so
// in-process test clusters do not mix their numbers.
type metrics struct {
	reg      *prometheus.Registry
	provider *sdkmetric.MeterProvider

	proposals metric.Float64Histogram
	gauges    metric.Registration

	// Per-message counts are kept here and read at scrape time: an
	// instrument's Add (an attribute-set lookup in a concurrent map) per
	// delivery cost 11 % of a node's CPU at 20,000 messages/s.
	deliveries atomic.Int64
	published  [2]atomic.Int64 // by resultIndex
	// overInflight counts the publish requests refused by
	// API.MaxInflight; the gateway counts its own refusals.
	overInflight atomic.Int64
}

func newMetrics(global bool) (*metrics, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo())
	if err != nil {
		return nil, fmt.Errorf("metrics exporter: %w", err)
	}
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	if global {
		otel.SetMeterProvider(provider)
	}
	m := &metrics{reg: reg, provider: provider}
	meter := provider.Meter("switchboard/node")
	if m.proposals, err = meter.Float64Histogram("switchboard_registry_propose_duration_seconds",
		metric.WithDescription("Registry command latency through the batching proposer (commit + apply), by kind."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)); err != nil {
		return nil, err
	}
	return m, nil
}

// observe registers the gauges read from the node at scrape time.
func (m *metrics) observe(n *Node) {
	meter := m.provider.Meter("switchboard/node")
	conns, _ := meter.Int64ObservableGauge("switchboard_gateway_connections", metric.WithDescription("Open client connections."))
	streams, _ := meter.Int64ObservableGauge("switchboard_broker_streams", metric.WithDescription("User streams held (owned) by this node."))
	attached, _ := meter.Int64ObservableGauge("switchboard_broker_attached_users", metric.WithDescription("Users served here from another node's stream."))
	sessions, _ := meter.Int64ObservableGauge("switchboard_registry_sessions", metric.WithDescription("Entries in the local registry replica."))
	applied, _ := meter.Int64ObservableGauge("switchboard_registry_applied_index", metric.WithDescription("Last Raft index applied to the local registry replica."))
	deliveries, _ := meter.Int64ObservableCounter("switchboard_gateway_deliveries_total", metric.WithDescription("Message frames handed to local client connections."))
	publishes, _ := meter.Int64ObservableCounter("switchboard_publish_messages_total", metric.WithDescription("Messages published through the API, by result."))
	chanMsgs, _ := meter.Int64ObservableCounter("switchboard_channel_messages_total", metric.WithDescription("Channel messages acknowledged by the channels this node owns."))
	chanSends, _ := meter.Int64ObservableCounter("switchboard_channel_peer_deliveries_total", metric.WithDescription("Channel messages sent to other nodes, once per message and node with subscribers (fan-out across the cluster)."))
	refusals, _ := meter.Int64ObservableCounter("switchboard_limit_refusals_total", metric.WithDescription("Connections and requests refused or ended by a limit (docs/security.md), by limit."))
	reg, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(deliveries, m.deliveries.Load())
		for l, count := range n.gateway.Refusals() {
			o.ObserveInt64(refusals, count, gatewayLimitAttrs[l])
		}
		o.ObserveInt64(refusals, m.overInflight.Load(), inflightAttrs)
		for i := range m.published {
			o.ObserveInt64(publishes, m.published[i].Load(), publishAttrs[i])
		}
		o.ObserveInt64(conns, int64(n.gateway.Connections()))
		st := n.broker.Stats()
		o.ObserveInt64(streams, int64(st.Streams))
		o.ObserveInt64(attached, int64(st.Attached))
		o.ObserveInt64(chanMsgs, st.ChannelMessages)
		o.ObserveInt64(chanSends, st.ChannelPeerDeliveries)
		var entries int
		n.raft.Read(func() { entries = n.machine.Registry.Len() })
		o.ObserveInt64(sessions, int64(entries))
		o.ObserveInt64(applied, int64(n.raft.LastApplied()))
		return nil
	}, conns, streams, attached, sessions, applied, deliveries, publishes, refusals, chanMsgs, chanSends)
	if err == nil {
		m.gauges = reg
	}
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Attribute sets are built once: building one per event (sorting and
// hashing the attributes) cost a reconnect storm ~10 % of a node's CPU.
var (
	publishAttrs = [2]metric.ObserveOption{
		metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "ok"))),
		metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "error"))),
	}
	gatewayLimitAttrs = func() (sets [len(gateway.Refusals{})]metric.ObserveOption) {
		for l := range sets {
			sets[l] = metric.WithAttributeSet(attribute.NewSet(attribute.String("limit", gateway.Limit(l).String())))
		}
		return sets
	}()
	inflightAttrs = metric.WithAttributeSet(attribute.NewSet(attribute.String("limit", "inflight_publishes")))
	proposeAttrs  = func() (sets [session.KindExpire + 1][2]metric.MeasurementOption) {
		for k := range sets {
			for i, result := range []string{"ok", "error"} {
				sets[k][i] = metric.WithAttributeSet(attribute.NewSet(
					attribute.String("kind", session.Kind(k).String()), attribute.String("result", result)))
			}
		}
		return sets
	}()
)

func resultIndex(err error) int {
	if err != nil {
		return 1
	}
	return 0
}

func (m *metrics) publishedN(n int, err error) {
	m.published[resultIndex(err)].Add(int64(n))
}

func (m *metrics) refusedPublishes() { m.overInflight.Add(1) }

func (m *metrics) delivered(n int) {
	m.deliveries.Add(int64(n))
}

func (m *metrics) proposed(ctx context.Context, kind session.Kind, d time.Duration, err error) {
	if int(kind) < len(proposeAttrs) {
		m.proposals.Record(ctx, d.Seconds(), proposeAttrs[kind][resultIndex(err)])
		return
	}
	result := [2]string{"ok", "error"}[resultIndex(err)]
	m.proposals.Record(ctx, d.Seconds(), metric.WithAttributes(attribute.String("kind", kind.String()), attribute.String("result", result)))
}

func (m *metrics) close() {
	if m.gauges != nil {
		_ = m.gauges.Unregister()
	}
	_ = m.provider.Shutdown(context.Background())
}
