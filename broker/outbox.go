package broker

import (
	"context"

	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/session"
)

// outboxLimit bounds the one-way frames waiting for one node. A node that
// falls this far behind misses deliveries, which its tips then report: its
// connections resume, nothing is lost.
const outboxLimit = 16384

// outbox holds the one-way frames for one node — deliveries, tips,
// evictions, detaches — in the order they were queued, and sends them from
// one goroutine, which exists only while there is something to send.
//
// Streams queue under their own lock, which is what orders a stream's
// deliveries by seq, and a tip after the deliveries it covers; the send
// itself never runs under a stream's lock, so a stalled node delays
// nothing but its own frames.
type outbox struct {
	b    *Broker
	node string

	// q, running and tipsQueued are guarded by b.mu.
	q       []outFrame
	running bool
	// tipsQueued is the tips of the round waiting in q, if any: a newer
	// round replaces them rather than queueing behind them, so a node
	// that reads slowly gets one round of tips at a time.
	tipsQueued *[]peerapi.Tip
}

// outFrame is one queued frame: send performs it; failed, when set, is
// told that it could not.
type outFrame struct {
	send   func(ctx context.Context) error
	failed func(error)
}

// outbox returns node's outbox.
func (b *Broker) outbox(node string) *outbox {
	b.mu.Lock()
	defer b.mu.Unlock()
	o := b.outboxes[node]
	if o == nil {
		o = &outbox{b: b, node: node}
		b.outboxes[node] = o
	}
	return o
}

// push queues f and reports whether there was room.
func (o *outbox) push(f outFrame) bool {
	b := o.b
	b.mu.Lock()
	if len(o.q) >= outboxLimit || b.closed {
		b.mu.Unlock()
		return false
	}
	o.q = append(o.q, f)
	start := !o.running
	o.running = true
	b.mu.Unlock()
	if start {
		b.goSafe(o.run)
	}
	return true
}

// run sends what is queued, in order, until nothing is left.
func (o *outbox) run() {
	b := o.b
	for {
		b.mu.Lock()
		if len(o.q) == 0 || b.ctx.Err() != nil {
			// The outbox stays, empty: a second one for the same node
			// could send a stream's frames out of order.
			o.running = false
			o.q = nil
			b.mu.Unlock()
			return
		}
		f := o.q[0]
		o.q[0] = outFrame{}
		o.q = o.q[1:]
		b.mu.Unlock()
		ctx, cancel := b.callCtx(b.ctx)
		err := f.send(ctx)
		cancel()
		if err != nil && f.failed != nil {
			f.failed(err)
		}
	}
}

// deliver queues a delivery from h; false means the outbox is full and the
// node misses it.
//
// sc, when valid, is the span context of a sampled message among d's:
// the frame carries it, so the node's gateway.deliver joins its trace.
func (o *outbox) deliver(h *held, d peerapi.Delivery, sc trace.SpanContext) bool {
	send := func(ctx context.Context) error { return peerapi.Deliver.Send(ctx, o.b.peers, o.node, d) }
	if sc.IsValid() {
		send = func(ctx context.Context) error {
			return peerapi.Deliver.Send(trace.ContextWithSpanContext(ctx, sc), o.b.peers, o.node, d)
		}
	}
	return o.push(outFrame{
		send:   send,
		failed: func(err error) { h.deliveryFailed(o.node, err) },
	})
}

// tips queues how far the node's attached streams are acknowledged, in
// frames of at most tipBatch streams; tips still waiting from an earlier
// round are replaced, not added to.
func (o *outbox) tips(tips []peerapi.Tip) {
	b := o.b
	b.mu.Lock()
	if o.tipsQueued != nil {
		*o.tipsQueued = tips
		b.mu.Unlock()
		return
	}
	round := &tips
	o.tipsQueued = round
	b.mu.Unlock()
	ok := o.push(outFrame{send: func(ctx context.Context) error {
		b.mu.Lock()
		tips := *round
		if o.tipsQueued == round {
			o.tipsQueued = nil
		}
		b.mu.Unlock()
		for len(tips) > 0 {
			n := min(len(tips), tipBatch)
			if err := peerapi.Tips.Send(ctx, b.peers, o.node, tips[:n:n]); err != nil {
				b.log.Debug("tip to attached node failed", "node", o.node, "err", err)
				return nil
			}
			tips = tips[n:]
		}
		return nil
	}})
	if !ok {
		b.mu.Lock()
		if o.tipsQueued == round {
			o.tipsQueued = nil
		}
		b.mu.Unlock()
	}
}

// evict tells the node its connections of key must go: the stream moved,
// or (lost) it was lost.
func (o *outbox) evict(key session.Key, lost bool) {
	o.push(outFrame{
		send: func(ctx context.Context) error {
			return peerapi.Evict.Send(ctx, o.b.peers, o.node, peerapi.KeyNode{Key: key, Lost: lost})
		},
		failed: func(err error) { o.b.log.Debug("evict failed", "node", o.node, "stream", key, "err", err) },
	})
}

// detach tells the owner node that no connection here listens to key any
// more, for the attachments up to nonce.
func (o *outbox) detach(key session.Key, nonce uint64) {
	o.push(outFrame{send: func(ctx context.Context) error {
		return peerapi.Detach.Send(ctx, o.b.peers, o.node, peerapi.KeyNode{Key: key, Node: o.b.cfg.NodeID, Nonce: nonce})
	}})
}
