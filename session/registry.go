// Package session holds Switchboard's domain logic: the session registry
// state machine (who owns each user's stream, under which epoch) and the
// per-user message streams. It is pure: no clocks, sockets, goroutines or
// Raft. Time and randomness arrive inside commands, so applying the same
// commands in the same order always yields the same state.
package session

import (
	"errors"
	"sort"
)

// State says whether a user has a live connection at its owner.
type State uint8

// Session states.
const (
	Detached State = iota
	Attached
)

func (s State) String() string {
	if s == Attached {
		return "attached"
	}
	return "detached"
}

// Contract errors; they travel wrapped with %w and are mapped to HTTP status
// codes or close codes once, at the edge.
var (
	// ErrStaleEpoch means a command or append carried an epoch older than
	// the registry's (or the stream's fence): someone else owns the user now.
	ErrStaleEpoch = errors.New("stale epoch")
	// ErrNotOwner means the command's node does not own the user.
	ErrNotOwner = errors.New("not the owner")
	// ErrNotFound means the registry has no entry for the user.
	ErrNotFound = errors.New("session not found")
	// ErrSessionExpired means continuity for a resume is lost.
	ErrSessionExpired = errors.New("session expired")
	// ErrBadCommand means a command could not be decoded.
	ErrBadCommand = errors.New("bad command")
	// ErrGap means a stream cannot serve a resume point: messages after it
	// were dropped (window or count bound) or never reached this replica.
	ErrGap = errors.New("stream gap")
)

// Entry is the registry's record of one user.
type Entry struct {
	User    string
	Session string // stream instance id; a new one means continuity was lost
	Owner   string // node holding the stream
	Backup  string // node holding the replica ("" if none)
	Epoch   uint64 // fencing token, bumped by every ownership change
	State   State
	// Since is when State last changed (unix ms, from the command that changed it).
	Since int64
}

// Registry is the replicated map user → Entry. It is not safe for
// concurrent use: the consensus layer serialises Apply and guards reads.
type Registry struct {
	entries map[string]*Entry
	owned   map[string]int // node → number of entries it owns
	backed  map[string]int // node → number of entries naming it as backup
	// floor is the highest epoch any removed entry had. A user's next
	// entry starts above it, so epochs only ever grow and a stream fenced
	// before an expiry stays fenced after it.
	floor uint64
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{entries: make(map[string]*Entry), owned: make(map[string]int), backed: make(map[string]int)}
}

// Get returns a copy of the user's entry.
func (r *Registry) Get(user string) (Entry, bool) {
	e, ok := r.entries[user]
	if !ok {
		return Entry{}, false
	}
	return *e, true
}

// Len returns the number of entries.
func (r *Registry) Len() int { return len(r.entries) }

// Owned returns how many users node owns.
func (r *Registry) Owned(node string) int { return r.owned[node] }

// Named returns, in order, every node some entry names as its owner or
// its backup: the nodes whose failure the registry must hear of.
func (r *Registry) Named() []string {
	out := make([]string, 0, len(r.owned)+len(r.backed))
	for n := range r.owned {
		out = append(out, n)
	}
	for n := range r.backed {
		if r.owned[n] == 0 {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// Ownerless returns how many entries have no owner (node-failed cleared
// it): the leader's sweep is what retires them.
func (r *Registry) Ownerless() int {
	n := len(r.entries)
	for _, c := range r.owned {
		n -= c
	}
	return n
}

// nameBackup makes node ("" for none) e's backup, keeping backed in step.
func (r *Registry) nameBackup(e *Entry, node string) {
	if e.Backup == node {
		return
	}
	if e.Backup != "" {
		r.backed[e.Backup]--
		if r.backed[e.Backup] <= 0 {
			delete(r.backed, e.Backup)
		}
	}
	if node != "" {
		r.backed[node]++
	}
	e.Backup = node
}

// Each calls fn for every entry in user order until fn returns false.
// Sorting makes iteration deterministic; it is meant for admin paths and
// failure handling, not the per-message hot path.
func (r *Registry) Each(fn func(Entry) bool) {
	users := make([]string, 0, len(r.entries))
	for u := range r.entries {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, u := range users {
		if !fn(*r.entries[u]) {
			return
		}
	}
}

// Apply applies one command and returns its result. It is deterministic:
// it reads nothing but the registry and the command.
func (r *Registry) Apply(c Command) Result {
	switch c.Kind {
	case KindClaim:
		return r.claim(c)
	case KindAttach:
		return r.attach(c)
	case KindDetach:
		return r.detach(c)
	case KindSetBackup:
		return r.setBackup(c)
	case KindNodeFailed:
		return r.nodeFailed(c)
	case KindExpire:
		return r.expire(c)
	}
	return Result{Err: ErrBadCommand}
}

// claim moves ownership to c.Node if the entry's epoch still equals
// c.Epoch, 0 for a user without an entry (compare-and-set). A retried
// claim that already took effect (same node and session, the epoch it
// produced) succeeds again, so a proposer whose outcome was unknown can
// safely retry.
func (r *Registry) claim(c Command) Result {
	if c.Node == "" {
		return Result{Err: ErrBadCommand} // a claim names its claimant
	}
	e, ok := r.entries[c.User]
	cur := uint64(0)
	if ok {
		cur = e.Epoch
	}
	if cur != c.Epoch {
		// A user's first entry starts above the floor, not at 1, so its
		// retry is recognised by the command's own timestamp instead.
		retried := cur == c.Epoch+1 || c.Epoch == 0 && e.Since == c.Now
		if ok && retried && e.Owner == c.Node && e.Session == c.Session {
			return Result{Entry: *e}
		}
		return Result{Entry: entryOrZero(e), Err: ErrStaleEpoch}
	}
	if !ok {
		e = &Entry{User: c.User}
		r.entries[c.User] = e
		cur = r.floor
	} else if e.Owner != "" {
		r.owned[e.Owner]--
		if r.owned[e.Owner] <= 0 {
			delete(r.owned, e.Owner)
		}
	}
	e.Epoch = cur + 1
	e.Owner = c.Node
	e.Session = c.Session
	if e.Backup == c.Node {
		r.nameBackup(e, "")
	}
	if c.Backup != "" && c.Backup != c.Node {
		r.nameBackup(e, c.Backup)
	}
	r.owned[c.Node]++
	e.State = Detached
	if c.Attach {
		e.State = Attached
	}
	e.Since = c.Now
	return Result{Entry: *e}
}

// owns checks that c.Node owns the user at c.Epoch.
func (r *Registry) owns(c Command) (*Entry, Result, bool) {
	e, ok := r.entries[c.User]
	if !ok {
		return nil, Result{Err: ErrNotFound}, false
	}
	if e.Epoch != c.Epoch {
		return nil, Result{Entry: *e, Err: ErrStaleEpoch}, false
	}
	if e.Owner != c.Node {
		return nil, Result{Entry: *e, Err: ErrNotOwner}, false
	}
	return e, Result{}, true
}

func (r *Registry) attach(c Command) Result {
	e, res, ok := r.owns(c)
	if !ok {
		return res
	}
	if e.State != Attached {
		e.State, e.Since = Attached, c.Now
	}
	return Result{Entry: *e}
}

func (r *Registry) detach(c Command) Result {
	e, res, ok := r.owns(c)
	if !ok {
		return res
	}
	if e.State != Detached {
		e.State, e.Since = Detached, c.Now
	}
	return Result{Entry: *e}
}

// setBackup moves the replica to c.Backup and bumps the epoch: where the
// acknowledged messages live is part of what the fencing token guards, so
// a claimant whose view still names the old backup fails its
// compare-and-set instead of recovering from a stale replica.
func (r *Registry) setBackup(c Command) Result {
	e, res, ok := r.owns(c)
	if !ok {
		// A retry of a set-backup that already took effect (its outcome
		// was unknown to the proposer) succeeds again.
		if cur, found := r.entries[c.User]; found && cur.Owner == c.Node && cur.Backup == c.Backup &&
			c.Backup != "" && cur.Epoch == c.Epoch+1 {
			return Result{Entry: *cur}
		}
		return res
	}
	if c.Backup != c.Node && c.Backup != e.Backup {
		r.nameBackup(e, c.Backup)
		e.Epoch++
	}
	return Result{Entry: *e}
}

// nodeFailed records the leader's verdict that a node is gone: its users
// lose their owner (the epoch is bumped, fencing whatever that node still
// holds) and are detached so their resume window starts; it is forgotten
// as a backup. What a user's stream held survives at its backup, which the
// next claimant recovers it from; a user left with neither owner nor
// backup has lost continuity, and only then may a new session start.
func (r *Registry) nodeFailed(c Command) Result {
	n := 0
	for _, e := range r.entries {
		changed := false
		if e.Owner == c.Node {
			r.owned[e.Owner]--
			if r.owned[e.Owner] <= 0 {
				delete(r.owned, e.Owner)
			}
			e.Owner = ""
			e.Epoch++
			if e.State == Attached {
				e.State, e.Since = Detached, c.Now
			}
			changed = true
		}
		if e.Backup == c.Node {
			r.nameBackup(e, "")
			changed = true
		}
		if changed {
			n++
		}
	}
	return Result{Count: n}
}

// expire removes entries whose resume window has passed. With c.User set
// it is the owner retiring one user whose stream is empty and detached past
// the window (compare-and-set on owner and epoch). Without c.User it is the
// leader's sweep of users owned by the dead nodes in c.Nodes, or left
// without an owner by node-failed, which no owner is left to retire.
func (r *Registry) expire(c Command) Result {
	if c.User != "" {
		e, res, ok := r.owns(c)
		if !ok {
			return res
		}
		if e.State != Detached || c.Now-e.Since <= c.Window {
			return Result{Entry: *e}
		}
		r.remove(e)
		return Result{Count: 1}
	}
	dead := make(map[string]bool, len(c.Nodes))
	for _, n := range c.Nodes {
		dead[n] = true
	}
	n := 0
	for _, e := range r.entries {
		if (dead[e.Owner] || e.Owner == "") && e.State == Detached && c.Now-e.Since > c.Window {
			r.remove(e)
			n++
		}
	}
	return Result{Count: n}
}

func (r *Registry) remove(e *Entry) {
	r.floor = max(r.floor, e.Epoch)
	r.nameBackup(e, "")
	if e.Owner != "" {
		r.owned[e.Owner]--
		if r.owned[e.Owner] <= 0 {
			delete(r.owned, e.Owner)
		}
	}
	delete(r.entries, e.User)
}

func entryOrZero(e *Entry) Entry {
	if e == nil {
		return Entry{}
	}
	return *e
}
