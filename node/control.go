package node

import (
	"context"
	"time"

	"github.com/switchboard/switchboard/consensus"
	"github.com/switchboard/switchboard/membership"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
)

// control keeps the node in step with gossip membership: Raft placement on
// the leader, failure handling for nodes that die or leave (or that the
// registry still names after the cluster gave them up unseen), and the
// sweep of sessions nobody is left to retire. What to do is the policy's
// decision (policy.go); this loop only looks and acts.
func (n *Node) control() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	p := newClusterPolicy(n.cfg.NodeID, time.Now())
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.pool.Changes():
		case <-n.proofDone:
		case <-tick.C:
		}
		for _, a := range p.decide(n.clusterView()) {
			n.act(p, a)
		}
	}
}

// clusterView reads what the policy decides on, all at once.
func (n *Node) clusterView() clusterView {
	v := clusterView{
		now:      time.Now(),
		members:  n.pool.Members(),
		leading:  n.raft.IsLeader(),
		draining: n.draining.Load(),
	}
	v.proven = n.proofs.retain(v.members)
	v.leader, _ = n.raft.Leader()
	for _, s := range n.raft.Status().Servers {
		v.servers = append(v.servers, s.ID)
	}
	n.raft.Read(func() {
		v.named = n.machine.Registry.Named()
		v.ownerless = n.machine.Registry.Ownerless() > 0
	})
	return v
}

// act performs one of the policy's actions.
func (n *Node) act(p *clusterPolicy, a action) {
	switch a := a.(type) {
	case saveSeeds:
		if err := n.saveSeeds(a.addrs); err != nil {
			n.log.Warn("saving seeds", "err", err)
			return
		}
		p.seedsSaved(a.addrs)
	case rejoin:
		n.rejoin(a.addrs)
	case shedClients:
		n.log.Warn("no raft leader: sending clients to other nodes", "for", a.leaderless.Round(time.Millisecond))
		n.gateway.CloseAll(protocol.Errorf(protocol.ErrMoved, "node lost contact with the cluster: reconnect to another endpoint"), n.endpoints())
	case reconcile:
		if err := n.raft.Reconcile(raftMembers(a.members)); err != nil {
			n.log.Debug("raft reconcile", "err", err)
		}
	case prove:
		n.prove(a.node, a.addr)
	case nodeUp:
		n.peers.Reset(a.node) // out of the dial backoff from when it was gone
		n.broker.NodeUp(a.node)
	case rebackup:
		n.broker.Rebackup(a.node)
	case nodeDown:
		n.log.Info("node down", "peer", a.node, "state", a.state)
		n.broker.NodeDown(a.node)
	case nodeFailed:
		if a.stray {
			n.log.Info("registry names a node the cluster has given up: failing it", "peer", a.node)
		}
		n.nodeFailed(a.node)
	case sweep:
		n.sweep(a.dead)
	}
}

// rejoin joins the given gossip addresses again, in the background: a
// join may wait on addresses that do not answer.
func (n *Node) rejoin(addrs []string) {
	n.goOwned(func() {
		ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
		defer cancel()
		if err := n.pool.Join(ctx, addrs); err == nil {
			n.log.Info("rejoined members gossip had declared dead", "addrs", addrs)
		}
	})
}

// nodeFailed detaches the users of a dead node so their resume window
// starts, and forgets it as a backup.
func (n *Node) nodeFailed(id string) {
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	if _, err := (registry{n}).Propose(ctx, session.Command{Kind: session.KindNodeFailed, Node: id}); err != nil {
		n.log.Debug("node-failed proposal", "peer", id, "err", err)
	}
}

// sweep retires sessions of dead nodes whose resume window has passed.
func (n *Node) sweep(dead []string) {
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	if _, err := (registry{n}).Propose(ctx, session.Command{Kind: session.KindExpire, Nodes: dead, Window: n.cfg.Broker.Stream.Window}); err != nil {
		n.log.Debug("expire sweep", "err", err)
	}
}

func raftMembers(ms []membership.Member) []consensus.Member {
	out := make([]consensus.Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, consensus.Member{ID: m.ID, Addr: m.ClusterAddr, Region: m.Region, Zone: m.Zone, State: string(m.State)})
	}
	return out
}
