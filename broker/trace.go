package broker

import (
	"context"
	"errors"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/internal/tracing"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/gateway"
)

// Traces: every span of a publish past its entry is a child (tracing.Child),
// started only when the publish's trace is sampled, so an unsampled
// message costs a context lookup. What crosses nodes carries the span
// context in the peer frame (transport/peer); what is delivered later,
// from a queue, carries it with the message, only when sampled
// (held.traces, outbox deliveries).

// maxTraced bounds the span contexts one held stream keeps for messages
// not delivered yet: sampled messages beyond it are delivered untraced.
const maxTraced = 256

// keyAttr names a stream in a span: its user or its channel.
func keyAttr(key session.Key) attribute.KeyValue {
	if key.Kind == session.ChannelStream {
		return tracing.AttrChannel.String(key.Name)
	}
	return tracing.AttrUser.String(key.Name)
}

// seqAttrs are the seqs of msgs (first and last).
func seqAttrs(msgs []session.Message) []attribute.KeyValue {
	if len(msgs) == 0 {
		return nil
	}
	return []attribute.KeyValue{
		tracing.AttrSeq.Int64(int64(msgs[0].Seq)),
		tracing.AttrSeqLast.Int64(int64(msgs[len(msgs)-1].Seq)),
		tracing.AttrCount.Int(len(msgs)),
	}
}

// traceLocked remembers sc for the messages msgs until they are
// delivered (applyLocked), when sc is sampled.
func (h *held) traceLocked(msgs []session.Message, sc trace.SpanContext) {
	if !sc.IsSampled() {
		return
	}
	acked := h.o.Acked() // an id's retry may name a message delivered long ago
	if h.traces == nil {
		h.traces = map[uint64]trace.SpanContext{}
	}
	for _, m := range msgs {
		if len(h.traces) >= maxTraced {
			return
		}
		if m.Seq > acked {
			h.traces[m.Seq] = sc
		}
	}
}

// tracedLocked takes the span context of each message of msgs that has
// one; nil when none has (the untraced path allocates nothing).
func (h *held) tracedLocked(msgs []session.Message) []trace.SpanContext {
	if len(h.traces) == 0 {
		return nil
	}
	var scs []trace.SpanContext
	for i, m := range msgs {
		sc, ok := h.traces[m.Seq]
		if !ok {
			continue
		}
		delete(h.traces, m.Seq)
		if scs == nil {
			scs = make([]trace.SpanContext, len(msgs))
		}
		scs[i] = sc
	}
	if len(h.traces) == 0 {
		h.traces = nil
	}
	return scs
}

// firstTraced is the first valid span context of scs, for a frame that
// carries several messages.
func firstTraced(scs []trace.SpanContext) trace.SpanContext {
	for _, sc := range scs {
		if sc.IsValid() {
			return sc
		}
	}
	return trace.SpanContext{}
}

// delivery is the gateway.deliver span of one message on this node: it
// ends once every local connection that reports its writes
// (gateway.Notifier) has written the message, or failed to.
type delivery struct {
	span trace.Span
	left atomic.Int32
}

// startDelivery begins a message's gateway.deliver span under sc.
func (b *Broker) startDelivery(sc trace.SpanContext, key session.Key, seq uint64, sinks int) *delivery {
	_, span := b.cfg.Tracer.Under(context.Background(), sc, tracing.SpanGatewayDeliver, trace.SpanKindProducer)
	if !span.IsRecording() {
		return nil
	}
	span.SetAttributes(keyAttr(key), tracing.AttrSeq.Int64(int64(seq)))
	if sinks > 0 {
		span.SetAttributes(attribute.Int("switchboard.connections", sinks))
	}
	d := &delivery{span: span}
	d.left.Store(1) // the sender's own hold, let go by sent
	return d
}

// send queues frame on s as part of d.
func (d *delivery) send(s gateway.Sink, seq uint64, frame []byte) bool {
	if n, ok := s.(gateway.Notifier); ok {
		d.left.Add(1)
		if !n.SendThen(seq, frame, d.done) {
			d.done(errNotQueued) // refused: written will not be called
			return false
		}
		return true
	}
	return s.Send(seq, frame)
}

// errNotQueued marks a traced delivery a connection refused (closed, or
// its queue overflowed).
var errNotQueued = errors.New("connection closed or its queue full")

// done is a connection's report that it wrote the message (or not).
func (d *delivery) done(err error) {
	if err != nil {
		d.span.AddEvent("not written", trace.WithAttributes(attribute.String("error", err.Error())))
	}
	if d.left.Add(-1) == 0 {
		d.span.End()
	}
}

// sent lets go of the sender's hold once every connection has it queued.
func (d *delivery) sent() { d.done(nil) }
