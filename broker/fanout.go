package broker

import (
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/gateway"
)

// A held stream's deliveries to its local connections. A stream with a
// few connections (a user's) writes each acknowledged message to their
// queues under its lock, as it acknowledges it; a stream with many (a
// channel's subscribers on its owner) queues the message here instead,
// and one goroutine of the stream writes it to every connection with the
// lock released. The publish is then answered once the backup has the
// message, not once ten thousand connection queues have it, and the lock
// is free for the next append meanwhile.
//
// Order: messages enter the queue under the stream's lock in the order
// they are acknowledged, and one goroutine at a time delivers them in
// that order; a stream delivers inline only while nothing is queued or
// being delivered. A connection that registers while messages are queued
// had every message up to its registration in its replay (or asked for
// live messages after it): it gets only the messages above the seq it was
// registered at (localSink.from), so nothing reaches it twice or out of
// order. A connection removed meanwhile may still be handed a message or
// two: its Send refuses them.
//
// Bound: appends wait (appendLocal, waitFanoutLocked) while fanoutLimit
// messages are queued; what is acknowledged then — the flushes already in
// flight — is still queued, so the queue holds at most fanoutLimit
// messages plus one flush per appender. A slow connection does not slow
// the queue: Send never blocks, and a connection whose own queue
// overflows is closed by the gateway (4008).
//
// Lifetime: the goroutine exists only while there is something to
// deliver (Broker.goSafe counts it; it returns when the broker closes).
// Sealing the stream — a takeover, a handover, a seal — closes every
// local connection and drops what is queued: those connections resume by
// seq at the new owner, which replays what they missed.

const (
	// fanoutInline: a stream with at most this many local connections
	// and nothing queued delivers under its lock (a goroutine hand-off
	// costs more than a few queue appends).
	fanoutInline = 4
	// fanoutLimit bounds the messages queued for a stream's local
	// connections before its appends wait.
	fanoutLimit = 4096
)

// localSink is a local connection of a held stream and the stream's
// acknowledged seq when it registered: it had everything up to from.
type localSink struct {
	gateway.Sink
	from uint64
}

// fanout is a held stream's local delivery queue; its fields are guarded
// by the held's mu, except snap, which only the running goroutine uses.
type fanout struct {
	q       []fanBatch
	n       int  // messages in q
	running bool // a goroutine delivers (q may be empty while it does)
	// gen counts changes of the held's sinks; snap is the running
	// goroutine's copy of them at snapGen.
	gen     uint64
	snap    []localSink
	snapGen uint64
}

// fanBatch is messages acknowledged together; scs, when not nil, holds
// the span contexts of the sampled ones (scs[i] for msgs[i]).
type fanBatch struct {
	msgs []session.Message
	scs  []trace.SpanContext
}

// deliverLocalLocked delivers msgs, just acknowledged, to the local
// connections: inline when that is cheap and keeps order, else through
// the queue.
func (h *held) deliverLocalLocked(msgs []session.Message, scs []trace.SpanContext) {
	f := &h.fan
	if !f.running && len(h.sinks) <= fanoutInline {
		if len(h.sinks) > 0 {
			sinks := make([]localSink, 0, len(h.sinks))
			for _, s := range h.sinks {
				sinks = append(sinks, s)
			}
			h.deliverLocal(sinks, msgs, scs)
		}
		return
	}
	if len(h.sinks) == 0 {
		return // nobody to deliver to; a connection registering later has these in its replay
	}
	f.q = append(f.q, fanBatch{msgs: msgs, scs: scs})
	f.n += len(msgs)
	if !f.running {
		f.running = true
		if !h.b.goSafe(h.runFanout) {
			f.running = false // the broker is closing
			f.q, f.n = nil, 0
		}
	}
}

// sinksChangedLocked records a change of h.sinks for the goroutine's copy.
func (h *held) sinksChangedLocked() { h.fan.gen++ }

// dropFanoutLocked forgets what is queued: the stream was sealed and its
// connections sent away.
func (h *held) dropFanoutLocked() {
	h.fan.q, h.fan.n = nil, 0
	h.cond.Broadcast()
}

// waitFanoutLocked waits while the local delivery queue is full.
func (h *held) waitFanoutLocked() {
	for h.fan.n >= fanoutLimit && !h.o.Sealed() && h.b.ctx.Err() == nil {
		h.cond.Wait() // runFanout broadcasts after every batch
	}
}

// runFanout delivers what is queued, in order, until nothing is left.
func (h *held) runFanout() {
	f := &h.fan
	for {
		h.mu.Lock()
		if len(f.q) == 0 || h.b.ctx.Err() != nil {
			f.running = false
			f.q, f.n = nil, 0
			f.snap = nil
			h.cond.Broadcast()
			h.mu.Unlock()
			return
		}
		q := f.q
		f.q, f.n = nil, 0
		if f.snap == nil || f.snapGen != f.gen {
			f.snap = f.snap[:0]
			for _, s := range h.sinks {
				f.snap = append(f.snap, s)
			}
			f.snapGen = f.gen
		}
		sinks := f.snap
		h.cond.Broadcast() // appenders waiting for room
		h.mu.Unlock()
		// Everything queued goes out in one pass, connection by
		// connection: a connection's writer then has all of it at once
		// and writes it in one syscall. The further behind, the larger
		// the pass.
		total := 0
		for _, batch := range q {
			total += len(batch.msgs)
		}
		msgs := make([]session.Message, 0, total)
		var scs []trace.SpanContext
		for i, batch := range q {
			if batch.scs != nil && scs == nil {
				scs = make([]trace.SpanContext, len(msgs), len(msgs)+len(batch.msgs))
			}
			msgs = append(msgs, batch.msgs...)
			if scs != nil {
				if batch.scs != nil {
					scs = append(scs, batch.scs...)
				} else {
					scs = append(scs, make([]trace.SpanContext, len(batch.msgs))...)
				}
			}
			q[i] = fanBatch{}
		}
		h.deliverLocal(sinks, msgs, scs)
	}
}

// deliverLocal writes msgs to sinks, each message to the sinks that
// registered before it was acknowledged, stopping if the stream is sealed
// meanwhile (its connections were sent away). A sampled message (scs[i]
// valid, when scs is not nil) has a gateway.deliver span on this node.
func (h *held) deliverLocal(sinks []localSink, msgs []session.Message, scs []trace.SpanContext) {
	var ds []*delivery
	if scs != nil && len(sinks) > 0 {
		ds = make([]*delivery, len(msgs))
		for i, m := range msgs {
			ds[i] = h.b.startDelivery(scs[i], h.key, m.Seq, len(sinks))
		}
	}
	n := 0
	for _, s := range sinks {
		if h.gone.Load() {
			break
		}
		for i, m := range msgs {
			if m.Seq <= s.from {
				continue
			}
			ok := false
			if ds != nil && ds[i] != nil {
				ok = ds[i].send(s.Sink, m.Seq, m.Frame)
			} else {
				ok = s.Send(m.Seq, m.Frame)
			}
			if !ok {
				break // closed, or its queue overflowed and the gateway closes it (4008): it takes nothing more
			}
			n++
		}
	}
	for _, d := range ds {
		if d != nil {
			d.sent()
		}
	}
	if h.b.cfg.OnDeliver != nil && n > 0 {
		h.b.cfg.OnDeliver(n)
	}
}
