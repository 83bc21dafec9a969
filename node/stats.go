package node

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/switchboard/switchboard/consensus"
	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/transport/peer"
)

// GET /v1/stats (DESIGN.md §5, §5a): what the dashboard polls. Each node
// computes its own rates from its counters (metrics.go), sampled every
// rateInterval; the answering node asks every other live node for its
// figures through peerapi.Stats, each call bounded by statsCallTimeout so
// that a node that stopped answering costs the poll one timeout, not a
// hang.

const (
	// rateInterval is how often a node samples its counters; rateSamples
	// of them make the window its rates are averaged over.
	rateInterval = time.Second
	rateSamples  = 5
	// statsCallTimeout bounds asking one node for its figures.
	statsCallTimeout = time.Second
)

// rateSample is the node's counters at one instant.
type rateSample struct {
	at                   time.Time
	published, delivered int64
}

// rates keeps the last rateSamples samples of the node's counters.
type rates struct {
	mu      sync.Mutex
	samples [rateSamples]rateSample
	next, n int
}

func (r *rates) add(s rateSample) {
	r.mu.Lock()
	r.samples[r.next] = s
	r.next = (r.next + 1) % rateSamples
	r.n = min(r.n+1, rateSamples)
	r.mu.Unlock()
}

// since returns the rates per second from the oldest sample kept to now,
// and the window they cover (zero before the first sample).
func (r *rates) since(now rateSample) (publish, deliver float64, window time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		return 0, 0, 0
	}
	oldest := r.samples[(r.next-r.n+rateSamples)%rateSamples]
	window = now.at.Sub(oldest.at)
	if window < 100*time.Millisecond {
		return 0, 0, window
	}
	sec := window.Seconds()
	return max(0, float64(now.published-oldest.published)/sec), max(0, float64(now.delivered-oldest.delivered)/sec), window
}

// counters reads the node's counters now.
func (n *Node) counters() rateSample {
	return rateSample{at: time.Now(), published: n.metrics.published[0].Load(), delivered: n.metrics.deliveries.Load()}
}

// sampleRates samples the node's counters until the node stops.
func (n *Node) sampleRates() {
	n.rates.add(n.counters())
	t := time.NewTicker(rateInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			n.rates.add(n.counters())
		}
	}
}

// ownStats is this node's answer to peerapi.Stats.
func (n *Node) ownStats() peerapi.NodeStats {
	now := n.counters()
	pub, del, window := n.rates.since(now)
	st := n.broker.Stats()
	return peerapi.NodeStats{
		Connections:   uint64(n.gateway.Connections()),
		SessionsOwned: uint64(st.Streams - st.Channels), ChannelsOwned: uint64(st.Channels),
		Attached: uint64(st.Attached), Replicas: uint64(st.Replicas),
		Published: uint64(now.published), Delivered: uint64(now.delivered),
		PublishRate: pub, DeliveryRate: del, WindowMS: uint64(window.Milliseconds()),
	}
}

// serveStats registers peerapi.Stats.
func (n *Node) serveStats(r peer.Registry) {
	peerapi.Stats.Serve(r, func(context.Context, string, peerapi.Empty) (peerapi.NodeStats, error) {
		return n.ownStats(), nil
	})
}

func (n *Node) handleStats(w http.ResponseWriter, r *http.Request) {
	if !only(http.MethodGet, w, r) {
		return
	}
	roles := raftRoles(n.raft.Status())
	out := []protocol.NodeStats{}
	for _, m := range n.pool.Members() {
		if usable(m.State) {
			out = append(out, protocol.NodeStats{ID: m.ID, Region: m.Region, Zone: m.Zone, State: string(m.State), Raft: roles.of(m.ID)})
		}
	}
	var wg sync.WaitGroup
	for i := range out {
		if out[i].ID == n.cfg.NodeID {
			fillStats(&out[i], n.ownStats())
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(r.Context(), statsCallTimeout)
			defer cancel()
			s, err := peerapi.Stats.Call(ctx, n.peers, out[i].ID, peerapi.Empty{})
			if err != nil {
				out[i].Error = err.Error()
				return
			}
			fillStats(&out[i], s)
		}()
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, protocol.Stats{At: time.Now().UTC(), Nodes: out})
}

// fillStats copies a node's answer into its row of GET /v1/stats.
func fillStats(dst *protocol.NodeStats, s peerapi.NodeStats) {
	dst.Connections, dst.SessionsOwned, dst.ChannelsOwned = int(s.Connections), int(s.SessionsOwned), int(s.ChannelsOwned)
	dst.Attached, dst.Replicas = int(s.Attached), int(s.Replicas)
	dst.PublishRate, dst.DeliveryRate = s.PublishRate, s.DeliveryRate
	dst.Published, dst.Delivered, dst.WindowMS = s.Published, s.Delivered, int64(s.WindowMS)
}

// raftRoleMap is each server's role in the Raft configuration, as the
// admin API names it.
type raftRoleMap struct {
	leader   string
	suffrage map[string]string
}

func raftRoles(st consensus.Status) raftRoleMap {
	m := raftRoleMap{leader: st.Leader, suffrage: make(map[string]string, len(st.Servers))}
	for _, s := range st.Servers {
		m.suffrage[s.ID] = s.Suffrage
	}
	return m
}

// of returns "leader", "voter", "nonvoter" or "none".
func (m raftRoleMap) of(id string) string {
	switch {
	case id == m.leader && id != "":
		return "leader"
	case m.suffrage[id] == "":
		return "none"
	}
	return m.suffrage[id]
}
