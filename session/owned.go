package session

import (
	"errors"
	"fmt"
	"slices"
)

// ErrSealed means an owned stream was fenced for a newer owner: whoever
// used it routes again, to wherever the stream is now.
var ErrSealed = errors.New("stream sealed")

// Replication is what an owner sends its backup: the appends not yet
// replicated, or (Full) everything the stream holds.
type Replication struct {
	Key     Key
	Session string
	Epoch   uint64
	Last    uint64 // highest seq the backup holds once it has applied this
	Full    bool
	Msgs    []Message
}

// Tail is everything a node holds of a stream, for a new owner.
type Tail struct {
	Session string
	Last    uint64
	Msgs    []Message
	// Kept says the backup that sent it kept exactly these messages as the
	// new owner's replica, so the new owner need not copy them back.
	Kept bool
}

// TailOf returns everything s holds.
func TailOf(s *Stream) Tail {
	msgs, _ := s.Since(s.Last() - uint64(s.Len()))
	return Tail{Session: s.Session, Last: s.Last(), Msgs: msgs}
}

// Effects is what the owner of a stream must do after an event, in this
// order: deliver, close and evict, then record. The caller performs them;
// Owned itself does no I/O.
type Effects struct {
	// Deliver are messages just acknowledged, in seq order: for every
	// local connection, and for every node in To.
	Deliver []Message
	To      []string
	// Close are local connections to end, and Evict the nodes whose
	// attached connections must end: the stream moved, or (Lost) its
	// continuity was lost.
	Close []uint64
	Evict []string
	Lost  bool
	// Record is the attached/detached state to record in the registry
	// (KindAttach or KindDetach), 0 for none.
	Record Kind
}

// Owned is one stream as its owner runs it: the log (a Stream) plus what
// replication and delivery decide on. Fed events — appends, the backup's
// answers, connections attaching and leaving, seals — it returns what to
// send and to whom (Effects). It holds no locks, clocks or sockets; the
// caller serializes calls and performs the effects.
//
// The rules it keeps:
//   - an append is stored at once (it gets its seq) but is acknowledged —
//     answered, delivered, replayed — only once the backup holds it too
//     (acked is the highest seq on both nodes);
//   - messages are delivered in seq order, each once, to every local
//     connection and once to every attached node;
//   - once sealed for a newer epoch it acknowledges nothing more, and it
//     refuses a seal or handoff that is not newer than its own epoch.
type Owned struct {
	key      Key
	s        *Stream
	acked    uint64
	pending  []Message // appended, not yet acknowledged, in seq order
	flushing bool
	backup   string
	// lastFailed is the backup a replication last failed to reach; gossip
	// may call it alive for seconds yet, so the next choice avoids it.
	lastFailed string
	fullCopy   bool // the backup needs the whole stream, not just pending
	sealed     bool

	locals map[uint64]struct{}
	// remotes are the nodes with connections attached, by the nonce of
	// their attachment; a node a delivery failed to reach is not live: it
	// gets no more deliveries, and the tips tell it to send its
	// connections to resume.
	remotes map[string]remote
	// idleSince is when the last connection went (unix ms); 0 while any
	// is attached.
	idleSince int64
	// releasedUntil: until then (unix ms) the stream is promised to
	// another node's takeover and takes no local connection.
	releasedUntil int64
}

// NewOwned wraps a stream its owner just took over. Everything in it is
// unacknowledged until a first replication copies it to a backup, unless
// replicated says backup already holds exactly this content (a backup that
// kept its sealed replica for this owner). attached says the registry
// already records a connection (the claim did).
func NewOwned(key Key, s *Stream, backup string, replicated, attached bool, now int64) *Owned {
	o := &Owned{
		key: key, s: s, backup: backup, fullCopy: true,
		locals: map[uint64]struct{}{}, remotes: map[string]remote{}, idleSince: now,
	}
	if attached {
		o.idleSince = 0
	}
	if replicated && backup != "" {
		o.fullCopy = false
		o.acked = s.Last()
		return o
	}
	if msgs, err := s.Since(s.Last() - uint64(s.Len())); err == nil {
		o.pending = msgs
	}
	o.acked = s.Last() - uint64(len(o.pending))
	return o
}

// Session is the stream's session id.
func (o *Owned) Session() string { return o.s.Session }

// Epoch is the registry epoch the stream is held under.
func (o *Owned) Epoch() uint64 { return o.s.Epoch }

// Acked is the highest acknowledged seq: what clients are shown.
func (o *Owned) Acked() uint64 { return o.acked }

// Backup is the node replicating the stream, "" while none is chosen.
func (o *Owned) Backup() string { return o.backup }

// Sealed reports whether the stream was fenced for a newer owner.
func (o *Owned) Sealed() bool { return o.sealed }

// Flushing reports whether a replication is in flight.
func (o *Owned) Flushing() bool { return o.flushing }

// Append stores a message (or finds the one stored under its id within
// the idempotency window) and returns it; it is acknowledged later.
func (o *Owned) Append(id string, data []byte, now int64) (Message, error) {
	if o.sealed {
		return Message{}, ErrSealed
	}
	m, dup, err := o.s.Append(id, data, now)
	if err != nil {
		return Message{}, err
	}
	if !dup {
		o.pending = append(o.pending, m)
	}
	return m, nil
}

// NeedsReplication says whether something is not yet on the backup.
func (o *Owned) NeedsReplication() bool {
	return !o.sealed && (o.fullCopy || o.acked < o.s.Last())
}

// BeginFlush starts a replication, unless one is in flight (ok false).
// needBackup says no backup is chosen yet: the caller picks one (avoiding
// LastFailed) and reports it with UseBackup or, as the only server of the
// cluster, AckAlone. EndFlush ends it.
func (o *Owned) BeginFlush() (needBackup, ok bool) {
	if o.flushing || o.sealed {
		return false, false
	}
	o.flushing = true
	return o.backup == "", true
}

// BeginPlainFlush starts the replication of pending appends to a known
// backup, the shape many streams' replications share in one call; ok is
// false for anything else (no backup, a full copy due, a flush in flight).
func (o *Owned) BeginPlainFlush() (Replication, string, bool) {
	if o.sealed || o.flushing || o.backup == "" || o.fullCopy || len(o.pending) == 0 {
		return Replication{}, "", false
	}
	o.flushing = true
	return o.Replication(), o.backup, true
}

// EndFlush ends the replication BeginFlush or BeginPlainFlush started.
func (o *Owned) EndFlush() { o.flushing = false }

// LastFailed is the backup a replication last failed to reach.
func (o *Owned) LastFailed() string { return o.lastFailed }

// UseBackup records the backup the caller chose (and the registry
// recorded at epoch): it gets the whole stream.
func (o *Owned) UseBackup(node string, epoch uint64) error {
	if o.sealed {
		return ErrSealed
	}
	o.s.Adopt(epoch)
	o.backup, o.fullCopy = node, true
	return nil
}

// AckAlone acknowledges everything with this node's copy alone: only for
// the only server of a cluster, whose durability is its own process.
func (o *Owned) AckAlone() Effects {
	if o.sealed {
		return Effects{}
	}
	o.fullCopy = false
	return o.ack(o.s.Last())
}

// Replication is what the backup needs now: the pending appends, or the
// whole stream when it needs a full copy.
func (o *Owned) Replication() Replication {
	r := Replication{Key: o.key, Session: o.s.Session, Epoch: o.s.Epoch, Full: o.fullCopy}
	if r.Full {
		t := TailOf(o.s)
		r.Last, r.Msgs = t.Last, t.Msgs
	} else {
		r.Msgs = slices.Clone(o.pending)
		r.Last = o.s.Last()
	}
	if len(r.Msgs) > 0 {
		r.Last = r.Msgs[len(r.Msgs)-1].Seq
	}
	return r
}

// Replicated applies backup's answer to r: success acknowledges (and
// delivers) what r carried; a stale epoch means the stream was taken over
// (it is sealed, ErrSealed); a gap asks for a full copy; any other failure
// drops the backup so that the next flush chooses another. The error is
// what the flush achieved: nil only when r is on the backup.
func (o *Owned) Replicated(r Replication, backup string, err error) (Effects, error) {
	if o.sealed {
		return Effects{}, ErrSealed // a new owner took over meanwhile
	}
	switch {
	case err == nil:
		if backup == o.backup {
			o.fullCopy = false
		}
		return o.ack(r.Last), nil
	case errors.Is(err, ErrStaleEpoch):
		eff, _ := o.Seal(o.s.Epoch+1, false)
		return eff, fmt.Errorf("%w: backup %s refused an append: %w", ErrSealed, backup, err)
	case errors.Is(err, ErrGap):
		o.fullCopy = true
	default:
		if backup == o.backup {
			o.backup, o.lastFailed = "", backup
		}
	}
	return Effects{}, err
}

// ack makes everything up to seq visible.
func (o *Owned) ack(seq uint64) Effects {
	if seq <= o.acked {
		return Effects{}
	}
	n := 0
	for n < len(o.pending) && o.pending[n].Seq <= seq {
		n++
	}
	visible := o.pending[:n:n]
	o.pending = slices.Clone(o.pending[n:])
	o.acked = seq
	return Effects{Deliver: visible, To: o.liveRemotes()}
}

// remote is one attached node.
type remote struct {
	nonce uint64 // of its attachment; 0 from nodes that predate nonces
	live  bool
}

func (o *Owned) liveRemotes() []string {
	var to []string
	for node, r := range o.remotes {
		if r.live {
			to = append(to, node)
		}
	}
	slices.Sort(to)
	return to
}

// DeliveryFailed records that node missed a delivery: it gets no more
// until it attaches again; the tips tell it to send its connections to
// resume.
func (o *Owned) DeliveryFailed(node string) {
	if r, ok := o.remotes[node]; ok {
		r.live = false
		o.remotes[node] = r
	}
}

// ResumePoint decides whether a connection that resumes from (sess,
// after) — asked false for one that asked for nothing — continues the
// stream, and what to replay. Continuity holds when it names this session
// (or none) and every message after its seq is still here; otherwise it
// must resync (G2: never a silent gap).
func (o *Owned) ResumePoint(sess string, after uint64, asked bool) (resumed bool, replay []Message) {
	if !asked || sess != "" && sess != o.s.Session {
		return false, nil
	}
	if after > o.acked {
		return false, nil
	}
	msgs, err := o.s.Since(after)
	if err != nil {
		return false, nil
	}
	n := 0
	for n < len(msgs) && msgs[n].Seq <= o.acked {
		n++
	}
	return true, msgs[:n]
}

// History returns at most limit acknowledged messages after `after` that
// the stream still keeps, oldest first.
func (o *Owned) History(after uint64, limit int) []Message {
	return o.s.Range(after, o.acked, limit)
}

// CatchingUp says whether a resume asks for a point the stream holds but
// has not yet replicated: just taken over, its first copy to the new
// backup in flight. The client saw those messages at the old owner;
// telling it continuity is lost would be false.
func (o *Owned) CatchingUp(sess string, after uint64, asked bool) bool {
	return asked && (sess == "" || sess == o.s.Session) && after > o.acked && after <= o.s.Last()
}

// Released says whether the stream is promised to another node's takeover
// at now: it takes no local connection meanwhile.
func (o *Owned) Released(now int64) bool { return now < o.releasedUntil }

// Release promises the stream, while idle, to another node that is about
// to take it over (its connection arrived there first), until `until`. It
// reports false when a connection is attached: the stream stays here.
func (o *Owned) Release(now, until int64) bool {
	if o.sealed || len(o.locals) > 0 || len(o.remotes) > 0 {
		return false
	}
	o.releasedUntil = max(o.releasedUntil, until)
	return true
}

// AddLocal registers a local connection, whose welcome and replay the
// caller has just queued.
func (o *Owned) AddLocal(id uint64, now int64) Effects {
	o.locals[id] = struct{}{}
	o.releasedUntil = 0
	return o.touch(now)
}

// RemoveLocal forgets a local connection.
func (o *Owned) RemoveLocal(id uint64, now int64) Effects {
	if _, ok := o.locals[id]; !ok {
		return Effects{}
	}
	delete(o.locals, id)
	return o.touch(now)
}

// AddRemote registers node as attached under its attachment's nonce
// (again: a node whose delivery failed is live once more).
func (o *Owned) AddRemote(node string, nonce uint64, now int64) Effects {
	o.remotes[node] = remote{nonce: nonce, live: true}
	o.releasedUntil = 0
	return o.touch(now)
}

// RemoveRemote forgets an attached node whose attachment's nonce is at
// most upto: a detach that the node's next attachment overtook (it went
// out first but arrived later) leaves that attachment alone. upto 0
// forgets it whatever its nonce (nodes that predate nonces).
func (o *Owned) RemoveRemote(node string, upto uint64, now int64) Effects {
	r, ok := o.remotes[node]
	if !ok || upto != 0 && r.nonce > upto {
		return Effects{}
	}
	delete(o.remotes, node)
	return o.touch(now)
}

// Remotes lists the attached nodes, those a delivery failed to reach
// included: the tips go to all of them.
func (o *Owned) Remotes() []string {
	nodes := make([]string, 0, len(o.remotes))
	for node := range o.remotes {
		nodes = append(nodes, node)
	}
	slices.Sort(nodes)
	return nodes
}

// Settle brings the registry's attached/detached state in step with the
// connections actually here: a claim that recorded a connection which
// never attached (its hello failed) leaves the stream idle.
func (o *Owned) Settle(now int64) Effects {
	if o.sealed {
		return Effects{}
	}
	return o.touch(now)
}

// Idle reports whether no connection is attached.
func (o *Owned) Idle() bool { return len(o.locals) == 0 && len(o.remotes) == 0 }

// touch keeps idleSince, and the registry's state, in step with whether
// anyone is connected.
func (o *Owned) touch(now int64) Effects {
	idle := o.Idle()
	switch {
	case idle && o.idleSince == 0:
		o.idleSince = max(now, 1)
		return Effects{Record: KindDetach}
	case !idle && o.idleSince != 0:
		o.idleSince = 0
		return Effects{Record: KindAttach}
	}
	return Effects{}
}

// Seal fences the stream for a newer owner at epoch: nothing more is
// acknowledged here, and every connection is sent away — to resume at the
// new owner, or (lost) to resync because continuity was lost. A seal not
// newer than the stream's own epoch is stale news and changes nothing
// (false).
func (o *Owned) Seal(epoch uint64, lost bool) (Effects, bool) {
	if epoch <= o.s.Epoch {
		return Effects{}, false
	}
	o.s.Seal(epoch)
	if o.sealed {
		return Effects{}, true
	}
	o.sealed = true
	eff := Effects{Lost: lost}
	for id := range o.locals {
		eff.Close = append(eff.Close, id)
	}
	slices.Sort(eff.Close)
	eff.Evict = o.Remotes()
	clear(o.locals)
	clear(o.remotes)
	return eff, true
}

// Handoff seals the stream for a new owner at epoch and returns everything
// it holds, acknowledged or not: the new owner replicates it before
// serving, and publishers still waiting here retry there with their ids.
func (o *Owned) Handoff(epoch uint64) (Tail, Effects, error) {
	if epoch <= o.s.Epoch {
		return Tail{}, Effects{}, fmt.Errorf("%w: handoff at epoch %d is not newer than the stream's %d", ErrStaleEpoch, epoch, o.s.Epoch)
	}
	eff, _ := o.Seal(epoch, false) // a sealed stream is sealed already
	return TailOf(o.s), eff, nil
}

// Trim drops what the stream's windows no longer keep, as of now.
func (o *Owned) Trim(now int64) { o.s.Trim(now) }

// ExpireDue says whether the stream may be retired at now: idle for longer
// than window, nothing left in it or in flight.
func (o *Owned) ExpireDue(now, window int64) bool {
	return !o.sealed && !o.flushing && len(o.pending) == 0 && o.idleSince != 0 &&
		now-o.idleSince > window && o.s.Len() == 0
}

// DropBackup forgets backup as the stream's backup (it is leaving or
// gone): the next flush chooses another and copies everything there. It
// reports whether the stream must flush for that: it had that backup, or
// none at all.
func (o *Owned) DropBackup(backup string) bool {
	if o.sealed || o.backup != "" && o.backup != backup {
		return false
	}
	o.backup, o.fullCopy = "", true
	return true
}
