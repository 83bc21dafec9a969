package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/internal/tracing"
	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/gateway"
)

// held is a stream this node owns: its state machine (session.Owned) and
// the local connections it delivers to, under one lock.
//
// Under the lock the broker feeds the machine events and performs what
// they return that cannot block: queueing frames on local connections
// (Sink.Send never blocks; a stream with many of them queues the messages
// for its fan-out goroutine instead, fanout.go) and on attached nodes'
// outboxes. Peer calls —
// replication, choosing a backup — run with the lock released; the
// machine's flushing state keeps a second flush out meanwhile, and cond
// wakes those waiting for it. Deliveries leave in the order the machine
// acknowledges them, which is what keeps every connection of a stream, on
// any node, in seq order (G1).
type held struct {
	key session.Key
	b   *Broker

	mu    sync.Mutex
	cond  *sync.Cond
	o     *session.Owned
	sinks map[uint64]localSink
	fan   fanout // deliveries to sinks (fanout.go)
	// gone mirrors o.Sealed() for readers that must not take mu (Broker.mu
	// is never held while taking a held's mu: the order is held.mu, then
	// Broker.mu).
	gone atomic.Bool
	// retiredAt is when it was retired (unix ms), for the retired purge.
	retiredAt atomic.Int64
	// quietUntil: a channel taken over from another owner sends no
	// presence events before then (unix ms; presence.go).
	quietUntil atomic.Int64
	// traces holds the span contexts of sampled messages not delivered
	// yet (trace.go); nil while there are none.
	traces map[uint64]trace.SpanContext
}

// newHeld wraps a stream this node just took over (session.NewOwned).
func (b *Broker) newHeld(key session.Key, s *session.Stream, backup string, replicated, attached bool) *held {
	h := &held{
		key: key, b: b,
		o:     session.NewOwned(key, s, backup, replicated, attached, b.now()),
		sinks: make(map[uint64]localSink),
	}
	h.cond = sync.NewCond(&h.mu)
	return h
}

// applyLocked performs the machine's effects. why explains a close.
func (h *held) applyLocked(eff session.Effects, why string) {
	if len(eff.Deliver) > 0 {
		scs := h.tracedLocked(eff.Deliver)
		h.deliverLocalLocked(eff.Deliver, scs)
		if h.key.Kind == session.ChannelStream {
			h.b.chanMsgs.Add(int64(len(eff.Deliver)))
			h.b.chanSends.Add(int64(len(eff.Deliver) * len(eff.To)))
		}
		if len(eff.To) > 0 {
			d := peerapi.Delivery{Key: h.key, Epoch: h.o.Epoch(), Msgs: eff.Deliver}
			sc := firstTraced(scs)
			for _, node := range eff.To {
				if !h.b.outbox(node).deliver(h, d, sc) {
					h.o.DeliveryFailed(node)
				}
			}
		}
	}
	if len(eff.Close) > 0 || len(eff.Evict) > 0 {
		err := protocol.Errorf(protocol.ErrMoved, "%s: reconnect to resume", why)
		if eff.Lost {
			err = protocol.Errorf(protocol.ErrContinuityLost, "%s: continuity lost, resync", why)
		}
		eps := h.b.endpoints()
		for _, id := range eff.Close {
			if s, ok := h.sinks[id]; ok {
				s.Close(err, eps)
				delete(h.sinks, id)
				h.sinksChangedLocked()
			}
		}
		if h.o.Sealed() {
			h.dropFanoutLocked()
		}
		for _, node := range eff.Evict {
			h.b.outbox(node).evict(h.key, eff.Lost)
		}
	}
	if eff.Record != 0 {
		h.b.states.record(h.key, eff.Record)
	}
}

// deliveryFailed is the outbox's report that node missed a delivery.
func (h *held) deliveryFailed(node string, err error) {
	h.b.log.Warn("deliver to attached node failed; it will be told to resume its connections", "stream", h.key, "node", node, "err", err)
	h.mu.Lock()
	h.o.DeliveryFailed(node)
	h.mu.Unlock()
}

func (h *held) session() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.o.Session()
}

func (h *held) isSealed() bool { return h.gone.Load() }

// append stores the requests reqs[idx...] in order, not yet acknowledged,
// and returns them with the highest seq among them.
func (h *held) appendLocked(reqs []PublishRequest, idx []int) ([]session.Message, uint64, error) {
	out := make([]session.Message, len(idx))
	var top uint64
	now := h.b.now()
	for k, i := range idx {
		m, err := h.o.Append(reqs[i].ID, reqs[i].Data, now)
		if err != nil {
			return nil, 0, err
		}
		out[k], top = m, max(top, m.Seq)
	}
	return out, top, nil
}

// waitAckedLocked waits until seq is acknowledged, replicating whenever
// no other flush is in flight.
func (h *held) waitAckedLocked(ctx context.Context, seq uint64) error {
	return h.replicateLocked(ctx, func() bool { return h.o.Acked() >= seq }, "replication of seq %d", seq)
}

// syncLocked copies the whole stream to a backup (even an empty one: the
// replica is what says the stream exists) and waits until everything held
// is acknowledged.
func (h *held) syncLocked(ctx context.Context) error {
	return h.replicateLocked(ctx, func() bool { return !h.o.NeedsReplication() }, "first copy of %s", h.key)
}

// replicateLocked flushes until done holds, the stream is sealed or ctx
// ends; what describes the wait in the error.
func (h *held) replicateLocked(ctx context.Context, done func() bool, what string, args ...any) error {
	for !done() {
		if h.o.Sealed() {
			return session.ErrSealed
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: %s: %v", protocol.ErrUnavailable, fmt.Sprintf(what, args...), err)
		}
		needBackup, ok := h.o.BeginFlush()
		if !ok {
			h.cond.Wait() // the flusher broadcasts within one call timeout
			continue
		}
		if err := h.flushLocked(ctx, needBackup); err != nil && ctx.Err() == nil {
			// Give the cluster a moment (a new backup, a healed link)
			// before the next attempt; bounded by the caller's ctx.
			h.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
			h.mu.Lock()
		}
	}
	return nil
}

// flushLocked runs the flush BeginFlush started: it chooses a backup if
// there is none, replicates what the backup needs, and on success
// acknowledges and delivers it. mu is released during the peer calls.
func (h *held) flushLocked(ctx context.Context, needBackup bool) error {
	defer func() {
		h.o.EndFlush()
		h.cond.Broadcast()
	}()
	if needBackup {
		avoid, epoch := h.o.LastFailed(), h.o.Epoch()
		h.mu.Unlock()
		backup, newEpoch, err := h.b.chooseBackup(ctx, h, epoch, avoid)
		h.mu.Lock()
		switch {
		case errors.Is(err, errNoBackup):
			// The only server of the cluster: durability is this process
			// only, as /v1/cluster reports.
			h.applyLocked(h.o.AckAlone(), "")
			return nil
		case err != nil:
			return err
		}
		if err := h.o.UseBackup(backup, newEpoch); err != nil {
			return err
		}
	}
	req, backup := h.o.Replication(), h.o.Backup()
	h.mu.Unlock()
	sctx, span := h.b.cfg.Tracer.Child(ctx, tracing.SpanStreamReplicate, trace.SpanKindClient)
	if span.IsRecording() {
		span.SetAttributes(append(seqAttrs(req.Msgs), keyAttr(h.key), tracing.AttrEpoch.Int64(int64(req.Epoch)),
			tracing.AttrOwner.String(h.b.cfg.NodeID), tracing.AttrBackup.String(backup), attribute.Bool("switchboard.full", req.Full))...)
	}
	cctx, cancel := h.b.callCtx(sctx)
	start := time.Now()
	_, err := peerapi.Replicate.Call(cctx, h.b.peers, backup, req)
	cancel()
	if err == nil {
		h.b.cfg.Observer.Replicated(time.Since(start))
	}
	tracing.End(span, err)
	h.mu.Lock()
	return h.replicatedLocked(req, backup, err)
}

// replicatedLocked applies the backup's answer to req.
func (h *held) replicatedLocked(req session.Replication, backup string, callErr error) error {
	wasSealed := h.o.Sealed()
	eff, err := h.o.Replicated(req, backup, callErr)
	switch {
	case err == nil, wasSealed, errors.Is(callErr, session.ErrGap):
	case errors.Is(callErr, session.ErrStaleEpoch):
		h.b.log.Info("backup refused an append: stream taken over", "stream", h.key, "backup", backup)
	default:
		h.b.linkFailed(backup, callErr)
		h.b.log.Warn("replication to backup failed; choosing another", "stream", h.key, "backup", backup, "err", callErr)
	}
	if h.o.Sealed() && !wasSealed {
		h.gone.Store(true)
		h.cond.Broadcast()
	}
	h.applyLocked(eff, "session moved to another node")
	return err
}

// endBatchLocked applies the backup's answer to a replication carried by a
// batched call (BeginPlainFlush); skip means the call never reached the
// replication (an older backup), which leaves everything pending for the
// next flush.
func (h *held) endBatchLocked(req session.Replication, backup string, err error, skip bool) {
	if !skip {
		_ = h.replicatedLocked(req, backup, err)
	}
	h.o.EndFlush()
	h.cond.Broadcast()
}

// errReleased answers a hello for a stream promised to another node's
// takeover: the hello routes again shortly, to the new owner.
var errReleased = fmt.Errorf("%w: stream being handed to another node", protocol.ErrUnavailable)

// attach sends a local connection the welcome and the replay and registers
// it, all under mu so that no delivery can slip between them.
func (h *held) attach(ctx context.Context, sink gateway.Sink, pos position) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.o.Sealed() {
		return session.ErrSealed
	}
	// Promised to another node's takeover: wait for its claim to seal
	// the stream here (the hello then follows it there), or for the
	// promise to lapse.
	for h.o.Released(h.b.now()) && !h.o.Sealed() {
		h.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
		h.mu.Lock()
		if ctx.Err() != nil {
			return errReleased
		}
	}
	if h.o.Sealed() {
		return session.ErrSealed
	}
	now := h.b.now()
	resumed, replay := true, []session.Message(nil)
	if !pos.live {
		if h.o.CatchingUp(pos.session, pos.after, pos.asked) {
			if err := h.waitAckedLocked(ctx, pos.after); err != nil {
				return err
			}
		}
		resumed, replay = h.o.ResumePoint(pos.session, pos.after, pos.asked)
	}
	if !h.b.greet(sink, h.o.Session(), h.o.Acked(), resumed, func() []string { return h.b.endpointsFor(h.key, h.o.Backup()) }) {
		return fmt.Errorf("%w: connection closed before welcome", protocol.ErrUnavailable)
	}
	for _, m := range replay {
		if !sink.Send(m.Seq, m.Frame) {
			h.applyLocked(h.o.Settle(now), "") // a claim may have recorded it attached
			return nil                         // the gateway closed it (4008); Gone will follow
		}
	}
	h.sinks[sink.ID()] = localSink{Sink: sink, from: h.o.Acked()}
	h.sinksChangedLocked()
	h.applyLocked(h.o.AddLocal(sink.ID(), now), "")
	return nil
}

func (h *held) detachSink(id uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.sinks, id)
	h.sinksChangedLocked()
	h.applyLocked(h.o.RemoveLocal(id, h.b.now()), "")
}

// attachRemote registers node's connection, returning the welcome data
// and the replay. Asked to release (the connection arrived there while
// this stream is idle), an idle stream is promised to that node's
// takeover instead: the stream follows its connections.
func (h *held) attachRemote(req peerapi.AttachRequest) (peerapi.AttachReply, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.o.Sealed() {
		return peerapi.AttachReply{}, session.ErrSealed
	}
	now := h.b.now()
	if req.Release && h.o.Release(now, now+h.b.cfg.CallTimeout.Milliseconds()) {
		return peerapi.AttachReply{}, fmt.Errorf("%w: %s", peerapi.ErrIdle, h.key)
	}
	if req.Live {
		h.applyLocked(h.o.AddRemote(req.Node, req.Nonce, now), "")
		return peerapi.AttachReply{Session: h.o.Session(), Epoch: h.o.Epoch(), Last: h.o.Acked(), Resumed: true}, nil
	}
	if h.o.CatchingUp(req.Session, req.After, true) {
		// This runs on the peer link's read loop and must not wait: the
		// attaching node re-reads and retries.
		return peerapi.AttachReply{}, fmt.Errorf("%w: stream %s is still being replicated up to seq %d", peerapi.ErrNotHere, h.key, req.After)
	}
	resumed, replay := h.o.ResumePoint(req.Session, req.After, true)
	h.applyLocked(h.o.AddRemote(req.Node, req.Nonce, now), "")
	return peerapi.AttachReply{Session: h.o.Session(), Epoch: h.o.Epoch(), Last: h.o.Acked(), Resumed: resumed, Msgs: replay}, nil
}

// detachRemote forgets node's attachments up to nonce (0: any).
func (h *held) detachRemote(node string, nonce uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.applyLocked(h.o.RemoveRemote(node, nonce, h.b.now()), "")
}

// settle brings the registry's attached/detached state in step with the
// connections actually here (session.Owned.Settle).
func (h *held) settle() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.applyLocked(h.o.Settle(h.b.now()), "")
}

// seal fences the stream for a newer owner at epoch and sends its
// connections away: to resume at the new owner, or (lost) to resync. An
// epoch not newer than the stream's own is stale news and changes nothing.
func (h *held) seal(epoch uint64, lost bool, why string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	eff, ok := h.o.Seal(epoch, lost)
	if ok {
		h.gone.Store(true)
		h.cond.Broadcast() // appenders waiting for replication route again
	}
	h.applyLocked(eff, why)
	return ok
}

// handoff seals the stream for a new owner at epoch and returns all it
// holds (session.Owned.Handoff).
func (h *held) handoff(epoch uint64) (session.Tail, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	tail, eff, err := h.o.Handoff(epoch)
	if err != nil {
		return tail, err
	}
	h.gone.Store(true)
	h.cond.Broadcast()
	h.applyLocked(eff, "session moved to another node")
	return tail, nil
}

// greeter is a sink that writes its own welcome: a channel subscription
// answers with `subscribed`, or with nothing when it resumes unnoticed.
type greeter interface {
	greet(session string, seq uint64, resumed bool) bool
}

// greet queues the welcome of a connection served from a stream at
// session whose highest visible seq is seq; endpoints are computed only
// for a connection that gets a welcome frame. False: the sink is closed.
func (b *Broker) greet(sink gateway.Sink, sess string, seq uint64, resumed bool, endpoints func() []string) bool {
	if g, ok := sink.(greeter); ok {
		return g.greet(sess, seq, resumed)
	}
	return sink.Send(seq, b.welcome(sess, seq, resumed, endpoints()))
}

// welcome encodes the welcome frame for a connection served from a
// stream at session, whose highest visible seq is seq.
func (b *Broker) welcome(sess string, seq uint64, resumed bool, endpoints []string) []byte {
	return protocol.EncodeWelcome(protocol.Welcome{
		Session: sess, Node: b.cfg.NodeID, Region: b.cfg.Region, Zone: b.cfg.Zone,
		Resumed: resumed, Seq: seq, HeartbeatMS: b.cfg.Heartbeat.Milliseconds(),
		Endpoints: endpoints,
	})
}
