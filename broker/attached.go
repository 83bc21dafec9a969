package broker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport"
)

// maxPending bounds the deliveries buffered for a connection whose attach
// reply has not arrived yet.
const maxPending = 4096

// attached serves local connections of a user whose stream another node
// (the owner) holds: the owner sends each new message once to this node,
// which fans it out. Every connection keeps its own last seq, so replayed
// and live messages meet without loss or duplicates, whichever arrives first.
type attached struct {
	b     *Broker
	user  string
	owner string

	mu    sync.Mutex
	sinks map[uint64]*remoteSink
	dead  bool // removed from Broker.remote: join a new one
	// heard is when the owner last sent a delivery or a tip for this user
	// (or when the attachment began): silence means the owner cannot reach
	// this node, and deliveries may be getting lost.
	heard time.Time
}

type remoteSink struct {
	sink    transport.Sink
	last    uint64
	ready   bool              // welcome and replay are queued
	pending []session.Message // deliveries that overtook the attach reply
}

// attachRemote attaches sink to user's stream at owner.
func (b *Broker) attachRemote(ctx context.Context, owner string, sink transport.Sink, resume *transport.Resume) error {
	user := sink.User()
	rs := &remoteSink{sink: sink}
	a := b.attachment(user, owner, rs)
	req := attachRequest{User: user, Node: b.cfg.NodeID}
	if resume != nil {
		req.Session, req.After = resume.Session, resume.Seq
	}
	cctx, cancel := b.callCtx(ctx)
	p, err := b.call(cctx, owner, methodAttach, encodeAttach(req))
	cancel()
	var rep attachReply
	if err == nil {
		rep, err = decodeAttachReply(p)
	}
	if err != nil {
		a.remove(sink.ID())
		return err
	}
	a.ready(rs, rep, resume != nil)
	return nil
}

// attachment returns user's attachment to owner with rs registered in it.
// Lock order is attached.mu before Broker.mu, so the attachment is found
// under Broker.mu and joined under its own lock, retrying if its last
// connection left in between.
func (b *Broker) attachment(user, owner string, rs *remoteSink) *attached {
	for {
		b.mu.Lock()
		a := b.remote[user]
		if a == nil {
			a = &attached{b: b, user: user, owner: owner, sinks: make(map[uint64]*remoteSink), heard: b.cfg.Now()}
			b.remote[user] = a
		}
		b.mu.Unlock()
		if a.owner != owner {
			a.evict("session moved")
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
func (a *attached) ready(rs *remoteSink, rep attachReply, asked bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.sinks[rs.sink.ID()]; !ok {
		return // closed meanwhile
	}
	resumed := asked && rep.Resumed
	w := a.b.welcome(rep.Session, rep.Last, resumed, a.b.endpoints())
	rs.sink.Send(rep.Last, w)
	rs.last = rep.Last
	if resumed {
		rs.last = rep.Last - uint64(len(rep.Msgs))
		a.sendLocked(rs, rep.Msgs)
	}
	a.sendLocked(rs, rs.pending)
	rs.pending, rs.ready = nil, true
}

// deliver fans messages from the owner out to local connections.
func (a *attached) deliver(msgs []session.Message) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.heard = a.b.cfg.Now()
	for _, rs := range a.sinks {
		if !rs.ready {
			if len(rs.pending)+len(msgs) > maxPending {
				a.closeLocked(rs, transport.CloseSlowConsumer, transport.CodeSlowConsumer, "too many messages while attaching")
				continue
			}
			rs.pending = append(rs.pending, msgs...)
			continue
		}
		a.sendLocked(rs, msgs)
	}
}

// sendLocked sends the messages after rs.last, in order; a hole means a
// delivery was lost between nodes, and the client is sent to resume.
func (a *attached) sendLocked(rs *remoteSink, msgs []session.Message) {
	for _, m := range msgs {
		if m.Seq <= rs.last {
			continue
		}
		if m.Seq != rs.last+1 {
			a.closeLocked(rs, transport.CloseDraining, transport.CodeDraining,
				fmt.Sprintf("missed messages %d..%d between nodes: reconnect to resume", rs.last+1, m.Seq-1))
			return
		}
		if m.Frame == nil {
			m.Frame = transport.AppendMessageFrame(nil, m.Seq, m.ID, m.TS, m.Data)
		}
		if !rs.sink.Send(m.Seq, m.Frame) {
			return
		}
		rs.last = m.Seq
		if a.b.cfg.OnDeliver != nil {
			a.b.cfg.OnDeliver(1)
		}
	}
}

func (a *attached) closeLocked(rs *remoteSink, code int, slug, msg string) {
	rs.sink.Close(code, slug, msg, a.b.endpoints())
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
	if a.b.remote[a.user] == a {
		delete(a.b.remote, a.user)
	}
	a.b.mu.Unlock()
	b, owner, user := a.b, a.owner, a.user
	b.goSafe(func() {
		ctx, cancel := b.callCtx(b.ctx)
		defer cancel()
		_ = b.peers.Send(ctx, owner, methodDetach, encodeUserNode(userNode{User: user, Node: b.cfg.NodeID}))
	})
}

// evict closes every connection so the clients resume where the stream is
// now, and detaches this node from the old owner.
func (a *attached) evict(why string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, rs := range a.sinks {
		rs.sink.Close(transport.CloseDraining, transport.CodeDraining, why+": reconnect to resume", a.b.endpoints())
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
// (methodTip); a connection behind that point, with nothing left in
// flight to it, missed something and is sent to resume (4010). A node that
// hears nothing from an owner it knows to send tips (its link is broken in
// that direction) sends those connections to resume as well.

// tipSilence is how many heartbeat intervals without a delivery or a tip
// from an owner that sends tips make an attached node give up on it.
const tipSilence = 4

// tipBatch bounds the users in one tip frame.
const tipBatch = 4096

// sendTips sends every node with attached connections the acknowledged
// seq of their streams, including nodes whose deliveries failed.
func (b *Broker) sendTips() {
	helds := b.heldStreams()
	byNode := map[string][]tip{}
	for _, h := range helds {
		h.mu.Lock()
		if !h.sealed {
			for node := range h.remotes {
				byNode[node] = append(byNode[node], tip{User: h.user, Last: h.acked})
			}
		}
		h.mu.Unlock()
	}
	for node, tips := range byNode {
		b.mu.Lock()
		busy := b.tipBusy[node] // a send to it still waits for its link: skip a round
		b.tipBusy[node] = true
		b.mu.Unlock()
		if busy {
			continue
		}
		b.goSafe(func() {
			defer func() {
				b.mu.Lock()
				delete(b.tipBusy, node)
				b.mu.Unlock()
			}()
			for len(tips) > 0 {
				n := min(len(tips), tipBatch)
				ctx, cancel := b.callCtx(b.ctx)
				err := b.peers.Send(ctx, node, methodTip, encodeTips(tips[:n]))
				cancel()
				if err != nil {
					b.log.Debug("tip to attached node failed", "node", node, "err", err)
					return
				}
				tips = tips[n:]
			}
		})
	}
}

// serveTips checks the connections attached here against the owner's tips.
func (b *Broker) serveTips(from string, tips []tip) {
	b.mu.Lock()
	b.tipsFrom[from] = true
	b.mu.Unlock()
	var gone []string
	for _, t := range tips {
		b.mu.Lock()
		a := b.remote[t.User]
		b.mu.Unlock()
		if a == nil || a.owner != from {
			gone = append(gone, t.User)
			continue
		}
		a.tip(t.Last)
	}
	if len(gone) > 0 {
		// Nobody here listens any more (a detach was lost): tell the owner.
		b.goSafe(func() {
			for _, u := range gone {
				ctx, cancel := b.callCtx(b.ctx)
				err := b.peers.Send(ctx, from, methodDetach, encodeUserNode(userNode{User: u, Node: b.cfg.NodeID}))
				cancel()
				if err != nil {
					return
				}
			}
		})
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
			a.closeLocked(rs, transport.CloseDraining, transport.CodeDraining,
				fmt.Sprintf("missed messages %d..%d between nodes: reconnect to resume", rs.last+1, last))
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
			b.log.Warn("no deliveries or tips from the owner; sending attached connections to resume", "user", a.user, "owner", a.owner)
			a.evict("no word from the node holding the stream")
		}
	}
}
