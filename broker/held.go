package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport"
)

// errSealed means a held stream was fenced while a request used it.
var errSealed = errors.New("stream sealed")

// held is a stream this node owns, with everyone it delivers to: local
// connections and other nodes that serve connections of the same user.
//
// An append is stored locally at once (it gets its seq), but it becomes
// visible (acknowledged to the publisher, delivered, replayed) only once
// the backup holds it too: `acked` is the highest seq both nodes have.
// Replication is group-committed: whichever appender finds no flush in
// progress replicates everything pending in one peer call, and the others
// wait on cond. Deliveries happen in flush order under mu, which is what
// keeps every connection of the user in seq order (G1) and means no client
// ever sees a message a crash could take back (G2).
type held struct {
	user string
	b    *Broker

	mu       sync.Mutex
	cond     *sync.Cond
	stream   *session.Stream
	acked    uint64            // highest seq replicated (or durable locally)
	pending  []session.Message // appended, not yet acked, in seq order
	flushing bool
	backup   string // replica node; "" when none is known yet
	// lastFailed is the backup a replication last failed to reach. Gossip
	// may still call it alive for seconds, so the next choice avoids it
	// while another node is available.
	lastFailed string
	fullCopy   bool // the backup needs the whole stream, not just pending
	sealed     bool
	// gone mirrors sealed for readers that must not take mu (Broker.mu is
	// never held while taking a held's mu: the order is held.mu, then
	// Broker.mu).
	gone atomic.Bool
	// retiredAt is when it was retired (unix ms), for the retired purge.
	retiredAt atomic.Int64

	sinks map[uint64]transport.Sink
	// remotes are the nodes with connections of this user attached here.
	// false marks one whose delivery failed: it missed messages, gets no
	// more deliveries (each would cost this stream up to a call timeout),
	// and learns from the next tip that it must send its connections to
	// resume; it counts as attached until it detaches or re-attaches.
	remotes map[string]bool
	// idleSince is when the last connection (local or remote) went away;
	// zero while any is attached.
	idleSince time.Time
}

// newHeld wraps a stream this node just took over. Everything it holds is
// not acknowledged until the first flush has copied it to a backup, unless
// replicated says backup holds exactly this content already (a backup that
// kept its sealed replica for this owner). attached says the claim recorded
// a live connection: the registry already says attached.
func (b *Broker) newHeld(user string, s *session.Stream, backup string, replicated, attached bool) *held {
	h := &held{
		user: user, b: b, stream: s, backup: backup, fullCopy: true,
		sinks:     make(map[uint64]transport.Sink),
		remotes:   make(map[string]bool),
		idleSince: b.cfg.Now(),
	}
	h.cond = sync.NewCond(&h.mu)
	if attached {
		h.idleSince = time.Time{}
	}
	if replicated && backup != "" {
		h.fullCopy = false
		h.acked = s.Last()
		return h
	}
	if msgs, err := s.Since(s.Last() - uint64(s.Len())); err == nil {
		h.pending = msgs
	}
	h.acked = s.Last() - uint64(len(h.pending))
	return h
}

// appendMany appends the messages reqs[idx...] in order and returns once
// all are replicated: one flush carries them all.
func (h *held) appendMany(ctx context.Context, reqs []PublishRequest, idx []int) ([]session.Message, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out, top, err := h.appendLocked(reqs, idx)
	if err != nil {
		return nil, err
	}
	return out, h.waitAckedLocked(ctx, top)
}

// appendLocked stores the messages reqs[idx...] in order, not yet
// replicated, and returns them with the highest seq among them.
func (h *held) appendLocked(reqs []PublishRequest, idx []int) ([]session.Message, uint64, error) {
	if h.sealed {
		return nil, 0, errSealed
	}
	out := make([]session.Message, len(idx))
	var top uint64
	now := h.b.now()
	for k, i := range idx {
		m, dup, err := h.stream.Append(reqs[i].ID, reqs[i].Data, now)
		if err != nil {
			return nil, 0, err
		}
		if !dup {
			h.pending = append(h.pending, m)
		}
		out[k], top = m, max(top, m.Seq)
	}
	return out, top, nil
}

// waitAckedLocked waits until seq is replicated, flushing when nobody else is.
func (h *held) waitAckedLocked(ctx context.Context, seq uint64) error {
	for h.acked < seq {
		if h.sealed {
			return errSealed
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: replication of seq %d: %v", ErrUnavailable, seq, err)
		}
		if h.flushing {
			h.cond.Wait() // the flusher broadcasts within one call timeout
			continue
		}
		if err := h.flushLocked(ctx); err != nil && ctx.Err() == nil {
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

// syncLocked copies the whole stream to a backup (even an empty one: the
// replica is what says the stream exists) and waits until everything
// held is acknowledged.
func (h *held) syncLocked(ctx context.Context) error {
	for h.fullCopy || h.acked < h.stream.Last() {
		if h.sealed {
			return errSealed
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: first copy of %s: %v", ErrUnavailable, h.user, err)
		}
		if h.flushing {
			h.cond.Wait()
			continue
		}
		if err := h.flushLocked(ctx); err != nil && ctx.Err() == nil {
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

// flushLocked replicates what is pending (or the whole stream, to a new
// backup) and, on success, acknowledges and delivers it. mu is released
// during the peer call; flushing keeps other flushers out meanwhile.
func (h *held) flushLocked(ctx context.Context) error {
	h.flushing = true
	defer func() {
		h.flushing = false
		h.cond.Broadcast()
	}()
	if h.backup == "" {
		avoid, epoch := h.lastFailed, h.stream.Epoch
		h.mu.Unlock()
		backup, newEpoch, err := h.b.chooseBackup(ctx, h, epoch, avoid)
		h.mu.Lock()
		switch {
		case errors.Is(err, errNoBackup):
			// The only server of the cluster: durability is this process
			// only, as /v1/cluster reports.
			h.fullCopy = false
			h.ackLocked(h.stream.Last())
			return nil
		case err != nil:
			return err
		}
		if h.sealed {
			return errSealed
		}
		h.stream.Adopt(newEpoch)
		h.backup, h.fullCopy = backup, true
	}
	req := h.replicateRequestLocked()
	backup := h.backup
	h.mu.Unlock()
	cctx, cancel := h.b.callCtx(ctx)
	_, err := h.b.call(cctx, backup, methodReplicate, encodeReplicate(req))
	cancel()
	h.mu.Lock()
	return h.flushedLocked(req, backup, err)
}

// replicateRequestLocked is what the backup needs now: the pending
// appends, or the whole stream when it needs a full copy.
func (h *held) replicateRequestLocked() replicateRequest {
	req := replicateRequest{User: h.user, Session: h.stream.Session, Epoch: h.stream.Epoch, Full: h.fullCopy}
	if req.Full {
		t := tailOf(h.stream)
		req.Last, req.Msgs = t.Last, t.Msgs
	} else {
		req.Msgs = append([]session.Message(nil), h.pending...)
		req.Last = h.stream.Last()
	}
	if len(req.Msgs) > 0 {
		req.Last = req.Msgs[len(req.Msgs)-1].Seq
	}
	return req
}

// takeBatchLocked starts a flush that a batched replication call will
// carry (replicateBatch): only the plain case, pending appends to a known
// backup; anything else (no backup yet, a full copy, a flush in flight)
// goes through flushLocked. The caller ends it with endBatchLocked.
func (h *held) takeBatchLocked() (replicateRequest, string, bool) {
	if h.sealed || h.flushing || h.backup == "" || h.fullCopy || len(h.pending) == 0 {
		return replicateRequest{}, "", false
	}
	h.flushing = true
	return h.replicateRequestLocked(), h.backup, true
}

// endBatchLocked applies the backup's answer to a batched flush, or, when
// the call never reached the replication (skip), leaves everything pending
// for the next flush.
func (h *held) endBatchLocked(req replicateRequest, backup string, err error, skip bool) {
	defer func() {
		h.flushing = false
		h.cond.Broadcast()
	}()
	if !skip {
		_ = h.flushedLocked(req, backup, err)
	}
}

// flushedLocked applies the backup's answer to the replication of req.
func (h *held) flushedLocked(req replicateRequest, backup string, err error) error {
	if h.sealed {
		return errSealed // a new owner took over meanwhile: nothing more is acked here
	}
	switch {
	case err == nil:
		h.fullCopy = false
		h.ackLocked(req.Last)
		return nil
	case errors.Is(err, session.ErrStaleEpoch):
		h.b.log.Info("backup refused an append: stream taken over", "user", h.user, "backup", backup)
		h.sealLocked(h.stream.Epoch+1, "session moved to another node")
		return errSealed
	case errors.Is(err, session.ErrGap):
		h.fullCopy = true
	default:
		h.b.linkFailed(backup, err)
		h.b.log.Warn("replication to backup failed; choosing another", "user", h.user, "backup", backup, "err", err)
		// The next flush picks a new backup, not this one, and copies everything.
		h.backup, h.lastFailed = "", backup
	}
	return err
}

// ackLocked makes everything up to seq visible: publishers are answered
// and connections get the messages, in order.
func (h *held) ackLocked(seq uint64) {
	if seq <= h.acked {
		return
	}
	n := 0
	for n < len(h.pending) && h.pending[n].Seq <= seq {
		n++
	}
	visible := h.pending[:n]
	h.pending = append([]session.Message(nil), h.pending[n:]...)
	h.acked = seq
	h.deliverLocked(visible)
}

// deliverLocked sends msgs to local sinks and attached nodes, in order.
func (h *held) deliverLocked(msgs []session.Message) {
	if len(msgs) == 0 {
		return
	}
	for _, s := range h.sinks {
		for _, m := range msgs {
			s.Send(m.Seq, m.Frame) // on overflow the gateway closes the sink (4008)
		}
	}
	if h.b.cfg.OnDeliver != nil && len(h.sinks) > 0 {
		h.b.cfg.OnDeliver(len(h.sinks) * len(msgs))
	}
	if len(h.remotes) == 0 {
		return
	}
	var payload []byte
	for node, live := range h.remotes {
		if !live {
			continue
		}
		if payload == nil {
			payload = encodeDeliver(deliver{User: h.user, Epoch: h.stream.Epoch, Msgs: msgs})
		}
		ctx, cancel := context.WithTimeout(h.b.ctx, h.b.cfg.CallTimeout)
		err := h.b.peers.Send(ctx, node, methodDeliver, payload)
		cancel()
		if err != nil {
			// That node missed these messages. Dropping it silently would
			// leave its connections waiting for them forever; the tips
			// (sendTips) tell it, and it sends them to resume.
			h.b.log.Warn("deliver to attached node failed; it will be told to resume its connections", "user", h.user, "node", node, "err", err)
			h.remotes[node] = false
		}
	}
}

// visibleLocked returns the acknowledged messages after `after`, or an
// error when they are not all here.
func (h *held) visibleLocked(after uint64) ([]session.Message, error) {
	if after > h.acked {
		return nil, fmt.Errorf("%w: resume seq %d is ahead of the stream (%d)", session.ErrGap, after, h.acked)
	}
	msgs, err := h.stream.Since(after)
	if err != nil {
		return nil, err
	}
	n := 0
	for n < len(msgs) && msgs[n].Seq <= h.acked {
		n++
	}
	return msgs[:n], nil
}

// resumePointLocked decides whether a hello continues the stream and what
// to replay. Continuity holds when the client names the current session
// (or none, asking for what was kept while it was offline) and every
// message after its seq is still here; otherwise resumed is false and the
// client must resync (G2: never a silent gap).
func (h *held) resumePointLocked(r *transport.Resume) (bool, []session.Message) {
	if r == nil {
		return false, nil
	}
	if r.Session != "" && r.Session != h.stream.Session {
		return false, nil
	}
	msgs, err := h.visibleLocked(r.Seq)
	if err != nil {
		return false, nil
	}
	return true, msgs
}

// catchingUpLocked says whether a resume asks for a point the stream
// holds but has not yet replicated: a stream just taken over, whose first
// copy to its new backup is in flight. The client saw those messages at
// the old owner; telling it continuity is lost would be false.
func (h *held) catchingUpLocked(r *transport.Resume) bool {
	return r != nil && (r.Session == "" || r.Session == h.stream.Session) &&
		r.Seq > h.acked && r.Seq <= h.stream.Last()
}

// attach registers a local sink after sending it the welcome and the
// replay, all under mu so that no delivery can slip between them.
func (h *held) attach(ctx context.Context, sink transport.Sink, resume *transport.Resume) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sealed {
		return errSealed
	}
	if h.catchingUpLocked(resume) {
		if err := h.waitAckedLocked(ctx, resume.Seq); err != nil {
			return err
		}
	}
	resumed, replay := h.resumePointLocked(resume)
	w := h.b.welcome(h.stream.Session, h.acked, resumed, h.b.endpointsFor(h.user, h.backup))
	if !sink.Send(h.acked, w) {
		return fmt.Errorf("%w: connection closed before welcome", ErrUnavailable)
	}
	for _, m := range replay {
		if !sink.Send(m.Seq, m.Frame) {
			h.touchLocked() // a claim may have recorded it attached
			return nil      // the gateway closed it (4008); Gone will follow
		}
	}
	h.sinks[sink.ID()] = sink
	h.touchLocked()
	return nil
}

func (h *held) detachSink(id uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.sinks[id]; !ok {
		return
	}
	delete(h.sinks, id)
	h.touchLocked()
}

func (h *held) attachRemote(node string, after uint64, sess string) (attachReply, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sealed {
		return attachReply{}, errSealed
	}
	r := &transport.Resume{Session: sess, Seq: after}
	if h.catchingUpLocked(r) {
		// This runs on the peer link's read loop and must not wait: the
		// attaching node re-reads and retries.
		return attachReply{}, fmt.Errorf("%w: stream of %s is still being replicated up to seq %d", ErrNotHere, h.user, after)
	}
	resumed, replay := h.resumePointLocked(r)
	h.remotes[node] = true
	h.touchLocked()
	return attachReply{Session: h.stream.Session, Epoch: h.stream.Epoch, Last: h.acked, Resumed: resumed, Msgs: replay}, nil
}

func (h *held) detachRemote(node string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.remotes[node]; !ok {
		return
	}
	delete(h.remotes, node)
	h.touchLocked()
}

// settle brings the registry's attached/detached state in step with the
// connections actually here: a claim that recorded a connection which then
// never attached (its hello failed) leaves the stream idle.
func (h *held) settle() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.sealed {
		h.touchLocked()
	}
}

// touchLocked keeps idleSince and the registry's attached/detached state
// in step with whether anyone is connected.
func (h *held) touchLocked() {
	idle := len(h.sinks) == 0 && len(h.remotes) == 0
	switch {
	case idle && h.idleSince.IsZero():
		h.idleSince = h.b.cfg.Now()
		h.b.proposeState(h.user, h.stream.Epoch, session.KindDetach)
	case !idle && !h.idleSince.IsZero():
		h.idleSince = time.Time{}
		h.b.proposeState(h.user, h.stream.Epoch, session.KindAttach)
	}
}

// seal fences the stream for a newer owner at epoch and closes its local
// connections: they reconnect and resume at the new owner. An epoch not
// newer than the stream's own is stale news and changes nothing.
func (h *held) seal(epoch uint64, why string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sealLocked(epoch, why)
}

func (h *held) sealLocked(epoch uint64, why string) bool {
	if epoch <= h.stream.Epoch {
		return false
	}
	h.stream.Seal(epoch)
	if h.sealed {
		return true
	}
	h.sealed = true
	h.gone.Store(true)
	h.cond.Broadcast() // appenders waiting for replication fail over now
	for id, s := range h.sinks {
		s.Close(transport.CloseDraining, transport.CodeDraining, why+": reconnect to resume", h.b.endpoints())
		delete(h.sinks, id)
	}
	for node := range h.remotes {
		h.b.evict(node, h.user)
	}
	h.remotes = map[string]bool{}
	return true
}

// handoff seals the stream for a new owner at epoch and returns everything
// it holds, acknowledged or not: the new owner replicates it before
// serving, and publishers still waiting here retry there with their ids.
func (h *held) handoff(epoch uint64) (handoffReply, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if epoch <= h.stream.Epoch {
		return handoffReply{}, fmt.Errorf("%w: handoff at epoch %d is not newer than the stream's", session.ErrStaleEpoch, epoch)
	}
	h.sealLocked(epoch, "session moved to another node") // a retired stream is sealed already
	return tailOf(h.stream), nil
}

// proposeState records attach/detach in the registry in the background.
// It is advisory (it decides remote attach versus takeover, and starts the
// resume window) and fenced by epoch, so failures are only logged. Updates
// of one user are sent one at a time and coalesced to the latest wanted
// state, so a quick detach+attach can never land in the wrong order.
func (b *Broker) proposeState(user string, _ uint64, kind session.Kind) {
	b.stateMu.Lock()
	b.stateWant[user] = kind
	busy := b.stateBusy[user]
	b.stateBusy[user] = true
	b.stateMu.Unlock()
	if busy {
		return // the running sender picks the new state up
	}
	b.goSafe(func() {
		var last session.Kind
		for {
			b.stateMu.Lock()
			want, ok := b.stateWant[user]
			h := b.local(user)
			if !ok || want == last || h == nil {
				delete(b.stateWant, user)
				delete(b.stateBusy, user)
				b.stateMu.Unlock()
				return
			}
			b.stateMu.Unlock()
			// The epoch is read now, not when the change was asked for:
			// a set-backup in between moved it on.
			h.mu.Lock()
			epoch := h.stream.Epoch
			h.mu.Unlock()
			ctx, cancel := context.WithTimeout(b.ctx, 2*b.cfg.CallTimeout)
			_, err := b.reg.Propose(ctx, session.Command{Kind: want, User: user, Node: b.cfg.NodeID, Epoch: epoch})
			cancel()
			if err != nil && !errors.Is(err, context.Canceled) {
				b.log.Debug("registry state update failed", "user", user, "kind", want, "err", err)
			}
			last = want
			if b.ctx.Err() != nil {
				return
			}
		}
	})
}

// welcome encodes the welcome frame for a connection served from a
// stream at session, whose highest visible seq is seq.
func (b *Broker) welcome(sess string, seq uint64, resumed bool, endpoints []string) []byte {
	return transport.EncodeWelcome(transport.Welcome{
		Session: sess, Node: b.cfg.NodeID, Region: b.cfg.Region, Zone: b.cfg.Zone,
		Resumed: resumed, Seq: seq, HeartbeatMS: b.cfg.Heartbeat.Milliseconds(),
		Endpoints: endpoints,
	})
}
