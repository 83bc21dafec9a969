package consensus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Member is what placement needs to know about a gossip member.
type Member struct {
	ID, Addr, Region, Zone string
	State                  string // one of the Member* states
}

// Member states, as gossip reports them.
const (
	MemberAlive    = "alive"
	MemberSuspect  = "suspect"
	MemberDraining = "draining"
	MemberDead     = "dead"
	MemberLeft     = "left"
)

// configChangeTimeout bounds handing a configuration change to Raft.
const configChangeTimeout = 5 * time.Second

// placementState is the leader-local memory placement needs between calls.
type placementState struct {
	mu        sync.Mutex           // serialises Reconcile
	deadSince map[string]time.Time // server ID → first seen dead or missing from gossip
}

// Reconcile converges the Raft configuration on the gossip membership. It
// acts only on the leader and is a no-op elsewhere; call it periodically and
// on membership events. One change is applied at a time, each waiting for
// its commit, until the configuration matches the plan:
//   - a server whose member left is removed at once; one dead, or missing
//     from gossip, for DeadServerGrace (counted from when this leader first
//     saw it so) is removed;
//   - while fewer than MaxVoters voters exist, the best alive member is made
//     a voter (preferring a region, then a zone, not yet holding a voter);
//     other alive members join as nonvoters;
//   - a draining voter, or a voter whose replacement would spread voters
//     over more regions or zones, is swapped for a nonvoter: promote first,
//     then demote, so the voter count never dips;
//   - no change may leave the alive voters short of a quorum of the new
//     configuration; suspect members count as not alive there;
//   - this node is never removed: if its member left, leadership is
//     transferred instead.
//
// Draining members count as alive but are never promoted.
func (r *Raft) Reconcile(members []Member) error {
	if !r.IsLeader() {
		return nil
	}
	r.placement.mu.Lock()
	defer r.placement.mu.Unlock()

	byID := make(map[string]Member, len(members))
	for _, m := range members {
		if m.ID != "" {
			byID[m.ID] = m
		}
	}
	maxSteps := 2*len(members) + 8
	for range maxSteps {
		f := r.raft.GetConfiguration()
		if err := f.Error(); err != nil {
			return fmt.Errorf("consensus: reconcile: configuration: %w", err)
		}
		servers := f.Configuration().Servers
		now := time.Now()
		r.placement.track(now, r.cfg.NodeID, servers, byID)
		a := plan(planInput{
			self:      r.cfg.NodeID,
			servers:   servers,
			members:   byID,
			deadSince: r.placement.deadSince,
			now:       now,
			grace:     r.cfg.DeadServerGrace,
			maxVoters: r.cfg.MaxVoters,
		})
		if a.kind == actNone {
			return nil
		}
		r.log.Info("placement change", "action", a.kind.String(), "server", a.id, "addr", a.addr, "reason", a.reason)
		if err := r.execute(a, f.Index()); err != nil {
			return err
		}
		if a.kind == actTransfer {
			return nil // no longer the leader
		}
	}
	return nil
}

func (r *Raft) execute(a action, prevIndex uint64) error {
	id, addr := raft.ServerID(a.id), raft.ServerAddress(a.addr)
	var err error
	switch a.kind {
	case actAddVoter:
		err = r.await(context.Background(), r.raft.AddVoter(id, addr, prevIndex, configChangeTimeout))
	case actAddNonvoter:
		err = r.await(context.Background(), r.raft.AddNonvoter(id, addr, prevIndex, configChangeTimeout))
	case actRemove:
		err = r.await(context.Background(), r.raft.RemoveServer(id, prevIndex, configChangeTimeout))
	case actDemote:
		err = r.await(context.Background(), r.raft.DemoteVoter(id, prevIndex, configChangeTimeout))
	case actTransfer:
		return r.TransferLeadership()
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: reconcile %s %s: %w", ErrNotLeader, a.kind, a.id, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: reconcile: %w", ErrClosed, err)
	default:
		return fmt.Errorf("consensus: reconcile %s %s: %w", a.kind, a.id, err)
	}
}

// track records since when each server other than self has been dead or
// missing from gossip, and forgets servers that recovered or are gone.
func (p *placementState) track(now time.Time, self string, servers []raft.Server, members map[string]Member) {
	inConfig := make(map[string]bool, len(servers))
	for _, s := range servers {
		id := string(s.ID)
		inConfig[id] = true
		m, ok := members[id]
		if id != self && (!ok || m.State == MemberDead) {
			if _, seen := p.deadSince[id]; !seen {
				p.deadSince[id] = now
			}
			continue
		}
		delete(p.deadSince, id)
	}
	for id := range p.deadSince {
		if !inConfig[id] {
			delete(p.deadSince, id)
		}
	}
}

type actionKind int

const (
	actNone actionKind = iota
	actAddVoter
	actAddNonvoter
	actRemove
	actDemote
	actTransfer
)

func (k actionKind) String() string {
	return [...]string{"none", "add-voter", "add-nonvoter", "remove", "demote", "transfer-leadership"}[k]
}

// action is one configuration change.
type action struct {
	kind     actionKind
	id, addr string
	reason   string
}

type planInput struct {
	self      string
	servers   []raft.Server
	members   map[string]Member
	deadSince map[string]time.Time
	now       time.Time
	grace     time.Duration
	maxVoters int
}

// node is a server or member as the planner sees it.
type node struct {
	id, addr     string
	region, zone string
	state        string // member state; "" when gossip does not know it
	voter        bool
	inConfig     bool
}

// alive counts toward quorum: gossip sees it up (draining nodes still serve).
func (n node) alive(self string) bool {
	return n.id == self || n.state == MemberAlive || n.state == MemberDraining
}

// promotable may become a voter.
func (n node) promotable() bool { return n.state == MemberAlive && n.addr != "" }

// plan returns the next configuration change, or actNone. It is pure: the
// same input always gives the same action.
func plan(in planInput) action {
	var voters, nonvoters []node
	inConfig := make(map[string]bool, len(in.servers))
	for _, s := range in.servers {
		m, ok := in.members[string(s.ID)]
		n := node{id: string(s.ID), addr: string(s.Address), voter: s.Suffrage == raft.Voter, inConfig: true}
		if ok {
			n.region, n.zone, n.state = m.Region, m.Zone, m.State
			if m.Addr != "" {
				n.addr = m.Addr
			}
		}
		inConfig[n.id] = true
		if n.voter {
			voters = append(voters, n)
		} else {
			nonvoters = append(nonvoters, n)
		}
	}
	byID := func(a, b node) int { return cmp.Compare(a.id, b.id) }
	slices.SortFunc(voters, byID)
	slices.SortFunc(nonvoters, byID)

	// 1. Remove servers that left, or stayed dead past the grace period.
	removable := func(n node) (string, bool) {
		if n.state == MemberLeft {
			return "member left", true
		}
		since, tracked := in.deadSince[n.id]
		if n.id != in.self && (n.state == "" || n.state == MemberDead) && tracked && in.now.Sub(since) >= in.grace {
			return fmt.Sprintf("dead for %s", in.now.Sub(since).Round(time.Second)), true
		}
		return "", false
	}
	for _, n := range nonvoters {
		if reason, ok := removable(n); ok {
			return action{kind: actRemove, id: n.id, reason: reason}
		}
	}
	for _, n := range voters {
		reason, ok := removable(n)
		if !ok {
			continue
		}
		if n.id == in.self {
			if len(voters) > 1 {
				return action{kind: actTransfer, id: n.id, reason: "this node " + reason}
			}
			continue
		}
		if quorumSafe(without(voters, n.id), in.self) {
			return action{kind: actRemove, id: n.id, reason: reason}
		}
	}

	// 2. Too many voters (the second half of a swap, or MaxVoters was
	// lowered): demote the voter whose departure leaves the best set.
	if len(voters) > in.maxVoters {
		best, found := node{}, false
		var bestScore score
		for _, v := range voters {
			if v.id == in.self {
				continue
			}
			rest := without(voters, v.id)
			if !quorumSafe(rest, in.self) {
				continue
			}
			if s := scoreOf(rest, in.self); !found || s.better(bestScore) {
				best, bestScore, found = v, s, true
			}
		}
		if found {
			return action{kind: actDemote, id: best.id, reason: "more voters than MaxVoters"}
		}
	}

	// Candidates for a vote: alive, not draining; nonvoters already in the
	// configuration and alive members not in it yet.
	var candidates []node
	for _, n := range nonvoters {
		if n.promotable() {
			candidates = append(candidates, n)
		}
	}
	var newcomers []node
	for _, m := range in.members {
		if !inConfig[m.ID] && m.State == MemberAlive && m.Addr != "" {
			newcomers = append(newcomers, node{id: m.ID, addr: m.Addr, region: m.Region, zone: m.Zone, state: m.State})
		}
	}
	slices.SortFunc(newcomers, byID)
	candidates = append(candidates, newcomers...)

	// 3. Too few voters: add the candidate that spreads voters best.
	if len(voters) < in.maxVoters {
		best, found := node{}, false
		var bestScore score
		for _, c := range candidates {
			if s := scoreOf(append(slices.Clip(voters), c), in.self); !found || s.better(bestScore) {
				best, bestScore, found = c, s, true
			}
		}
		if found {
			return action{kind: actAddVoter, id: best.id, addr: best.addr, reason: "fewer voters than MaxVoters"}
		}
	}

	// 4. Other alive members join as nonvoters, to hold a replica.
	if len(newcomers) > 0 {
		n := newcomers[0]
		return action{kind: actAddNonvoter, id: n.id, addr: n.addr, reason: "new member"}
	}

	// 5. A server whose member now advertises another address is re-added
	// with its suffrage, which updates the address.
	for _, n := range append(slices.Clip(voters), nonvoters...) {
		s := in.servers[slices.IndexFunc(in.servers, func(s raft.Server) bool { return string(s.ID) == n.id })]
		if n.id != in.self && n.state == MemberAlive && n.addr != string(s.Address) {
			kind := actAddNonvoter
			if n.voter {
				kind = actAddVoter
			}
			return action{kind: kind, id: n.id, addr: n.addr, reason: "address changed"}
		}
	}

	// 6. Swap a voter for a nonvoter when that spreads voters better (or
	// replaces a draining voter). Only while every voter is alive: a dead
	// voter is waited for until its grace expires, then removed by step 1.
	if len(voters) == in.maxVoters && allAlive(voters, in.self) {
		current := scoreOf(voters, in.self)
		best, found := node{}, false
		var bestScore score
		for _, c := range candidates {
			if !c.inConfig {
				continue // let it receive the log as a nonvoter first
			}
			for _, v := range voters {
				if v.id == in.self {
					continue
				}
				swapped := append(without(voters, v.id), c)
				s := scoreOf(swapped, in.self)
				if s.better(current) && (!found || s.better(bestScore)) {
					best, bestScore, found = c, s, true
				}
			}
		}
		if found {
			return action{kind: actAddVoter, id: best.id, addr: best.addr, reason: "better voter placement"}
		}
	}
	return action{}
}

func without(nodes []node, id string) []node {
	out := make([]node, 0, len(nodes))
	for _, n := range nodes {
		if n.id != id {
			out = append(out, n)
		}
	}
	return out
}

func allAlive(nodes []node, self string) bool {
	for _, n := range nodes {
		if !n.alive(self) {
			return false
		}
	}
	return true
}

// quorumSafe reports whether the alive voters of a configuration with these
// voters form a quorum of it.
func quorumSafe(voters []node, self string) bool {
	alive := 0
	for _, v := range voters {
		if v.alive(self) {
			alive++
		}
	}
	return len(voters) > 0 && alive >= len(voters)/2+1
}

// score ranks voter sets: more alive voters, then more not draining, then
// more distinct regions, then more distinct zones.
type score [4]int

func (s score) better(o score) bool { return slices.Compare(s[:], o[:]) > 0 }

func scoreOf(voters []node, self string) score {
	var s score
	regions := make(map[string]bool, len(voters))
	zones := make(map[[2]string]bool, len(voters))
	for _, v := range voters {
		if v.alive(self) {
			s[0]++
		}
		if v.state != MemberDraining {
			s[1]++
		}
		regions[v.region] = true
		zones[[2]string{v.region, v.zone}] = true
	}
	s[2], s[3] = len(regions), len(zones)
	return s
}
