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
// a change and again every heartbeat interval: a lost report, or a new
// owner after a takeover, is mended within one interval. The owner keeps
// a session.Presence per channel; a change in who is present becomes
// join and leave events, which it writes to its own subscribers that
// asked for them and sends once to each node attached to the channel. A
// node declared dead takes its members with it.
//
// A new owner that took a channel over from another starts with an empty
// set, filled by the nodes' next reports: for presenceQuiet after the
// takeover it sends no events, so that the rebuilt set does not read as
// everyone joining again. The members of a failed owner itself are
// therefore dropped without leave events.

// presenceCoalesce is how long a change waits for others before the
// report goes out.
const presenceCoalesce = 10 * time.Millisecond

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
	kick   chan struct{}
}

func newPresence() presence {
	return presence{
		byChan:   make(map[session.Key]map[*subscription]struct{}),
		dirty:    make(map[session.Key]bool),
		reported: make(map[session.Key]bool),
		gen:      uint64(time.Now().UnixNano()), // grows across restarts too
		tables:   make(map[session.Key]*session.Presence),
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

// reportPresence runs until the broker closes: it sends the changed
// channels' reports shortly after a change, and every channel's every
// heartbeat interval.
func (b *Broker) reportPresence() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.Heartbeat)
	defer t.Stop()
	for {
		all := false
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
			all = true
		}
		b.sendReports(all)
	}
}

// sendReports reports the dirty channels, or with all every channel with
// members here or in its last report.
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
			b.outbox(owner).push(outFrame{send: func(ctx context.Context) error {
				return peerapi.ReportPresence.Send(ctx, b.peers, owner, rep)
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
	joins, leaves := t.Report(rep.Node, rep.Gen, members)
	if t.Empty() {
		delete(b.pres.tables, rep.Key)
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

// presenceQuiet is how long a channel taken over from another owner sends
// no presence events while the nodes' reports rebuild its set.
func (b *Broker) presenceQuiet() time.Duration { return b.cfg.Heartbeat * 3 / 2 }

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
