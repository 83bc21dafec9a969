package broker

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/internal/tracing"
	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/gateway"
)

// maxPending bounds the deliveries buffered for a connection whose attach
// reply has not arrived yet.
const maxPending = 4096

// attached serves local connections of a stream another node (the owner)
// holds: the owner sends each new message once to this node, which fans
// it out. Every connection keeps its own last seq, so replayed and live
// messages meet without loss or duplicates, whichever arrives first.
type attached struct {
	b     *Broker
	key   session.Key
	owner string
	// nonce names this attachment at the owner (Broker.attachSeq): its
	// detach ends it and no later one.
	nonce uint64

	mu    sync.Mutex
	sinks map[uint64]*remoteSink
	dead  bool // removed from Broker.remote: join a new one
	// session is the owner's session id, from the latest attach reply: a
	// claim or reply that names another one means continuity was lost.
	session string
	// heard is when the owner last sent a delivery or a tip for this
	// stream (or when the attachment began): silence means the owner
	// cannot reach this node, and deliveries may be getting lost.
	heard time.Time
}

type remoteSink struct {
	sink    gateway.Sink
	session string // the owner's session this connection was welcomed to
	last    uint64
	ready   bool              // welcome and replay are queued
	pending []session.Message // deliveries that overtook the attach reply
}

// attachRemote attaches sink to its stream at owner. With release, an
// owner whose stream is idle answers peerapi.ErrIdle instead: it lets this
// node take the stream over.
func (b *Broker) attachRemote(ctx context.Context, key session.Key, owner string, release bool, sink gateway.Sink, pos position) error {
	rs := &remoteSink{sink: sink}
	a := b.attachment(key, owner, rs)
	req := peerapi.AttachRequest{Key: key, Node: b.cfg.NodeID, Release: release, Nonce: a.nonce,
		Session: pos.session, After: pos.after, Live: pos.live}
	cctx, cancel := b.callCtx(ctx)
	rep, err := peerapi.Attach.Call(cctx, b.peers, owner, req)
	cancel()
	if err != nil {
		a.remove(sink.ID())
		return err
	}
	a.ready(rs, rep, pos.asked || pos.live)
	return nil
}

// attachment returns key's attachment to owner with rs registered in it.
// Lock order is attached.mu before Broker.mu, so the attachment is found
// under Broker.mu and joined under its own lock, retrying if its last
// connection left in between.
func (b *Broker) attachment(key session.Key, owner string, rs *remoteSink) *attached {
	for {
		b.mu.Lock()
		a := b.remote[key]
		if a == nil {
			a = &attached{b: b, key: key, owner: owner, nonce: b.attachSeq.Add(1), sinks: make(map[uint64]*remoteSink), heard: b.cfg.Now()}
			b.remote[key] = a
		}
		b.mu.Unlock()
		if a.owner != owner {
			a.evict(protocol.Errorf(protocol.ErrMoved, "session moved: reconnect to resume"))
			continue
		}
		a.mu.Lock()
		if !a.dead {
			a.sinks[rs.sink.ID()] = rs
			a.mu.Unlock()
			return a
		}
		a.mu.Unlock()
	}
}

// ready sends the welcome and replay, then whatever live messages arrived
// meanwhile, and switches the connection to live delivery.
func (a *attached) ready(rs *remoteSink, rep peerapi.AttachReply, asked bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.sinks[rs.sink.ID()]; !ok {
		return // closed meanwhile
	}
	if a.session != rep.Session {
		// The owner serves another session than the one the connections
		// here were welcomed to (it restarted and lost the stream):
		// theirs is gone, and the new one's seqs would read as its
		// continuation.
		for _, other := range a.sinks {
			if other != rs && other.ready && other.session != rep.Session {
				a.closeLocked(other, protocol.Errorf(protocol.ErrContinuityLost, "stream lost: continuity lost, resync"))
			}
		}
		a.session = rep.Session
	}
	rs.session = rep.Session
	resumed := asked && rep.Resumed
	a.b.greet(rs.sink, rep.Session, rep.Last, resumed, a.b.endpoints)
	rs.last = rep.Last
	if resumed {
		rs.last = rep.Last - uint64(len(rep.Msgs))
		a.sendLocked(rs, a.b.frames(a.key, rep.Msgs), nil)
	}
	a.sendLocked(rs, rs.pending, nil)
	rs.pending, rs.ready = nil, true
}

// serveDelivery fans a delivery from an owner out to the connections
// attached here.
func (b *Broker) serveDelivery(ctx context.Context, from string, d peerapi.Delivery) {
	b.mu.Lock()
	a := b.remote[d.Key]
	b.mu.Unlock()
	if a == nil || a.owner != from {
		// Nobody here listens any more: tell the owner to stop.
		b.outbox(from).detach(d.Key, b.attachSeq.Load())
		return
	}
	// A sampled message's trace came with the frame: its span here ends
	// once every connection attached to it on this node has written it.
	var tr *delivery
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() && len(d.Msgs) > 0 {
		if tr = b.startDelivery(sc, d.Key, d.Msgs[0].Seq, 0); tr != nil {
			tr.span.SetAttributes(append(seqAttrs(d.Msgs), tracing.AttrEpoch.Int64(int64(d.Epoch)), tracing.AttrOwner.String(from))...)
		}
	}
	a.deliver(d.Msgs, tr)
	if tr != nil {
		tr.sent()
	}
}

// deliver fans messages from the owner out to local connections, as part
// of the traced delivery tr when not nil.
func (a *attached) deliver(msgs []session.Message, tr *delivery) {
	msgs = a.b.frames(a.key, msgs) // once for every connection here
	a.mu.Lock()
	defer a.mu.Unlock()
	a.heard = a.b.cfg.Now()
	for _, rs := range a.sinks {
		if !rs.ready {
			if len(rs.pending)+len(msgs) > maxPending {
				a.closeLocked(rs, protocol.Errorf(protocol.ErrSlowConsumer, "too many messages while attaching"))
				continue
			}
			rs.pending = append(rs.pending, msgs...)
			continue
		}
		a.sendLocked(rs, msgs, tr)
	}
}

// sendLocked sends the messages after rs.last, in order; a hole means a
// delivery was lost between nodes, and the client is sent to resume.
func (a *attached) sendLocked(rs *remoteSink, msgs []session.Message, tr *delivery) {
	for _, m := range msgs {
		if m.Seq <= rs.last {
			continue
		}
		if m.Seq != rs.last+1 {
			a.closeLocked(rs, protocol.Errorf(protocol.ErrMoved, "missed messages %d..%d between nodes: reconnect to resume", rs.last+1, m.Seq-1))
			return
		}
		sent := false
		if tr != nil {
			sent = tr.send(rs.sink, m.Seq, m.Frame)
		} else {
			sent = rs.sink.Send(m.Seq, m.Frame)
		}
		if !sent {
			return
		}
		rs.last = m.Seq
		if a.b.cfg.OnDeliver != nil {
			a.b.cfg.OnDeliver(1)
		}
	}
}

func (a *attached) closeLocked(rs *remoteSink, why error) {
	rs.sink.Close(why, a.b.endpoints())
	delete(a.sinks, rs.sink.ID())
	a.afterRemoveLocked()
}

// remove forgets a connection; the last one detaches this node from the owner.
func (a *attached) remove(id uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.sinks[id]; !ok {
		return
	}
	delete(a.sinks, id)
	a.afterRemoveLocked()
}

func (a *attached) afterRemoveLocked() {
	if len(a.sinks) > 0 || a.dead {
		return
	}
	a.dead = true
	a.b.mu.Lock()
	if a.b.remote[a.key] == a {
		delete(a.b.remote, a.key)
	}
	a.b.mu.Unlock()
	a.b.outbox(a.owner).detach(a.key, a.nonce)
}

// evict closes every connection, with why, so the clients resume (or
// resync) where the stream is now, and detaches this node from the owner.
func (a *attached) evict(why error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	eps := a.b.endpoints()
	for id, rs := range a.sinks {
		rs.sink.Close(why, eps)
		delete(a.sinks, id)
	}
	a.afterRemoveLocked()
}

// Tips. A delivery is a one-way frame: one the owner could not send, or
// that died with its link, is lost without a trace, and heartbeats report
// only what a connection was sent. A connection waiting for it would see
// nothing wrong until the next message showed the hole, or forever if no
// message follows. So every heartbeat interval the owner tells each node
// with attached connections how far their streams are acknowledged
// (peerapi.Tips), after the deliveries those cover in the same outbox; a
// connection behind that point missed something and is sent to resume
// (4010). A node that hears nothing from an owner it knows to send tips
// (its link is broken in that direction) sends those connections to
// resume as well.

// tipSilence is how many heartbeat intervals without a delivery or a tip
// from an owner that sends tips make an attached node give up on it.
const tipSilence = 4

// tipBatch bounds the streams in one tip frame.
const tipBatch = 4096

// sendTips queues, for every node with attached connections, the
// acknowledged seq of their streams, including nodes whose deliveries
// failed.
func (b *Broker) sendTips() {
	byNode := map[string][]peerapi.Tip{}
	for _, h := range b.heldStreams() {
		h.mu.Lock()
		if !h.o.Sealed() {
			for _, node := range h.o.Remotes() {
				byNode[node] = append(byNode[node], peerapi.Tip{Key: h.key, Last: h.o.Acked()})
			}
		}
		h.mu.Unlock()
	}
	for node, tips := range byNode {
		b.outbox(node).tips(tips)
	}
}

// serveTips checks the connections attached here against the owner's tips.
func (b *Broker) serveTips(from string, tips []peerapi.Tip) {
	b.mu.Lock()
	b.tipsFrom[from] = true
	b.mu.Unlock()
	for _, t := range tips {
		b.mu.Lock()
		a := b.remote[t.Key]
		b.mu.Unlock()
		if a == nil || a.owner != from {
			// Nobody here listens any more (a detach was lost): tell the
			// owner, up to the attachments made so far.
			b.outbox(from).detach(t.Key, b.attachSeq.Load())
			continue
		}
		a.tip(t.Last)
	}
}

// tip sends every live connection that is behind the owner's acknowledged
// seq last to resume: deliveries are sent before the tip that covers them,
// on the same link, so whatever is still missing was lost.
func (a *attached) tip(last uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.heard = a.b.cfg.Now()
	for _, rs := range a.sinks {
		if rs.ready && rs.last < last {
			a.closeLocked(rs, protocol.Errorf(protocol.ErrMoved, "missed messages %d..%d between nodes: reconnect to resume", rs.last+1, last))
		}
	}
}

// checkSilentOwners sends the connections attached to an owner that sends
// tips, but sent nothing for tipSilence intervals, to resume elsewhere.
// Owners that never sent a tip (nodes that predate them) are not judged.
func (b *Broker) checkSilentOwners() {
	now := b.cfg.Now()
	b.mu.Lock()
	var quiet []*attached
	for _, a := range b.remote {
		if b.tipsFrom[a.owner] {
			quiet = append(quiet, a)
		}
	}
	b.mu.Unlock()
	for _, a := range quiet {
		a.mu.Lock()
		silent := now.Sub(a.heard) > tipSilence*b.cfg.Heartbeat
		a.mu.Unlock()
		if silent {
			b.log.Warn("no deliveries or tips from the owner; sending attached connections to resume", "stream", a.key, "owner", a.owner)
			a.evict(protocol.Errorf(protocol.ErrMoved, "no word from the node holding the stream: reconnect to resume"))
		}
	}
}
