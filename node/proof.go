package node

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/switchboard/switchboard/membership"
	"github.com/switchboard/switchboard/peerapi"
)

// A peer proves itself by answering a call over the cluster port at the
// address it gossips: with cluster TLS, that takes a certificate of the
// cluster CA on its side and trust in this node's on the other. Gossip
// alone proves nothing (anyone who reaches the gossip port can join it
// until gossip is encrypted), so the leader adds to Raft only members
// that proved themselves (policy.go), and no node picks a backup or
// tells clients about a peer whose proof failed. A node that cannot
// prove itself is thus never a voter and never ready.

// proofTimeout bounds one proof call.
const proofTimeout = 2 * time.Second

// proofs is what this node knows of its peers' proofs. Entries are for
// an address: a peer that comes back elsewhere proves itself again.
type proofs struct {
	mu      sync.Mutex
	proven  map[string]string // node id → cluster address it answered at
	failed  map[string]string // node id → cluster address whose last proof failed
	running map[string]bool   // node id → a proof is under way
}

func newProofs() *proofs {
	return &proofs{proven: map[string]string{}, failed: map[string]string{}, running: map[string]bool{}}
}

// retain forgets the proofs of members that are gone (not usable) or
// moved, and returns the peers proven now, for the policy's view.
func (p *proofs) retain(members []membership.Member) map[string]string {
	keep := make(map[string]string, len(members))
	for _, m := range members {
		if usable(m.State) {
			keep[m.ID] = m.ClusterAddr
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, known := range []map[string]string{p.proven, p.failed} {
		maps.DeleteFunc(known, func(id, addr string) bool { return keep[id] != addr })
	}
	return maps.Clone(p.proven)
}

// refuted says whether node's last proof at addr failed: such a peer gets
// no replicas and no clients. A peer not tried yet is not refuted, so a
// node just joined is usable at once.
func (p *proofs) refuted(node, addr string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed[node] == addr
}

// begin marks a proof of node as under way; false if one already is.
func (p *proofs) begin(node string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running[node] {
		return false
	}
	p.running[node] = true
	return true
}

// end records a proof's outcome; it reports whether a failure is news
// (the first at this address).
func (p *proofs) end(node, addr string, err error) (news bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.running, node)
	if err == nil {
		p.proven[node] = addr
		delete(p.failed, node)
		return false
	}
	news = p.failed[node] != addr
	p.failed[node] = addr
	return news
}

// prove asks node, in the background, to answer a call at addr, and
// wakes the control loop when it has.
func (n *Node) prove(node, addr string) {
	if !n.proofs.begin(node) {
		return
	}
	n.goOwned(func() {
		ctx, cancel := context.WithTimeout(n.ctx, proofTimeout)
		defer cancel()
		// Any call proves the link; Connections is the cheapest.
		_, err := peerapi.Connections.Call(ctx, n.peers, node, peerapi.Empty{})
		if n.ctx.Err() != nil {
			n.proofs.end(node, addr, n.ctx.Err())
			return
		}
		if n.proofs.end(node, addr, err) {
			n.log.Warn("peer did not prove itself on the cluster port: it stays out of Raft, backups and client endpoints until it does",
				"peer", node, "addr", addr, "err", err)
		}
		if err == nil {
			select {
			case n.proofDone <- struct{}{}:
			default:
			}
		}
	})
}
