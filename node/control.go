package node

import (
	"context"
	"slices"
	"time"

	"github.com/switchboard/switchboard/consensus"
	"github.com/switchboard/switchboard/membership"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport"
)

// control keeps the node in step with gossip membership: Raft placement on
// the leader, failure handling for nodes that die or leave (or that the
// registry still names after the cluster gave them up unseen), and the
// sweep of sessions nobody is left to retire.
func (n *Node) control() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	known := map[string]membership.State{}
	lastSweep, lastRejoin := time.Now(), time.Now()
	var seeds []string
	var leaderless time.Time // since when no Raft leader is known; zero while one is
	strays := newStrays()
	shed := false
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.pool.Changes():
		case <-tick.C:
		}
		members := n.pool.Members()
		seeds = n.saveSeeds(members, seeds)
		if time.Since(lastRejoin) > rejoinEvery {
			lastRejoin = time.Now()
			n.rejoinDead(members)
		}
		leaderless, shed = n.shedIfCutOff(leaderless, shed)
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
		n.failStrays(members, strays, leader)
		// The leader repeats what a previous leader may not have finished.
		if leader && time.Since(lastSweep) > 10*time.Second {
			lastSweep = time.Now()
			for _, id := range down {
				n.nodeFailed(id) // idempotent: repeats what an earlier leader may have missed
			}
			var ownerless int
			n.raft.Read(func() { ownerless = n.machine.Registry.Ownerless() })
			if len(down) > 0 || ownerless > 0 {
				n.sweep(down)
			}
		}
	}
}

// rejoinEvery is how often members gossip declared dead are contacted
// again. After a partition heals, memberlist on each side may keep the
// other side dead; a join merges the two views again (as Serf does).
const rejoinEvery = 5 * time.Second

func (n *Node) rejoinDead(members []membership.Member) {
	var addrs []string
	for _, m := range members {
		if m.ID != n.cfg.NodeID && m.State == membership.StateDead && m.GossipAddr != "" {
			addrs = append(addrs, m.GossipAddr)
		}
	}
	if len(addrs) == 0 {
		return
	}
	n.goOwned(func() {
		ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
		defer cancel()
		if err := n.pool.Join(ctx, addrs); err == nil {
			n.log.Info("rejoined members gossip had declared dead", "addrs", addrs)
		}
	})
}

// cutOffAfter is how long a node may know no Raft leader before it sends
// its clients elsewhere: it is on the minority side of a partition (or
// the cluster lost quorum), where nothing can be claimed or moved, while
// the majority side can serve those users with their streams.
const cutOffAfter = 3 * time.Second

func (n *Node) shedIfCutOff(since time.Time, shed bool) (time.Time, bool) {
	if id, _ := n.raft.Leader(); id != "" {
		return time.Time{}, false
	}
	if since.IsZero() {
		return time.Now(), false
	}
	if !shed && time.Since(since) > cutOffAfter && !n.draining.Load() {
		n.log.Warn("no raft leader: sending clients to other nodes", "for", time.Since(since).Round(time.Millisecond))
		n.gateway.CloseAll(transport.CloseDraining, transport.CodeDraining, "node lost contact with the cluster: reconnect to another endpoint", n.endpoints())
		return since, true
	}
	return since, shed
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

// strayAfter is how long the leader must see a node as a stray before it
// fails it, so that placement's view and its own agree for a while.
const strayAfter = 5 * time.Second

// strayNodes follows the nodes the registry names as an owner or a backup
// that gossip does not know at all. Gossip only lists as dead the nodes it
// saw die, so a node that never came back after a full-cluster restart is
// unknown to it, no node-failed would ever clear it, and every user it
// owned or backed up would wait for it forever (503/1013) instead of being
// told that continuity is lost. Such a node is a stray once placement has
// removed it from the Raft configuration (after DeadServerGrace): the
// cluster has given it up. A name this node never saw in the configuration
// is no node of this cluster as far as it knows, and is left alone.
type strayNodes struct {
	wasServer map[string]bool      // unknown to gossip, seen in the Raft configuration
	since     map[string]time.Time // strays, since when (while this node leads)
}

func newStrays() *strayNodes {
	return &strayNodes{wasServer: map[string]bool{}, since: map[string]time.Time{}}
}

// failStrays records node-failed, on the leader, for every node that has
// been a stray for strayAfter.
func (n *Node) failStrays(members []membership.Member, s *strayNodes, leader bool) {
	var named []string
	n.raft.Read(func() { named = n.machine.Registry.Named() })
	known := map[string]bool{n.cfg.NodeID: true}
	for _, m := range members {
		known[m.ID] = true
	}
	unknown := map[string]bool{}
	for _, id := range named {
		if !known[id] {
			unknown[id] = true
		}
	}
	for id := range s.wasServer {
		if !unknown[id] {
			delete(s.wasServer, id)
		}
	}
	var strays []string
	if len(unknown) > 0 {
		servers := n.raft.Status().Servers
		if len(servers) == 0 {
			return // configuration unknown: decide nothing
		}
		inConfig := map[string]bool{}
		for _, sv := range servers {
			inConfig[sv.ID] = true
		}
		for id := range unknown {
			switch {
			case inConfig[id]:
				s.wasServer[id] = true
			case s.wasServer[id]:
				strays = append(strays, id)
			}
		}
	}
	if !leader {
		clear(s.since)
		return
	}
	now := time.Now()
	for id := range s.since {
		if !slices.Contains(strays, id) {
			delete(s.since, id)
		}
	}
	for _, id := range strays {
		first, ok := s.since[id]
		switch {
		case !ok:
			s.since[id] = now
		case now.Sub(first) >= strayAfter:
			n.log.Info("registry names a node the cluster has given up: failing it", "peer", id)
			n.nodeFailed(id)
		}
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
