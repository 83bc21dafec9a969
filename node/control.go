package node

import (
	"context"
	"time"

	"github.com/switchboard/switchboard/consensus"
	"github.com/switchboard/switchboard/membership"
	"github.com/switchboard/switchboard/session"
)

// control keeps the node in step with gossip membership: Raft placement on
// the leader, failure handling for nodes that die or leave, and the sweep
// of sessions nobody is left to retire.
func (n *Node) control() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	known := map[string]membership.State{}
	lastSweep := time.Now()
	var seeds []string
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.pool.Changes():
		case <-tick.C:
		}
		members := n.pool.Members()
		seeds = n.saveSeeds(members, seeds)
		leader := n.raft.IsLeader()
		if leader {
			if err := n.raft.Reconcile(raftMembers(members)); err != nil {
				n.log.Debug("raft reconcile", "err", err)
			}
		}
		var down []string
		for _, m := range members {
			prev, seen := known[m.ID]
			known[m.ID] = m.State
			if m.ID != n.cfg.NodeID && m.State == membership.StateAlive && seen && prev != m.State {
				// Back (restarted or healed): links to it may sit in a dial
				// backoff from when it was gone; try them at once.
				n.peers.Reset(m.ClusterAddr)
				n.broker.NodeUp(m.ID)
			}
			if m.ID != n.cfg.NodeID && m.State == membership.StateDraining && prev != m.State {
				n.broker.Rebackup(m.ID) // it is leaving: replicas move before it goes
			}
			if m.ID == n.cfg.NodeID || usable(m.State) {
				continue
			}
			down = append(down, m.ID)
			if seen && prev != m.State || !seen {
				n.log.Info("node down", "peer", m.ID, "state", m.State)
				n.broker.NodeDown(m.ID)
				if leader {
					n.nodeFailed(m.ID)
				}
			}
		}
		// The leader repeats what a previous leader may not have finished.
		if leader && time.Since(lastSweep) > 10*time.Second {
			lastSweep = time.Now()
			for _, id := range down {
				owned := 0
				n.raft.Read(func() { owned = n.machine.Registry.Owned(id) })
				if owned > 0 {
					n.nodeFailed(id)
				}
			}
			if len(down) > 0 {
				n.sweep(down)
			}
		}
	}
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
	if _, err := (registry{n}).Propose(ctx, session.Command{Kind: session.KindExpire, Nodes: dead, Window: n.cfg.ResumeWindow.Milliseconds()}); err != nil {
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
