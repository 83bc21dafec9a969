package node

import (
	"sort"
	"strings"

	"github.com/switchboard/switchboard/broker"
	"github.com/switchboard/switchboard/membership"
)

// cluster is the broker's view of the other nodes.
type cluster struct{ n *Node }

func (c cluster) Alive(node string) bool {
	m, ok := c.n.pool.Member(node)
	return ok && usable(m.State)
}

func (c cluster) Endpoints() []broker.Endpoint { return c.n.peerEndpoints() }

// Solo reports whether this node is the Raft configuration's only server.
func (c cluster) Solo() bool { return c.n.raft.OnlyServer(c.n.cfg.NodeID) }

// Peers lists the live, non-draining other nodes, but those whose proof
// on the cluster port failed (proof.go): where replicas may go.
func (c cluster) Peers() []broker.Peer {
	var out []broker.Peer
	for _, m := range c.n.pool.Members() {
		if m.ID != c.n.cfg.NodeID && m.State == membership.StateAlive && !c.n.proofs.refuted(m.ID, m.ClusterAddr) {
			out = append(out, broker.Peer{ID: m.ID, Region: m.Region, Zone: m.Zone})
		}
	}
	return out
}

// usable says whether a member is worth calling.
func usable(s membership.State) bool {
	return s == membership.StateAlive || s == membership.StateSuspect || s == membership.StateDraining
}

// endpoints lists the client URLs of the other live, non-draining nodes,
// but those whose proof on the cluster port failed, same region first,
// then by id, so clients fail over close by.
func (n *Node) endpoints() []string {
	eps := n.peerEndpoints()
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.URL
	}
	return out
}

// peerEndpoints is endpoints with the node of each URL, for the broker,
// which orders a user's endpoints within that constraint.
func (n *Node) peerEndpoints() []broker.Endpoint {
	var same, other []membership.Member
	for _, m := range n.pool.Members() {
		if m.ID == n.cfg.NodeID || m.State != membership.StateAlive || m.PublicURL == "" || n.proofs.refuted(m.ID, m.ClusterAddr) {
			continue
		}
		if m.Region == n.cfg.Region {
			same = append(same, m)
		} else {
			other = append(other, m)
		}
	}
	byID := func(ms []membership.Member) {
		sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
	}
	byID(same)
	byID(other)
	out := make([]broker.Endpoint, 0, len(same)+len(other))
	for _, m := range same {
		out = append(out, broker.Endpoint{Node: m.ID, URL: wsURL(m.PublicURL), SameRegion: true})
	}
	for _, m := range other {
		out = append(out, broker.Endpoint{Node: m.ID, URL: wsURL(m.PublicURL)})
	}
	return out
}

// wsURL turns a public base URL into its client WebSocket URL.
func wsURL(base string) string {
	switch {
	case strings.HasPrefix(base, "https://"):
		base = "wss://" + strings.TrimPrefix(base, "https://")
	case strings.HasPrefix(base, "http://"):
		base = "ws://" + strings.TrimPrefix(base, "http://")
	}
	return strings.TrimSuffix(base, "/") + "/v1/connect"
}
