package session

import (
	"maps"
	"slices"
)

// Member is one user of a channel's presence set: Conns counts its
// connections subscribed with presence.
type Member struct {
	User  string
	Conns int
}

// Presence is a channel's presence set as its owner keeps it: each node
// reports the members its connections make (the whole set, numbered by
// gen so that an older report never overwrites a newer one), and a user
// is present while any node reports it. Join and leave are the users
// whose presence starts or ends with a change.
//
// A report is a lease: a node whose last report for the channel is older
// than the lease (Expire) has its members dropped, as if it had died.
// Nodes report again well within the lease while they live, so a node
// that stops reporting — dead, cut off, or no longer counting this node
// as the owner — loses its members one lease after its last report,
// whether or not it is ever declared dead (Drop).
type Presence struct {
	nodes map[string]nodePresence
	total map[string]int // user → connections over all nodes
}

type nodePresence struct {
	gen     uint64
	heard   int64 // when the report was taken, in the caller's milliseconds
	members map[string]int
}

// NewPresence returns an empty presence set.
func NewPresence() *Presence {
	return &Presence{nodes: make(map[string]nodePresence), total: make(map[string]int)}
}

// Report replaces node's members with members (user → connections) as of
// gen, taken at now (milliseconds on the caller's clock, the one Expire
// is given), and returns who joined and who left, each sorted. A report
// older than the last one taken from node changes nothing, and does not
// renew its lease.
func (p *Presence) Report(node string, gen uint64, now int64, members map[string]int) (joins, leaves []string) {
	old, ok := p.nodes[node]
	if ok && gen < old.gen {
		return nil, nil
	}
	kept := make(map[string]int, len(members))
	for u, n := range members {
		if n > 0 {
			kept[u] = n
		}
	}
	if len(kept) == 0 {
		delete(p.nodes, node)
	} else {
		p.nodes[node] = nodePresence{gen: gen, heard: now, members: kept}
	}
	if !ok && len(kept) == 0 {
		return nil, nil
	}
	for u, n := range old.members {
		if kept[u] == 0 {
			if p.total[u] -= n; p.total[u] <= 0 {
				delete(p.total, u)
				leaves = append(leaves, u)
			}
		}
	}
	for u, n := range kept {
		was := p.total[u]
		p.total[u] += n - old.members[u]
		if was == 0 && p.total[u] > 0 {
			joins = append(joins, u)
		}
	}
	slices.Sort(joins)
	slices.Sort(leaves)
	return joins, leaves
}

// Drop forgets node's members (it died or left) and returns who left.
func (p *Presence) Drop(node string) (leaves []string) {
	_, leaves = p.Report(node, ^uint64(0), 0, nil)
	return leaves
}

// Expire drops the members of every node whose last report was taken
// lease or more before now (its lease ran out: no report since), and
// returns who left, sorted.
func (p *Presence) Expire(now, lease int64) (leaves []string) {
	var expired []string
	for node, np := range p.nodes {
		if now-np.heard >= lease {
			expired = append(expired, node)
		}
	}
	for _, node := range expired {
		leaves = append(leaves, p.Drop(node)...)
	}
	slices.Sort(leaves)
	return leaves
}

// Members lists the present users by user id.
func (p *Presence) Members() []Member {
	out := make([]Member, 0, len(p.total))
	for _, u := range slices.Sorted(maps.Keys(p.total)) {
		out = append(out, Member{User: u, Conns: p.total[u]})
	}
	return out
}

// Empty reports whether no node reports anyone.
func (p *Presence) Empty() bool { return len(p.nodes) == 0 }
