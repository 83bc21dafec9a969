package node

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	gometrics "github.com/hashicorp/go-metrics/compat"
	gometricsprom "github.com/hashicorp/go-metrics/compat/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/switchboard/switchboard/consensus"
	"github.com/switchboard/switchboard/internal/certs"
	"github.com/switchboard/switchboard/membership"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/gateway"
)

// metrics are the node's OpenTelemetry instruments, exported in the
// Prometheus text format at /metrics. Each node has its own registry so
// in-process test clusters do not mix their numbers.
type metrics struct {
	reg      *prometheus.Registry
	provider *sdkmetric.MeterProvider
	// bridged: hashicorp/raft's and memberlist's go-metrics are exported
	// here (GlobalMetrics), through the process-global go-metrics sink.
	bridged bool

	// Recorded per event with client_golang directly: an Observe on a
	// resolved histogram is a few atomic adds, cheap enough for the
	// replication path.
	takeovers   [2]prometheus.Observer // by resultIndex
	replication prometheus.Observer
	continuity  prometheus.Counter
	requests    *prometheus.CounterVec
	classes     [6]prometheus.Counter // requests by status/100, resolved for 2xx, 4xx, 5xx
	// node is what the scrape-time collector reads; nil until observe.
	node atomic.Pointer[Node]

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
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("go collector: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("process collector: %w", err)
	}
	if global {
		if err := bridgeGoMetrics(reg); err != nil {
			return nil, err
		}
		m.bridged = true
	}
	takeovers := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "switchboard_broker_takeover_duration_seconds",
		Help:    "Takeovers of existing streams by this node, from the decision to claim to serving the stream (claim in Raft, seal and fetch from the old holder), by result.",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"result"})
	replication := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "switchboard_broker_replication_duration_seconds",
		Help:    "Replication calls from this node (owner) to a backup, until the backup's acknowledgement; one call may carry many streams' appends.",
		Buckets: []float64{0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 3},
	})
	m.continuity = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "switchboard_broker_continuity_lost_total",
		Help: "Existing streams this node found held by no node and started over as new sessions (clients get resumed:false).",
	})
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchboard_publish_requests_total",
		Help: "Publish API requests (/v1/publish and /v1/publish/batch) answered, by status class.",
	}, []string{"code"})
	for _, c := range []prometheus.Collector{takeovers, replication, m.continuity, requests, nodeCollector{m: m}} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	for i, result := range []string{"ok", "error"} {
		m.takeovers[i] = takeovers.WithLabelValues(result)
	}
	m.replication = replication
	m.requests = requests
	for _, class := range []int{2, 4, 5} {
		m.classes[class] = requests.WithLabelValues(fmt.Sprintf("%dxx", class))
	}
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
	m.node.Store(n)
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
	if m.bridged {
		gometrics.Shutdown() // back to go-metrics' blackhole sink
	}
	_ = m.provider.Shutdown(context.Background())
}

// TookOver implements broker.Observer.
func (m *metrics) TookOver(d time.Duration, err error) {
	m.takeovers[resultIndex(err)].Observe(d.Seconds())
}

// ContinuityLost implements broker.Observer.
func (m *metrics) ContinuityLost() { m.continuity.Inc() }

// Replicated implements broker.Observer.
func (m *metrics) Replicated(d time.Duration) { m.replication.Observe(d.Seconds()) }

// answered counts one publish request answered with status.
func (m *metrics) answered(status int) {
	class := status / 100
	if class >= 0 && class < len(m.classes) && m.classes[class] != nil {
		m.classes[class].Inc()
		return
	}
	m.requests.WithLabelValues(fmt.Sprintf("%dxx", class)).Inc()
}

// countAnswers wraps a publish handler to count its answers by status
// class, for the publish 5xx alert.
func (m *metrics) countAnswers(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h(sw, r)
		m.answered(sw.status)
	}
}

// statusWriter remembers the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(status int) {
	if !w.wrote {
		w.status, w.wrote = status, true
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// bridgeGoMetrics exports what hashicorp/raft and memberlist report
// through go-metrics (armon/go-metrics or hashicorp/go-metrics, whichever
// go-metrics/compat was built with) on reg: raft_* and memberlist_*.
// go-metrics has one sink per process, so only a node that owns its
// process (GlobalMetrics) installs it.
func bridgeGoMetrics(reg prometheus.Registerer) error {
	sink, err := gometricsprom.NewPrometheusSinkFrom(gometricsprom.PrometheusOpts{
		Registerer: reg,
		Name:       "switchboard_gometrics_sink",
		// Never expire: Raft's state counters and gauges change rarely,
		// and a series that vanished after a quiet minute would look
		// like a node that stopped reporting. The key set is bounded by
		// the cluster (per-peer replication timings included).
		Expiration: 0,
		// memberlist sets its health score only when it changes: declared
		// here, it reads 0 (healthy) from the start.
		GaugeDefinitions: []gometricsprom.GaugeDefinition{{
			Name: []string{"memberlist", "health", "score"},
			Help: "memberlist awareness score: 0 healthy, higher when this node is slow to answer probes (it suspects itself).",
		}},
	})
	if err != nil {
		return fmt.Errorf("go-metrics bridge: %w", err)
	}
	conf := gometrics.DefaultConfig("")
	// Keys as the libraries name them (raft.commitTime → raft_commitTime):
	// no host name prefix, and no runtime metrics (the Go collector has
	// them).
	conf.EnableHostname = false
	conf.EnableHostnameLabel = false
	conf.EnableRuntimeMetrics = false
	if _, err := gometrics.NewGlobal(conf, sink); err != nil {
		return fmt.Errorf("go-metrics bridge: %w", err)
	}
	return nil
}

// nodeCollector reports what alerting needs, read from the node at
// scrape time: readiness, the Raft view, gossip membership, slow
// consumers and certificate expiry.
type nodeCollector struct{ m *metrics }

var (
	descReady = prometheus.NewDesc("switchboard_node_ready",
		"1 when /readyz answers 200: joined, registry caught up, not draining.", nil, nil)
	descHasLeader = prometheus.NewDesc("switchboard_raft_has_leader",
		"1 when this node knows a Raft leader.", nil, nil)
	descLeader = prometheus.NewDesc("switchboard_raft_leader",
		"1 on the Raft leader.", nil, nil)
	descVoters = prometheus.NewDesc("switchboard_raft_voters",
		"Voters in the Raft configuration, as this node knows it.", nil, nil)
	descVotersAlive = prometheus.NewDesc("switchboard_raft_voters_alive",
		"Voters of the Raft configuration that gossip sees alive, suspect or draining (this node included).", nil, nil)
	descMembers = prometheus.NewDesc("switchboard_gossip_members",
		"Members of the gossip pool as this node sees them, by state.", []string{"state"}, nil)
	descSlow = prometheus.NewDesc("switchboard_gateway_slow_consumer_closes_total",
		"Client connections closed as slow consumers (4008): send queue overflow, or a stream they could not keep up with.", nil, nil)
	descCertExpiry = prometheus.NewDesc("switchboard_tls_cert_expiry_timestamp_seconds",
		"NotAfter of the certificate in use, in unix seconds, by cert: public (HTTPS/WSS listeners) or cluster (mutual TLS on the cluster port).", []string{"cert"}, nil)
	memberStates = []membership.State{membership.StateAlive, membership.StateSuspect, membership.StateDead, membership.StateLeft, membership.StateDraining}
)

// Describe sends nothing: the collector is unchecked, as its series
// depend on the node's configuration (certificates).
func (nodeCollector) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.m.node.Load()
	if n == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descReady, bit(n.notReady() == ""))
	st := n.raft.Status()
	gauge(descHasLeader, bit(st.Leader != ""))
	gauge(descLeader, bit(st.Leader == n.cfg.NodeID))
	voters, alive := 0, 0
	view := cluster{n}
	for _, s := range st.Servers {
		if s.Suffrage != consensus.SuffrageVoter {
			continue
		}
		voters++
		if s.ID == n.cfg.NodeID || view.Alive(s.ID) {
			alive++
		}
	}
	gauge(descVoters, float64(voters))
	gauge(descVotersAlive, float64(alive))
	counts := map[membership.State]int{}
	for _, mb := range n.pool.Members() {
		counts[mb.State]++
	}
	for _, state := range memberStates {
		gauge(descMembers, float64(counts[state]), string(state))
	}
	ch <- prometheus.MustNewConstMetric(descSlow, prometheus.CounterValue, float64(n.gateway.SlowConsumers()))
	for _, src := range []struct {
		name string
		s    *certs.Source
	}{{"public", n.publicCerts}, {"cluster", n.clusterCerts}} {
		if src.s == nil {
			continue
		}
		if leaf := src.s.Certificate().Leaf; leaf != nil {
			gauge(descCertExpiry, float64(leaf.NotAfter.Unix()), src.name)
		}
	}
}

func bit(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
