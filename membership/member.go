package membership

import (
	"sort"
	"time"
)

// State of a member as seen by this node.
type State string

// Member states, as reported in the admin API.
const (
	// StateAlive: the node answers gossip probes.
	StateAlive State = "alive"
	// StateSuspect: a failure detector suspects the node. memberlist v0.6.0
	// exposes no suspicion event and no per-node state through its public API
	// (hashicorp/memberlist#293), so this Pool never reports it today; the value
	// exists because the admin API contract lists it.
	StateSuspect State = "suspect"
	// StateDead: the node stopped answering and was declared failed.
	StateDead State = "dead"
	// StateLeft: the node announced its departure, then left.
	StateLeft State = "left"
	// StateDraining: the node is alive but asks for no new work, because it
	// set Meta.Draining or has started a graceful leave.
	StateDraining State = "draining"
)

// Member is one node of the pool.
type Member struct {
	Meta
	GossipAddr string    // host:port
	State      State     // alive|dead|left, or draining for a live node that is draining or leaving
	Since      time.Time // when State last changed (local clock)
}

// Retention of members that are dead or have left: long enough for an
// operator to see what happened overnight, bounded so that churn (for example
// autoscaled nodes with fresh IDs) cannot grow the table without limit.
const (
	defaultGoneRetention = 24 * time.Hour
	defaultMaxGone       = 1024
)

// record is the table's view of one node.
type record struct {
	member  Member
	base    State // alive, dead or left: what memberlist told us
	leaving bool  // last gossiped meta carried the leaving flag
}

// table tracks members from memberlist events. It is pure (time is passed in)
// and not safe for concurrent use; Pool guards it.
type table struct {
	self      string
	retention time.Duration
	maxGone   int
	records   map[string]*record
}

func newTable(self string) *table {
	return &table{
		self:      self,
		retention: defaultGoneRetention,
		maxGone:   defaultMaxGone,
		records:   make(map[string]*record),
	}
}

// alive records that memberlist sees node id alive at addr with meta. It
// covers joins, rejoins after dead/left, and metadata updates, and reports
// whether anything visible changed.
func (t *table) alive(id, addr string, meta Meta, leaving bool, now time.Time) bool {
	meta.ID = id // the memberlist node name is authoritative
	r, ok := t.records[id]
	if !ok {
		r = &record{}
		t.records[id] = r
	}
	before := r.member
	r.base = StateAlive
	r.leaving = leaving
	r.member.Meta = meta
	r.member.GossipAddr = addr
	r.member.State = r.reported()
	if !ok || before.State != r.member.State {
		r.member.Since = now
	}
	t.prune(now)
	return !ok || before != r.member
}

// gone records that memberlist no longer sees node id: left if its last
// gossiped metadata announced a leave, dead otherwise.
func (t *table) gone(id, addr string, now time.Time) bool {
	r, ok := t.records[id]
	if !ok {
		// memberlist only reports departures of nodes it announced, but keep
		// the node rather than lose the event if that ever changes.
		r = &record{member: Member{Meta: Meta{ID: id}, GossipAddr: addr}}
		t.records[id] = r
	}
	before := r.member
	r.base = StateDead
	if r.leaving {
		r.base = StateLeft
	}
	r.member.State = r.reported()
	if !ok || before.State != r.member.State {
		r.member.Since = now
	}
	t.prune(now)
	return !ok || before != r.member
}

// reported maps the memberlist view and metadata to the State callers see.
func (r *record) reported() State {
	if r.base == StateAlive && (r.member.Draining || r.leaving) {
		return StateDraining
	}
	return r.base
}

// prune forgets dead and left members older than the retention, then the
// oldest of them beyond maxGone. The local node is never forgotten.
func (t *table) prune(now time.Time) {
	var gone []*record
	for id, r := range t.records {
		if r.base == StateAlive || id == t.self {
			continue
		}
		if now.Sub(r.member.Since) > t.retention {
			delete(t.records, id)
			continue
		}
		gone = append(gone, r)
	}
	if len(gone) <= t.maxGone {
		return
	}
	sort.Slice(gone, func(i, j int) bool { return gone[i].member.Since.Before(gone[j].member.Since) })
	for _, r := range gone[:len(gone)-t.maxGone] {
		delete(t.records, r.member.ID)
	}
}

// get returns a copy of member id.
func (t *table) get(id string) (Member, bool) {
	r, ok := t.records[id]
	if !ok {
		return Member{}, false
	}
	return r.member, true
}

// list returns copies of all members sorted by ID.
func (t *table) list() []Member {
	out := make([]Member, 0, len(t.records))
	for _, r := range t.records {
		out = append(out, r.member)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
