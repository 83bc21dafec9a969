package node

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/switchboard/switchboard/consensus"
	"github.com/switchboard/switchboard/membership"
)

// Forming a cluster with --bootstrap-expect N, for deployments that start
// every node with the same flags (a Kubernetes StatefulSet, one unit file
// on every VM), where no node can be told --bootstrap alone.
//
// Every node waits until gossip shows N live members. Then the member with
// the lowest id bootstraps a single-voter cluster, and the leader adds the
// others as it adds any joining node. It is safe because:
//
//   - a node with Raft state never bootstraps (Raft checks it again inside
//     its own loop, so a leader that reached the node first wins);
//   - every node gossips whether it holds Raft state (Meta.Clustered), and
//     a node that sees any such member never bootstraps: a node whose disk
//     was lost, restarted beside a live cluster, waits to be added back;
//   - when the N nodes started together are all the nodes there are, every
//     node that sees N members sees the same ones, so they agree on the
//     lowest id; the decision must also hold for bootstrapSettle before
//     it is acted on, so gossip settles first.
//
// N must be the number of nodes started for the first formation: with more
// nodes than N starting at once, two disjoint views of N members could each
// pick their own lowest id (Consul's bootstrap_expect has the same rule).

// bootstrapSettle is how long the decision to bootstrap must hold before it
// is acted on: several gossip rounds, so that every member started with
// this one has been seen.
const bootstrapSettle = 2 * time.Second

// bootstrapRejoinEvery is how often a node that sees fewer than N members
// contacts its --join addresses again: nodes started together may each
// have found only themselves (DNS names of peers not published yet).
const bootstrapRejoinEvery = 3 * time.Second

// bootstrapGate is the --bootstrap-expect decision, pure: shown the gossip
// members at an instant, it says whether this node bootstraps now.
type bootstrapGate struct {
	self   string
	expect int
	settle time.Duration
	since  time.Time // since when this node may bootstrap; zero while it may not
}

// bootstrapDecision is what the gate decided, and why, for the log.
type bootstrapDecision struct {
	bootstrap bool
	short     bool   // fewer live members than expected: look for them
	why       string // why not (yet)
}

func (g *bootstrapGate) decide(now time.Time, members []membership.Member) bootstrapDecision {
	alive, lowest := 0, ""
	for _, m := range members {
		if m.Clustered && m.ID != g.self {
			g.since = time.Time{}
			return bootstrapDecision{why: fmt.Sprintf("%s holds Raft state: waiting for its cluster to add this node", m.ID)}
		}
		if m.State != membership.StateAlive {
			continue
		}
		alive++
		if lowest == "" || m.ID < lowest {
			lowest = m.ID
		}
	}
	switch {
	case alive < g.expect:
		g.since = time.Time{}
		return bootstrapDecision{short: true, why: fmt.Sprintf("%d of %d members seen", alive, g.expect)}
	case lowest != g.self:
		g.since = time.Time{}
		return bootstrapDecision{why: fmt.Sprintf("%d members seen: %s, the lowest id, bootstraps", alive, lowest)}
	case g.since.IsZero():
		g.since = now
	}
	if now.Sub(g.since) < g.settle {
		return bootstrapDecision{why: fmt.Sprintf("%d members seen, this node has the lowest id: settling", alive)}
	}
	return bootstrapDecision{bootstrap: true}
}

// formCluster runs until this node holds Raft state, then gossips that it
// does (Meta.Clustered) and returns. With --bootstrap-expect it meanwhile
// decides whether this node bootstraps the cluster (bootstrapGate).
func (n *Node) formCluster() {
	if n.raft.HasState() {
		return // gossiped from the start (membership.Config.Clustered)
	}
	var gate *bootstrapGate
	if n.cfg.BootstrapExpect > 0 {
		gate = &bootstrapGate{self: n.cfg.NodeID, expect: n.cfg.BootstrapExpect, settle: bootstrapSettle}
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastJoin, lastWhy := time.Now(), ""
	var joining atomic.Bool // one join in flight at most
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		if n.raft.HasState() {
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			err := n.pool.SetClustered(ctx)
			cancel()
			if err != nil {
				// Set locally all the same: peers learn it at the next
				// state exchange.
				n.log.Debug("gossiping raft state", "err", err)
			}
			return
		}
		if gate == nil {
			continue
		}
		now := time.Now()
		d := gate.decide(now, n.pool.Members())
		if d.bootstrap {
			err := n.raft.Bootstrap()
			switch {
			case err == nil:
				n.log.Info("bootstrap-expect: bootstrapped the cluster", "bootstrap_expect", gate.expect)
			case errors.Is(err, consensus.ErrAlreadyBootstrapped):
			default:
				n.log.Warn("bootstrap-expect: bootstrap failed; retrying", "err", err)
			}
			continue
		}
		if d.why != lastWhy {
			n.log.Info("bootstrap-expect: waiting to form the cluster", "bootstrap_expect", gate.expect, "why", d.why)
			lastWhy = d.why
		}
		if d.short && now.Sub(lastJoin) >= bootstrapRejoinEvery && joining.CompareAndSwap(false, true) {
			lastJoin = now
			n.goOwned(func() { // a join may wait on addresses that do not answer
				defer joining.Store(false)
				ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
				defer cancel()
				if err := n.pool.Join(ctx, n.cfg.Join); err != nil {
					n.log.Debug("bootstrap-expect: join", "err", err)
				}
			})
		}
	}
}
