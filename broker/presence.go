package broker

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/gateway"
)

// Presence lives with a channel's owner (DESIGN §9). Every node reports
// to the owner the members its own subscriptions make (the whole set for
// the channel, numbered so that an older report never wins), soon after
// a change and again every half heartbeat interval, all its channels of
// one owner in one frame: a lost report, or a new owner after a
// takeover, is mended within half an interval. The owner keeps a
// session.Presence per channel; a change in who is present becomes join
// and leave events, which it writes to its own subscribers that asked
// for them and sends once to each node attached to the channel.
//
// Each report is a lease on its node's members (presenceLease, two
// heartbeat intervals): a node the owner has not heard from about a
// channel for that long loses its members there, who leave — whether
// the node died, is cut off, or reports elsewhere. That is what bounds
// how soon a dead node's members leave (DESIGN §3a: within 2.5 heartbeat
// intervals), well before gossip declares the node dead; a node declared
// dead (presenceDown) still takes its members with it at once.
//
// A new owner that took a channel over from another starts with an empty
// set, filled by the nodes' next reports (a subscription that resumes at
// the new owner reports at once); each node's lease there starts with its
// first report to the new owner. For presenceQuiet after the takeover it
// sends no events, so that the rebuilt set does not read as everyone
// joining again. Then it compares the rebuilt set with the last one the
// old owner gave it as the channel's backup (PresenceSnapshot, sent after
// every change and every heartbeat interval): who is missing left — the
// failed owner's own members among them — and who is new joined. A new
// owner that was not the backup fetches the snapshot from the former
// backup; with none to be had it sends no such events. A failed owner's
// members thus leave presenceQuiet after the takeover, which follows its
// death within milliseconds when its process died (its peer links broke:
// LinkDown), so about one interval after it, inside DESIGN §3a's 2.5.

// presenceCoalesce is how long a change waits for others before the
// report goes out.
const presenceCoalesce = 10 * time.Millisecond

// presenceBatchBytes bounds about how many bytes of reports go to one
// owner in one frame.
const presenceBatchBytes = 256 << 10

// Presence timing, in heartbeat intervals H. A dead node's last report
// reached the owner at most one transit before it died; its lease ends
// presenceLease later and the next sweep finds it, so its members leave
// at most 2H + H/8 (plus the events' transit) after the death — inside
// the 2.5 H of DESIGN §3a, with H/8 to spare — and at least
// 2H − H/2 = 1.5 H after it (it died just before a report was due). A
// live node reports every H/2, so its lease runs out only if three
// reports in a row are lost or 1.5 H late: a link that is down, not a
// busy one.
func (b *Broker) presenceReportEvery() time.Duration {
	return max(b.cfg.Heartbeat/2, time.Millisecond)
}
func (b *Broker) presenceLease() time.Duration { return 2 * b.cfg.Heartbeat }
func (b *Broker) presenceSweepEvery() time.Duration {
	return max(b.cfg.Heartbeat/8, time.Millisecond)
}

// presence is this node's side of channel presence.
type presence struct {
	mu sync.Mutex
	// byChan are this node's live subscriptions by channel, all of them
	// (those without presence count as subscribers).
	byChan map[session.Key]map[*subscription]struct{}
	// dirty channels have a change not reported yet; reported ones had
	// members in their last report, so an empty set must still be told.
	dirty    map[session.Key]bool
	reported map[session.Key]bool
	gen      uint64
	// tables are the presence sets of channels this node owns (or is
	// told about as their owner).
	tables map[session.Key]*session.Presence
	// changed: tables whose owner's snapshot to the backup is due; snaps:
	// the owners' snapshots of channels this node backs up.
	changed map[session.Key]bool
	snaps   map[session.Key]peerapi.PresenceReport
	kick    chan struct{}
	// start is when the broker started: leases are timed in milliseconds
	// since (monotonic, unlike the wall clock's).
	start time.Time
}

func newPresence(start time.Time) presence {
	return presence{
		start:    start,
		byChan:   make(map[session.Key]map[*subscription]struct{}),
		dirty:    make(map[session.Key]bool),
		reported: make(map[session.Key]bool),
		gen:      uint64(time.Now().UnixNano()), // grows across restarts too
		tables:   make(map[session.Key]*session.Presence),
		changed:  make(map[session.Key]bool),
		snaps:    make(map[session.Key]peerapi.PresenceReport),
		kick:     make(chan struct{}, 1),
	}
}

// subscribed counts a subscription that started, unless it ended already.
func (b *Broker) subscribed(s *subscription) {
	b.pres.mu.Lock()
	defer b.pres.mu.Unlock()
	s.mu.Lock()
	ended := s.ended
	s.mu.Unlock()
	if ended {
		return
	}
	subs := b.pres.byChan[s.key]
	if subs == nil {
		subs = make(map[*subscription]struct{})
		b.pres.byChan[s.key] = subs
	}
	subs[s] = struct{}{}
	if s.req.Presence {
		b.presenceDirtyLocked(s.key)
	}
}

// unsubscribed forgets a subscription that ended.
func (b *Broker) unsubscribed(s *subscription) {
	b.pres.mu.Lock()
	defer b.pres.mu.Unlock()
	subs := b.pres.byChan[s.key]
	if _, ok := subs[s]; !ok {
		return
	}
	delete(subs, s)
	if len(subs) == 0 {
		delete(b.pres.byChan, s.key)
	}
	if s.req.Presence {
		b.presenceDirtyLocked(s.key)
	}
}

func (b *Broker) presenceDirtyLocked(key session.Key) {
	b.pres.dirty[key] = true
	b.kickPresenceLocked()
}

// kickPresenceLocked wakes the reporter (reportPresence).
func (b *Broker) kickPresenceLocked() {
	select {
	case b.pres.kick <- struct{}{}:
	default:
	}
}

// resumedPresence reports s's channel soon after s resumed at a new
// owner, which rebuilds the channel's presence set from such reports.
func (b *Broker) resumedPresence(s *subscription) {
	if !s.req.Presence {
		return
	}
	b.pres.mu.Lock()
	b.presenceDirtyLocked(s.key)
	b.pres.mu.Unlock()
}

// localMembersLocked is this node's report for key.
func (b *Broker) localMembersLocked(key session.Key) peerapi.PresenceReport {
	count := map[string]int{}
	for s := range b.pres.byChan[key] {
		if s.req.Presence {
			count[s.conn.User()]++
		}
	}
	b.pres.gen++
	rep := peerapi.PresenceReport{Key: key, Node: b.cfg.NodeID, Gen: b.pres.gen}
	for _, u := range slices.Sorted(maps.Keys(count)) {
		rep.Members = append(rep.Members, session.Member{User: u, Conns: count[u]})
	}
	return rep
}

// presenceClock is the time leases are measured in: milliseconds since
// the broker started, on the monotonic clock when cfg.Now gives one.
func (b *Broker) presenceClock() int64 {
	return b.cfg.Now().Sub(b.pres.start).Milliseconds()
}

// reportPresence runs until the broker closes: it sends the changed
// channels' reports shortly after a change, and every channel's every
// half heartbeat interval (the owners' snapshots to the backups every
// interval).
func (b *Broker) reportPresence() {
	defer b.wg.Done()
	t := time.NewTicker(b.presenceReportEvery())
	defer t.Stop()
	for round := 0; ; {
		all, snapshots := false, false
		select {
		case <-b.ctx.Done():
			return
		case <-b.pres.kick:
			select {
			case <-b.ctx.Done():
				return
			case <-time.After(presenceCoalesce):
			}
		case <-t.C:
			round++
			all, snapshots = true, round%2 == 0
		}
		b.sendReports(all)
		b.sendSnapshots(snapshots)
	}
}

// sendReports reports the dirty channels, or with all every channel with
// members here or in its last report: to each owner, its channels'
// reports in frames of about presenceBatchBytes.
func (b *Broker) sendReports(all bool) {
	b.pres.mu.Lock()
	keys := map[session.Key]bool{}
	for k := range b.pres.dirty {
		keys[k] = true
	}
	if all {
		for k := range b.pres.reported {
			keys[k] = true
		}
		for k, subs := range b.pres.byChan {
			for s := range subs {
				if s.req.Presence {
					keys[k] = true
					break
				}
			}
		}
	}
	clear(b.pres.dirty)
	reps := make([]peerapi.PresenceReport, 0, len(keys))
	for k := range keys {
		rep := b.localMembersLocked(k)
		if len(rep.Members) > 0 {
			b.pres.reported[k] = true
		} else {
			delete(b.pres.reported, k)
		}
		reps = append(reps, rep)
	}
	b.pres.mu.Unlock()
	retry := false
	byOwner := map[string][]peerapi.PresenceReport{}
	for _, rep := range reps {
		owner := b.channelOwner(rep.Key)
		switch {
		case owner == "" && len(rep.Members) > 0:
			// This node's registry replica may not have the claim yet:
			// soon again, rather than at the next round.
			b.pres.mu.Lock()
			b.pres.dirty[rep.Key] = true
			b.pres.mu.Unlock()
			retry = true
		case owner == "":
		case owner == b.cfg.NodeID:
			b.takeReport(rep)
		default:
			byOwner[owner] = append(byOwner[owner], rep)
		}
	}
	for owner, reps := range byOwner {
		for len(reps) > 0 {
			n, size := 0, 0
			for n < len(reps) && (n == 0 || size < presenceBatchBytes) {
				size += peerapi.PresenceReportSize(reps[n])
				n++
			}
			batch := reps[:n:n]
			reps = reps[n:]
			b.outbox(owner).push(outFrame{send: func(ctx context.Context) error {
				return peerapi.ReportPresenceBatch.Send(ctx, b.peers, owner, batch)
			}})
		}
	}
	if retry {
		time.AfterFunc(50*time.Millisecond, func() {
			select {
			case b.pres.kick <- struct{}{}:
			default:
			}
		})
	}
}

// sendSnapshots gives the backups of the channels owned here their
// presence set: those that changed, or with all every one.
func (b *Broker) sendSnapshots(all bool) {
	b.pres.mu.Lock()
	keys := make([]session.Key, 0, len(b.pres.changed))
	for k := range b.pres.changed {
		keys = append(keys, k)
	}
	if all {
		for k := range b.pres.tables {
			if !b.pres.changed[k] {
				keys = append(keys, k)
			}
		}
	}
	clear(b.pres.changed)
	b.pres.mu.Unlock()
	for _, k := range keys {
		h := b.local(k)
		if h == nil || b.now() < h.quietUntil.Load() {
			continue // not the owner, or still rebuilding: nothing to tell
		}
		h.mu.Lock()
		backup := h.o.Backup()
		h.mu.Unlock()
		if backup == "" {
			continue
		}
		b.pres.mu.Lock()
		b.pres.gen++
		snap := peerapi.PresenceReport{Key: k, Node: b.cfg.NodeID, Gen: b.pres.gen}
		if t := b.pres.tables[k]; t != nil {
			snap.Members = t.Members()
		}
		b.pres.mu.Unlock()
		b.outbox(backup).push(outFrame{send: func(ctx context.Context) error {
			return peerapi.PresenceSnapshot.Send(ctx, b.peers, backup, snap)
		}})
	}
}

// keepSnapshot stores an owner's presence snapshot of a channel this node
// backs up; an older one never replaces a newer one of the same owner.
func (b *Broker) keepSnapshot(snap peerapi.PresenceReport) {
	b.pres.mu.Lock()
	defer b.pres.mu.Unlock()
	if old, ok := b.pres.snaps[snap.Key]; ok && old.Node == snap.Node && old.Gen > snap.Gen {
		return
	}
	if len(snap.Members) == 0 {
		delete(b.pres.snaps, snap.Key)
		return
	}
	b.pres.snaps[snap.Key] = snap
}

// takeSnapshot removes and returns the snapshot kept for key, if any.
func (b *Broker) takeSnapshot(key session.Key) (peerapi.PresenceReport, bool) {
	b.pres.mu.Lock()
	defer b.pres.mu.Unlock()
	snap, ok := b.pres.snaps[key]
	delete(b.pres.snaps, key)
	return snap, ok
}

// reconcilePresence ends the quiet rebuild of a channel taken over here:
// who was in the old owner's last snapshot and is not in the rebuilt set
// left, who is in it and was not joined.
func (b *Broker) reconcilePresence(key session.Key, snap peerapi.PresenceReport) {
	was := make(map[string]bool, len(snap.Members))
	for _, m := range snap.Members {
		was[m.User] = true
	}
	b.pres.mu.Lock()
	var now []session.Member
	if t := b.pres.tables[key]; t != nil {
		now = t.Members()
	}
	b.pres.changed[key] = true // the new backup's snapshot
	b.pres.mu.Unlock()
	var joins, leaves []string
	for _, m := range now {
		if !was[m.User] {
			joins = append(joins, m.User)
		}
		delete(was, m.User)
	}
	leaves = slices.Sorted(maps.Keys(was))
	b.presenceEvents(key, joins, leaves)
}

// afterTakeover starts the quiet rebuild of a channel's presence set that
// this node took over from another owner, and its reconciliation against
// the old owner's last snapshot: kept here if this node was the backup,
// else asked of the former backup.
func (b *Broker) afterTakeover(h *held, formerBackup string) {
	quiet := b.presenceQuiet()
	h.quietUntil.Store(b.now() + quiet.Milliseconds())
	snap, ok := b.takeSnapshot(h.key)
	b.goSafe(func() {
		t := time.NewTimer(quiet)
		defer t.Stop()
		if !ok && formerBackup != "" && formerBackup != b.cfg.NodeID {
			ctx, cancel := b.callCtx(b.ctx)
			var err error
			snap, err = peerapi.FetchPresenceSnapshot.Call(ctx, b.peers, formerBackup, h.key)
			cancel()
			ok = err == nil
		}
		if !ok {
			return // nothing to compare with: the rebuilt set stands
		}
		select {
		case <-b.ctx.Done():
		case <-t.C:
			b.reconcilePresence(h.key, snap)
		}
	})
}

// serveSnapshot answers a new owner's FetchPresenceSnapshot.
func (b *Broker) serveSnapshot(key session.Key) (peerapi.PresenceReport, error) {
	b.pres.mu.Lock()
	defer b.pres.mu.Unlock()
	snap, ok := b.pres.snaps[key]
	if !ok {
		return peerapi.PresenceReport{}, peerapi.ErrNotHere
	}
	return snap, nil
}

// channelOwner is where key's channel is owned, as this node knows best:
// here, the owner its subscribers are attached to, or the registry's.
func (b *Broker) channelOwner(key session.Key) string {
	if b.local(key) != nil {
		return b.cfg.NodeID
	}
	b.mu.Lock()
	a := b.remote[key]
	b.mu.Unlock()
	if a != nil {
		return a.owner
	}
	if e, ok := b.reg.Get(key.String()); ok {
		return e.Owner
	}
	return ""
}

// takeReport applies a node's report to the channel's presence set and
// sends the joins and leaves it makes.
func (b *Broker) takeReport(rep peerapi.PresenceReport) {
	members := make(map[string]int, len(rep.Members))
	for _, m := range rep.Members {
		members[m.User] += m.Conns
	}
	b.pres.mu.Lock()
	t := b.pres.tables[rep.Key]
	if t == nil {
		t = session.NewPresence()
		b.pres.tables[rep.Key] = t
	}
	joins, leaves := t.Report(rep.Node, rep.Gen, b.presenceClock(), members)
	if t.Empty() {
		delete(b.pres.tables, rep.Key)
	}
	if len(joins)+len(leaves) > 0 {
		b.pres.changed[rep.Key] = true
		b.kickPresenceLocked() // the reporter sends the backup its snapshot
	}
	b.pres.mu.Unlock()
	b.presenceEvents(rep.Key, joins, leaves)
}

// presenceDown drops a dead node's members from every channel's presence
// set held here: they leave.
func (b *Broker) presenceDown(node string) {
	type change struct {
		key    session.Key
		leaves []string
	}
	var changes []change
	b.pres.mu.Lock()
	for k, t := range b.pres.tables {
		if leaves := t.Drop(node); len(leaves) > 0 {
			changes = append(changes, change{k, leaves})
			b.pres.changed[k] = true
		}
		if t.Empty() {
			delete(b.pres.tables, k)
		}
	}
	b.pres.mu.Unlock()
	for _, c := range changes {
		b.presenceEvents(c.key, nil, c.leaves)
	}
}

// expirePresence drops, from every channel's presence set held here, the
// members of the nodes whose lease ran out: they leave.
func (b *Broker) expirePresence() {
	type change struct {
		key    session.Key
		leaves []string
	}
	var changes []change
	now, lease := b.presenceClock(), b.presenceLease().Milliseconds()
	b.pres.mu.Lock()
	for k, t := range b.pres.tables {
		if leaves := t.Expire(now, lease); len(leaves) > 0 {
			changes = append(changes, change{k, leaves})
			b.pres.changed[k] = true
		}
		if t.Empty() {
			delete(b.pres.tables, k)
		}
	}
	if len(changes) > 0 {
		b.kickPresenceLocked() // the reporter sends the backups their snapshots
	}
	b.pres.mu.Unlock()
	for _, c := range changes {
		b.log.Debug("presence lease ran out", "channel", c.key.Name, "leaves", len(c.leaves))
		b.presenceEvents(c.key, nil, c.leaves)
	}
}

// presenceQuiet is how long a channel taken over from another owner sends
// no presence events while the nodes' reports rebuild its set.
func (b *Broker) presenceQuiet() time.Duration { return b.cfg.Heartbeat }

// presenceEvents sends joins and leaves of key, if this node owns the
// channel: to its own subscribers and once to each attached node.
func (b *Broker) presenceEvents(key session.Key, joins, leaves []string) {
	if len(joins)+len(leaves) == 0 {
		return
	}
	h := b.local(key)
	if h == nil || b.now() < h.quietUntil.Load() {
		return
	}
	evs := make([]peerapi.PresenceEvent, 0, len(joins)+len(leaves))
	for _, u := range joins {
		evs = append(evs, peerapi.PresenceEvent{Key: key, User: u, Join: true})
	}
	for _, u := range leaves {
		evs = append(evs, peerapi.PresenceEvent{Key: key, User: u})
	}
	b.deliverPresence(evs)
	h.mu.Lock()
	nodes := h.o.Remotes()
	h.mu.Unlock()
	for _, node := range nodes {
		b.outbox(node).push(outFrame{send: func(ctx context.Context) error {
			return peerapi.PresenceEvents.Send(ctx, b.peers, node, evs)
		}})
	}
}

// deliverPresence writes join and leave frames to the subscriptions here
// that asked for them.
func (b *Broker) deliverPresence(evs []peerapi.PresenceEvent) {
	b.pres.mu.Lock()
	defer b.pres.mu.Unlock()
	for _, e := range evs {
		var frame []byte
		for s := range b.pres.byChan[e.Key] {
			if !s.req.JoinLeave {
				continue
			}
			if frame == nil {
				frame = protocol.AppendJoinLeave(nil, e.Join, e.Key.Name, e.User)
			}
			s.conn.Send(0, frame)
		}
	}
}

// Presence answers a presence question about channel from the channel's
// owner, which first takes this node's own report.
func (b *Broker) Presence(ctx context.Context, _ gateway.Sink, channel string) (protocol.Presence, error) {
	key := session.ChannelKey(channel)
	b.pres.mu.Lock()
	rep := b.localMembersLocked(key)
	b.pres.mu.Unlock()
	var members []session.Member
	switch owner := b.channelOwner(key); owner {
	case b.cfg.NodeID:
		b.takeReport(rep)
		b.pres.mu.Lock()
		if t := b.pres.tables[key]; t != nil {
			members = t.Members()
		}
		b.pres.mu.Unlock()
	case "":
		members = rep.Members // nobody owns it: this node's are all there are
	default:
		cctx, cancel := b.callCtx(ctx)
		var err error
		members, err = peerapi.Presence.Call(cctx, b.peers, owner, rep)
		cancel()
		if err != nil {
			return protocol.Presence{}, fmt.Errorf("%w: asking %s, the owner of %s: %v", protocol.ErrUnavailable, owner, channel, err)
		}
	}
	p := protocol.Presence{Type: protocol.TypePresence, Channel: channel, Count: len(members), Members: make([]protocol.Member, len(members))}
	for i, m := range members {
		p.Members[i] = protocol.Member{User: m.User, Conns: m.Conns}
	}
	return p, nil
}

// servePresence answers another node's presence question, as the owner.
func (b *Broker) servePresence(rep peerapi.PresenceReport) ([]session.Member, error) {
	if b.local(rep.Key) == nil {
		return nil, peerapi.ErrNotHere
	}
	b.takeReport(rep)
	b.pres.mu.Lock()
	defer b.pres.mu.Unlock()
	if t := b.pres.tables[rep.Key]; t != nil {
		return t.Members(), nil
	}
	return nil, nil
}

// Subscribers counts this node's subscriptions to channel.
func (b *Broker) Subscribers(channel string) int {
	b.pres.mu.Lock()
	defer b.pres.mu.Unlock()
	return len(b.pres.byChan[session.ChannelKey(channel)])
}
