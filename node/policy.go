package node

import (
	"slices"
	"time"

	"github.com/switchboard/switchboard/membership"
)

// The cluster's failure policy, as a pure decision: the control loop
// (control.go) shows it the cluster at one instant and performs what it
// returns. It reads no clock, makes no call and logs nothing, so every rule
// can be tested as a table, and no decision waits on I/O.

// rejoinEvery is how often members gossip declared dead are contacted
// again. After a partition heals, memberlist on each side may keep the
// other side dead; a join merges the two views again (as Serf does).
const rejoinEvery = 5 * time.Second

// cutOffAfter is how long a node may know no Raft leader before it sends
// its clients elsewhere: it is on the minority side of a partition (or
// the cluster lost quorum), where nothing can be claimed or moved, while
// the majority side can serve those users with their streams.
const cutOffAfter = 3 * time.Second

// strayAfter is how long the leader must see a node as a stray before it
// fails it, so that placement's view and its own agree for a while.
const strayAfter = 5 * time.Second

// sweepEvery is how often the leader repeats node-failed for the members
// that are down, in case a previous leader did not finish, and sweeps the
// entries nobody is left to retire.
const sweepEvery = 10 * time.Second

// clusterView is what the policy sees of the cluster at one instant.
type clusterView struct {
	now       time.Time
	members   []membership.Member // gossip's members, this node and the dead and left included
	leading   bool                // this node leads Raft
	leader    string              // id of the known Raft leader, "" while none is
	servers   []string            // ids in the Raft configuration, none when it is unknown
	proven    map[string]string   // peers that proved themselves on the cluster port: id → address (proof.go)
	named     []string            // nodes the registry names as an owner or a backup
	ownerless bool                // some registry entry has no owner
	draining  bool                // this node is draining
}

// clusterPolicy is the failure policy's remembered state. decide moves it
// on; only seedsSaved, which reports an outcome, changes it otherwise.
type clusterPolicy struct {
	self string

	known      map[string]membership.State // each member's state when last seen
	wasServer  map[string]bool             // unknown to gossip, seen in the Raft configuration
	straySince map[string]time.Time        // strays, since when (while this node leads)
	lastSweep  time.Time
	lastRejoin time.Time
	leaderless time.Time // since when no Raft leader is known; zero while one is
	shed       bool      // clients were sent away for want of a leader
	seeds      []string  // the live peers' gossip addresses last saved
}

// newClusterPolicy starts the policy at start: the first rejoin and the
// first sweep come one period after it, not at once.
func newClusterPolicy(self string, start time.Time) *clusterPolicy {
	return &clusterPolicy{
		self:       self,
		known:      map[string]membership.State{},
		wasServer:  map[string]bool{},
		straySince: map[string]time.Time{},
		lastSweep:  start,
		lastRejoin: start,
	}
}

// An action is one thing the policy decided, for the control loop to do.
type action interface{ isAction() }

type (
	// saveSeeds: the live peers' gossip addresses changed; remember them
	// for the next start (then report it with seedsSaved).
	saveSeeds struct{ addrs []string }
	// rejoin: join again the members gossip declared dead.
	rejoin struct{ addrs []string }
	// shedClients: no Raft leader for too long; send clients elsewhere.
	shedClients struct{ leaderless time.Duration }
	// reconcile: the leader places Raft voters after gossip's members,
	// leaving out those that have not proved themselves.
	reconcile struct{ members []membership.Member }
	// prove: ask a peer to prove itself on the cluster port at addr.
	prove struct{ node, addr string }
	// nodeUp: a member is alive again; use it at once.
	nodeUp struct{ node string }
	// rebackup: a member is draining; move the replicas it holds.
	rebackup struct{ node string }
	// nodeDown: a member became dead or left.
	nodeDown struct {
		node  string
		state membership.State
	}
	// nodeFailed: record node-failed for node (the leader only). stray
	// says it is a node the registry names that gossip does not know.
	nodeFailed struct {
		node  string
		stray bool
	}
	// sweep: retire the expired entries of the dead nodes and the
	// ownerless ones.
	sweep struct{ dead []string }
)

func (saveSeeds) isAction()   {}
func (rejoin) isAction()      {}
func (shedClients) isAction() {}
func (reconcile) isAction()   {}
func (prove) isAction()       {}
func (nodeUp) isAction()      {}
func (rebackup) isAction()    {}
func (nodeDown) isAction()    {}
func (nodeFailed) isAction()  {}
func (sweep) isAction()       {}

// decide moves the policy on to the view v and returns what to do, in
// order.
func (p *clusterPolicy) decide(v clusterView) []action {
	var out []action
	if seeds := liveGossipAddrs(p.self, v.members); len(seeds) > 0 && !slices.Equal(seeds, p.seeds) {
		out = append(out, saveSeeds{addrs: seeds})
	}
	if v.now.Sub(p.lastRejoin) > rejoinEvery {
		p.lastRejoin = v.now
		if addrs := deadGossipAddrs(p.self, v.members); len(addrs) > 0 {
			out = append(out, rejoin{addrs: addrs})
		}
	}
	out = p.cutOff(v, out)
	if v.leading {
		out = append(out, reconcile{members: provenMembers(p.self, v)})
	}
	var down []string
	down, out = p.follow(v, out)
	out = p.proveAll(v, out) // after follow: a peer back up leaves its dial backoff first
	out = p.failStrays(v, out)
	if v.leading && v.now.Sub(p.lastSweep) > sweepEvery {
		p.lastSweep = v.now
		for _, id := range down {
			out = append(out, nodeFailed{node: id}) // idempotent: repeats what an earlier leader may have missed
		}
		if len(down) > 0 || v.ownerless {
			out = append(out, sweep{dead: down})
		}
	}
	return out
}

// provenMembers is v.members without the live peers that have not proved
// themselves at the cluster address they gossip: to Raft placement those
// look absent, so they are never added, and a server that cannot prove
// itself at a new address is removed after the grace of a dead one. Dead
// and departed members stay, so placement sees how they went.
func provenMembers(self string, v clusterView) []membership.Member {
	out := make([]membership.Member, 0, len(v.members))
	for _, m := range v.members {
		if m.ID == self || !usable(m.State) || v.proven[m.ID] == m.ClusterAddr && m.ClusterAddr != "" {
			out = append(out, m)
		}
	}
	return out
}

// proveAll asks every live peer that has not proved itself at its
// cluster address to do so; every node does, so that whoever leads next
// knows already.
func (p *clusterPolicy) proveAll(v clusterView, out []action) []action {
	for _, m := range v.members {
		if m.ID != p.self && usable(m.State) && m.ClusterAddr != "" && v.proven[m.ID] != m.ClusterAddr {
			out = append(out, prove{node: m.ID, addr: m.ClusterAddr})
		}
	}
	return out
}

// seedsSaved records that seeds were saved. Until then decide keeps
// asking, so a failed write is tried again.
func (p *clusterPolicy) seedsSaved(seeds []string) { p.seeds = seeds }

// liveGossipAddrs returns the usable peers' gossip addresses, sorted.
func liveGossipAddrs(self string, members []membership.Member) []string {
	var out []string
	for _, m := range members {
		if m.ID != self && usable(m.State) && m.GossipAddr != "" {
			out = append(out, m.GossipAddr)
		}
	}
	slices.Sort(out)
	return out
}

// deadGossipAddrs returns the gossip addresses of the peers gossip
// declared dead (not those that left: they meant to).
func deadGossipAddrs(self string, members []membership.Member) []string {
	var out []string
	for _, m := range members {
		if m.ID != self && m.State == membership.StateDead && m.GossipAddr != "" {
			out = append(out, m.GossipAddr)
		}
	}
	return out
}

// cutOff sheds the clients once when no Raft leader has been known for
// cutOffAfter, unless this node is draining (it sends them away itself).
func (p *clusterPolicy) cutOff(v clusterView, out []action) []action {
	switch {
	case v.leader != "":
		p.leaderless, p.shed = time.Time{}, false
	case p.leaderless.IsZero():
		p.leaderless, p.shed = v.now, false
	case !p.shed && v.now.Sub(p.leaderless) > cutOffAfter && !v.draining:
		p.shed = true
		out = append(out, shedClients{leaderless: v.now.Sub(p.leaderless)})
	}
	return out
}

// follow compares each member's state with the one last seen, and returns
// the peers that are down (dead or left) with the actions for the changes.
func (p *clusterPolicy) follow(v clusterView, out []action) ([]string, []action) {
	var down []string
	for _, m := range v.members {
		prev, seen := p.known[m.ID]
		p.known[m.ID] = m.State
		if m.ID != p.self && m.State == membership.StateAlive && seen && prev != m.State {
			// Back (restarted or healed): links to it may sit in a dial
			// backoff from when it was gone.
			out = append(out, nodeUp{node: m.ID})
		}
		if m.ID != p.self && m.State == membership.StateDraining && prev != m.State {
			out = append(out, rebackup{node: m.ID}) // it is leaving: replicas move before it goes
		}
		if m.ID == p.self || usable(m.State) {
			continue
		}
		down = append(down, m.ID)
		if !seen || prev != m.State {
			out = append(out, nodeDown{node: m.ID, state: m.State})
			if v.leading {
				out = append(out, nodeFailed{node: m.ID})
			}
		}
	}
	return down, out
}

// failStrays fails, on the leader, every node that has been a stray for
// strayAfter.
//
// A stray is a node the registry names as an owner or a backup that gossip
// does not know at all. Gossip only lists as dead the nodes it saw die, so
// a node that never came back after a full-cluster restart is unknown to
// it, no node-failed would ever clear it, and every user it owned or backed
// up would wait for it forever (503/1013) instead of being told that
// continuity is lost. Such a node is a stray once placement has removed it
// from the Raft configuration (after DeadServerGrace): the cluster has
// given it up. A name this node never saw in the configuration is no node
// of this cluster as far as it knows, and is left alone.
func (p *clusterPolicy) failStrays(v clusterView, out []action) []action {
	known := map[string]bool{p.self: true}
	for _, m := range v.members {
		known[m.ID] = true
	}
	unknown := map[string]bool{}
	var unknownIDs []string // in the registry's order, so the decision is deterministic
	for _, id := range v.named {
		if !known[id] && !unknown[id] {
			unknown[id] = true
			unknownIDs = append(unknownIDs, id)
		}
	}
	for id := range p.wasServer {
		if !unknown[id] {
			delete(p.wasServer, id)
		}
	}
	var strays []string
	if len(unknownIDs) > 0 {
		if len(v.servers) == 0 {
			return out // configuration unknown: decide nothing
		}
		for _, id := range unknownIDs {
			switch {
			case slices.Contains(v.servers, id):
				p.wasServer[id] = true
			case p.wasServer[id]:
				strays = append(strays, id)
			}
		}
	}
	if !v.leading {
		clear(p.straySince)
		return out
	}
	for id := range p.straySince {
		if !slices.Contains(strays, id) {
			delete(p.straySince, id)
		}
	}
	for _, id := range strays {
		first, ok := p.straySince[id]
		switch {
		case !ok:
			p.straySince[id] = v.now
		case v.now.Sub(first) >= strayAfter:
			out = append(out, nodeFailed{node: id, stray: true})
		}
	}
	return out
}
