package node

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/switchboard/switchboard/broker"
	"github.com/switchboard/switchboard/consensus"
	"github.com/switchboard/switchboard/membership"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport"
)

// registry is the broker's view of the Raft-replicated session registry.
type registry struct{ n *Node }

func (r registry) Get(user string) (e session.Entry, ok bool) {
	r.n.raft.Read(func() { e, ok = r.n.machine.Registry.Get(user) })
	return e, ok
}

// Propose stamps the command with the proposer's clock (apply reads none)
// and commits it through the batching proposer. A command whose outcome is
// unknown (the leader died mid-commit) is sent again, unchanged, until ctx
// ends: every registry command is a compare-and-set that recognises its
// own retry, so this cannot apply anything twice, and a leader election
// costs a request a short wait instead of an error.
func (r registry) Propose(ctx context.Context, c session.Command) (session.Result, error) {
	c.Now = time.Now().UnixMilli()
	cmd := c.Encode(nil)
	start := time.Now()
	wait := 20 * time.Millisecond
	for {
		res, err := r.proposeOnce(ctx, cmd, c.Kind, start)
		if err == nil {
			return res, nil
		}
		if !errors.Is(err, consensus.ErrNotCommitted) && !errors.Is(err, consensus.ErrNoLeader) || errors.Is(err, consensus.ErrClosed) {
			return session.Result{}, err
		}
		select {
		case <-ctx.Done():
			return session.Result{}, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// proposeOnce commits an encoded command once, recording its latency.
func (r registry) proposeOnce(ctx context.Context, cmd []byte, kind session.Kind, start time.Time) (session.Result, error) {
	out, err := r.n.raft.Propose(ctx, cmd)
	r.n.metrics.proposed(ctx, kind, time.Since(start), err)
	if err != nil {
		return session.Result{}, err
	}
	return session.DecodeResult(out)
}

// peersByID addresses peer links by node id, resolved through gossip.
type peersByID struct{ n *Node }

func (p peersByID) addr(node string) (string, error) {
	m, ok := p.n.pool.Member(node)
	if !ok || m.ClusterAddr == "" {
		return "", fmt.Errorf("%w: unknown node %q", transport.ErrPeerUnavailable, node)
	}
	return m.ClusterAddr, nil
}

func (p peersByID) Call(ctx context.Context, node string, method uint8, payload []byte) ([]byte, error) {
	addr, err := p.addr(node)
	if err != nil {
		return nil, err
	}
	return p.n.peers.Call(ctx, addr, method, payload)
}

func (p peersByID) Send(ctx context.Context, node string, method uint8, payload []byte) error {
	addr, err := p.addr(node)
	if err != nil {
		return err
	}
	return p.n.peers.Send(ctx, addr, method, payload)
}

// cluster is the broker's view of the other nodes.
type cluster struct{ n *Node }

func (c cluster) Alive(node string) bool {
	m, ok := c.n.pool.Member(node)
	return ok && usable(m.State)
}

func (c cluster) Endpoints() []broker.Endpoint { return c.n.peerEndpoints() }

// Solo reports whether this node is the Raft configuration's only server.
func (c cluster) Solo() bool { return c.n.raft.OnlyServer(c.n.cfg.NodeID) }

// Peers lists the live, non-draining other nodes: where replicas may go.
func (c cluster) Peers() []broker.Peer {
	var out []broker.Peer
	for _, m := range c.n.pool.Members() {
		if m.ID != c.n.cfg.NodeID && m.State == membership.StateAlive {
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
// same region first, then by id, so clients fail over close by.
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
		if m.ID == n.cfg.NodeID || m.State != membership.StateAlive || m.PublicURL == "" {
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
