package load

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard/switchboard/client"
	"github.com/switchboard/switchboard/protocol"
)

// BroadcastReport is the result of Broadcast.
type BroadcastReport struct {
	Scenario    string  `json:"scenario"`
	Subscribers int     `json:"subscribers"`
	Channels    int     `json:"channels"`
	Rate        float64 `json:"rate"`
	Batch       int     `json:"batch"`
	// PublishVia is the node every publish went to; ChannelOwners counts
	// the channels each node owns (PublishVia owns none when there are
	// other nodes).
	PublishVia    string         `json:"publish_via"`
	ChannelOwners map[string]int `json:"channel_owners"`
	// SubscribersBy counts the subscriptions on each node.
	SubscribersBy map[string]int `json:"subscribers_by_node"`
	PublishMS     float64        `json:"publish_ms"`
	Published     int64          `json:"published"` // acknowledged
	// Expected is what the subscribers should have had: each acknowledged
	// message once per subscriber of its channel.
	Expected       int64   `json:"expected_deliveries"`
	Delivered      int64   `json:"delivered"`
	DeliveredPerS  float64 `json:"deliveries_per_s"`
	Lost           int64   `json:"lost"`
	OutOfOrder     int64   `json:"out_of_order"`
	ContinuityLost int64   `json:"continuity_lost"`
	// Latency is delivery time − intended publish time (open loop).
	Latency    Latency `json:"latency_ms"`
	AckLatency Latency `json:"ack_latency_ms"`
	PublishStats
	// PeerDeliveriesPerMessage is, over the channels' owners, channel
	// messages sent to other nodes per message acknowledged (from
	// /metrics): the nodes with subscribers other than the owner, when
	// each message crosses the cluster once per node.
	PeerDeliveriesPerMessage float64 `json:"peer_deliveries_per_message"`
	// CPUPercent is each node's CPU use while publishing, for nodes with
	// a local PID (100 = one core).
	CPUPercent map[string]float64 `json:"cpu_percent,omitempty"`
	// SelfCPUPercent is the load generator's own.
	SelfCPUPercent float64 `json:"sbload_cpu_percent"`
}

// subscriber is one user's subscription in a broadcast run.
type subscriber struct {
	u       *user
	channel int
	from    uint64 // the channel's seq when it subscribed

	mu         sync.Mutex
	last       uint64
	count      int64
	outOfOrder int64
	lost       int64
	subscribed atomic.Bool
	lostEvents atomic.Int64
	lat        *Histogram    // shared by the subscribers of one shard
	onDeliver  *atomic.Int64 // the run's delivery count
}

// broadcastLedger records acknowledged seqs per channel.
type broadcastLedger struct {
	channels   int
	mu         sync.Mutex
	top        []uint64 // highest acknowledged seq per channel
	acked      atomic.Int64
	ackLatency Histogram
}

func (l *broadcastLedger) add(uint64, int) {}

func (l *broadcastLedger) ack(k, seq uint64, intended int64, now time.Time) {
	c := int(k % uint64(l.channels))
	l.mu.Lock()
	l.top[c] = max(l.top[c], seq)
	l.mu.Unlock()
	l.acked.Add(1)
	l.ackLatency.Record(now.UnixNano() - intended)
}

// latencyShards spreads the subscribers' latency records over several
// histograms: one lock for 100,000 deliveries a second would serialize
// the consumers.
const latencyShards = 64

// Broadcast creates Channels channels, each owned by a node other than
// the first endpoint (when there are others), subscribes Users users
// spread over the nodes to them (user i to channel i mod Channels, from
// the channel's current seq), publishes at Rate through the first
// endpoint, and reports deliveries per second, publish→deliver latency,
// loss, the fan-out across nodes and each node's CPU.
func Broadcast(ctx context.Context, cfg Config, channels int) (BroadcastReport, error) {
	if channels <= 0 {
		return BroadcastReport{}, fmt.Errorf("%w: channels must be positive, is %d", ErrConfig, channels)
	}
	r, err := begin(ctx, "broadcast", cfg, true, false)
	if err != nil {
		return BroadcastReport{}, err
	}
	defer r.end()
	cl := r.cl
	n := len(cl.nodes)
	rep := BroadcastReport{Scenario: "broadcast", Subscribers: r.cfg.Users, Channels: channels, Rate: r.cfg.Rate, Batch: r.cfg.Batch,
		PublishVia: cl.nodes[0].ID, ChannelOwners: map[string]int{}, SubscribersBy: map[string]int{}}

	// Channels, created through the other nodes: each owned where it was
	// first published.
	r.setPhase("channels")
	names := make([]string, channels)
	start := make([]uint64, channels)
	for j := range names {
		names[j] = fmt.Sprintf("%s-c%d", r.cfg.UserPrefix, j)
		via := 0
		if n > 1 {
			via = 1 + j%(n-1)
		}
		body, _ := json.Marshal(protocol.NewChannelPublish(names[j], json.RawMessage(`{"create":true}`), names[j]+"-create"))
		st, answer, err := cl.do(ctx, http.MethodPost, cl.nodes[via].Base+"/v1/publish", cl.apiKey, body)
		var pr protocol.PublishResult
		if err != nil || st != http.StatusOK || json.Unmarshal(answer, &pr) != nil {
			return rep, fmt.Errorf("%w: creating channel %s through %s: %d %s %v", ErrCluster, names[j], cl.nodes[via].ID, st, answer, err)
		}
		start[j] = pr.Seq
		rep.ChannelOwners[pr.Node]++
	}

	r.setPhase("connect")
	shards := make([]*Histogram, latencyShards)
	for i := range shards {
		shards[i] = &Histogram{}
	}
	f := newFleet(&r.cfg, nil)
	var wg sync.WaitGroup // the subscriptions' consumers, done once the clients close
	defer func() {
		f.close()
		wg.Wait()
	}()
	if err := f.connect(ctx, func(i int) []string { return cl.wsOrder(i % n) }); err != nil {
		return rep, err
	}
	subs := make([]*subscriber, len(f.users))
	var delivered atomic.Int64
	for i, u := range f.users {
		s := &subscriber{u: u, channel: i % channels, from: start[i%channels], lat: shards[i%latencyShards], onDeliver: &delivered}
		s.last = s.from
		subs[i] = s
		rep.SubscribersBy[cl.nodes[i%n].ID]++
		from := s.from
		sub, err := u.c.Subscribe(names[s.channel], client.SubscribeOptions{From: &from})
		if err != nil {
			return rep, fmt.Errorf("%w: subscribe: %w", ErrConfig, err)
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			for m := range sub.Messages() {
				s.deliver(m, time.Now())
			}
		}()
		go func() {
			defer wg.Done()
			for e := range sub.Events() {
				switch e.Kind {
				case client.SubSubscribed:
					s.subscribed.Store(true)
				case client.SubContinuityLost:
					s.lostEvents.Add(1)
				}
			}
		}()
	}
	subscribed := func() bool {
		for _, s := range subs {
			if !s.subscribed.Load() {
				return false
			}
		}
		return true
	}
	if !waitFor(ctx, dialWait, subscribed) {
		return rep, fmt.Errorf("%w: not every subscription was confirmed within %v", ErrCluster, dialWait)
	}

	l := &broadcastLedger{channels: channels, top: append([]uint64(nil), start...)}
	p := newChannelPublisher(&r.cfg, cl, l, names, func(int) []int { return []int{0} })
	r.startProgress(func(pr *Progress) {
		pr.Connected, pr.Sent, pr.Acked, pr.Delivered = f.connected.Load(), p.sent.Load(), l.acked.Load(), delivered.Load()
		pr.Errors = p.s503.Load() + p.netErr.Load() + p.itemErr.Load() + p.other.Load()
	})
	before := fanout(ctx, cl)
	cpu0, self0 := cpuTicks(r.cfg.PIDs), selfTicks()

	r.setPhase("publish")
	t0 := time.Now()
	elapsed := p.run(ctx, t0.Add(r.cfg.Duration))
	cpu1, self1 := cpuTicks(r.cfg.PIDs), selfTicks()
	wall := time.Since(t0)
	r.setPhase("grace")
	expected := func() int64 {
		l.mu.Lock()
		defer l.mu.Unlock()
		var e int64
		for _, s := range subs {
			e += int64(l.top[s.channel] - s.from)
		}
		return e
	}
	waitFor(ctx, r.cfg.Grace, func() bool { return delivered.Load() >= expected() })
	r.setPhase("done")
	after := fanout(ctx, cl)

	rep.PublishMS = ms(elapsed)
	rep.Published = l.acked.Load()
	rep.Expected = expected()
	for _, s := range subs {
		s.mu.Lock()
		top := l.top[s.channel]
		rep.Delivered += s.count
		rep.OutOfOrder += s.outOfOrder
		rep.Lost += s.lost
		if s.last < top {
			rep.Lost += int64(top - s.last)
		}
		s.mu.Unlock()
		rep.ContinuityLost += s.lostEvents.Load()
	}
	rep.DeliveredPerS = perSecond(rep.Delivered, elapsed)
	var lat Histogram
	for _, h := range shards {
		lat.Merge(h)
	}
	rep.Latency, rep.AckLatency = lat.Summary(), l.ackLatency.Summary()
	rep.PublishStats = p.stats()
	if msgs := after[0] - before[0]; msgs > 0 {
		rep.PeerDeliveriesPerMessage = round3((after[1] - before[1]) / msgs)
	}
	if len(cpu0) > 0 {
		rep.CPUPercent = map[string]float64{}
		for id, c0 := range cpu0 {
			if c1, ok := cpu1[id]; ok {
				rep.CPUPercent[id] = round3(float64(c1-c0) / clockTicks / wall.Seconds() * 100)
			}
		}
	}
	rep.SelfCPUPercent = round3(float64(self1-self0) / clockTicks / wall.Seconds() * 100)
	return rep, nil
}

// deliver records one delivered message: in order after the last, or a
// hole (lost) or a step back (out of order).
func (s *subscriber) deliver(m client.ChannelMessage, now time.Time) {
	p, ok := parsePayload(m.Data)
	s.mu.Lock()
	switch {
	case m.Seq == s.last+1:
	case m.Seq > s.last+1:
		s.lost += int64(m.Seq - s.last - 1)
	default:
		s.outOfOrder++
	}
	s.last = max(s.last, m.Seq)
	s.count++
	s.mu.Unlock()
	s.onDeliver.Add(1)
	if ok {
		s.lat.Record(now.UnixNano() - p.T)
	}
}

// fanout sums, over the nodes, the channel messages their channels
// acknowledged and sent to other nodes (switchboard_channel_messages_total,
// switchboard_channel_peer_deliveries_total).
func fanout(ctx context.Context, cl *cluster) [2]float64 {
	var out [2]float64
	for _, nd := range cl.nodes {
		st, body, err := cl.do(ctx, http.MethodGet, nd.Base+"/metrics", "", nil)
		if err != nil || st != http.StatusOK {
			continue
		}
		if v, ok := metricValue(body, "switchboard_channel_messages_total"); ok {
			out[0] += v
		}
		if v, ok := metricValue(body, "switchboard_channel_peer_deliveries_total"); ok {
			out[1] += v
		}
	}
	return out
}

// cpuTicks reads the CPU ticks of every node with a local PID.
func cpuTicks(pids map[string]int) map[string]int64 {
	out := map[string]int64{}
	for id, pid := range pids {
		if t, err := procCPUTicks(pid); err == nil {
			out[id] = t
		}
	}
	return out
}

// selfTicks is this process's CPU ticks (0 where /proc is missing).
func selfTicks() int64 {
	t, _ := procCPUTicks(os.Getpid())
	return t
}
