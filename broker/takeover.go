package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/internal/tracing"
	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
)

// ownedElsewhere is returned by takeover when the claim lost the race: the
// entry names the current owner, fresher than the local replica may be.
type ownedElsewhere struct{ entry session.Entry }

func (o *ownedElsewhere) Error() string {
	return fmt.Sprintf("stream %q is owned by %s at epoch %d", o.entry.User, o.entry.Owner, o.entry.Epoch)
}

// takeover makes this node the owner of key's stream: claim in Raft
// (epoch+1), then seal the stream at the old owner and fetch it, and only
// then serve. Concurrent takeovers of one stream on this node share one
// attempt. seen, when not nil, is the entry whose owner the caller found
// gone (the zero entry: no stream yet): should the registry have moved
// on to a live owner meanwhile (another node took the stream over first),
// the takeover is not made, and ownedElsewhere names that owner. nil
// takes the stream from whoever holds it (a node asked to, by the owner).
func (b *Broker) takeover(ctx context.Context, key session.Key, avoid map[string]bool, attach bool, seen *session.Entry) (*held, error) {
	v, err, _ := b.flight.Do(key.String(), func() (any, error) {
		if h := b.local(key); h != nil {
			return h, nil
		}
		return b.claim(ctx, key, avoid, attach, seen)
	})
	if err != nil {
		return nil, err
	}
	return v.(*held), nil
}

// claim is claimStream in its session.takeover span: a trace's root when
// nothing traced asked for it (a hello, a promotion), else a step of the
// publish or takeover that did.
func (b *Broker) claim(ctx context.Context, key session.Key, avoid map[string]bool, attach bool, seen *session.Entry) (*held, error) {
	ctx, span := b.cfg.Tracer.Start(ctx, tracing.SpanSessionTakeover, trace.SpanKindInternal)
	if span.IsRecording() {
		span.SetAttributes(keyAttr(key), attribute.Bool("switchboard.attach", attach))
	}
	h, err := b.claimStream(ctx, key, avoid, attach, seen)
	tracing.End(span, err)
	return h, err
}

func (b *Broker) claimStream(ctx context.Context, key session.Key, avoid map[string]bool, attach bool, seen *session.Entry) (h *held, err error) {
	start := time.Now()
	b.mu.Lock()
	b.claiming[key] = true
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.claiming, key)
		b.mu.Unlock()
	}()
	name := key.String()
	e, ok := b.reg.Get(name)
	if seen != nil && ok && e.Epoch > seen.Epoch && e.Owner != b.cfg.NodeID && b.usable(e.Owner, avoid) {
		// Taken over by another node since the caller found its owner
		// gone (the nodes attached to a dead owner all react at once): go
		// there, rather than take the stream from a live owner.
		return nil, &ownedElsewhere{entry: e}
	}
	sess := e.Session
	switch {
	case !ok:
		sess = newSessionID()
	case b.lost(ctx, e):
		// Neither the old owner nor the backup exists any more: continuity
		// is lost, and a new session tells resuming clients so.
		sess = newSessionID()
		b.cfg.Observer.ContinuityLost()
	case !b.reachable(e, avoid):
		// The stream exists but nobody holding it can be reached now: a
		// claim would only churn epochs. The caller retries later.
		return nil, fmt.Errorf("%w: neither the owner %s nor the backup %s of %s is reachable", protocol.ErrUnavailable, e.Owner, e.Backup, key)
	default:
		// A takeover: the stream goes on here with its session.
		defer func() { b.cfg.Observer.TookOver(time.Since(start), err) }()
	}
	// The claim keeps the backup: it holds every acknowledged message, so
	// the registry must go on naming it until the new owner has copied the
	// stream somewhere (a failed fetch then leaves the data findable). With
	// no other backup, the old owner is named instead, for the same reason.
	keep := e.Backup
	if keep == "" || keep == b.cfg.NodeID {
		keep = e.Owner
	}
	if keep == "" {
		// Nobody else holds anything the registry must go on naming (a new
		// user, or the leader cleared a dead owner): the claim names the
		// new backup itself, which saves the set-backup commit. Should this
		// node die before copying there, the stream is lost either way.
		if p, err := b.pickBackup(key, avoid); err == nil {
			keep = p
		}
	}
	pctx, ps := b.cfg.Tracer.Child(ctx, tracing.SpanRegistryPropose, trace.SpanKindClient)
	res, err := b.reg.Propose(pctx, session.Command{
		Kind: session.KindClaim, User: name, Node: b.cfg.NodeID,
		Session: sess, Epoch: e.Epoch, Attach: attach, Backup: keep,
	})
	if ps.IsRecording() {
		ps.SetAttributes(attribute.String("switchboard.command", "claim"), keyAttr(key), tracing.AttrEpoch.Int64(int64(res.Entry.Epoch)),
			attribute.Int64("switchboard.epoch_was", int64(e.Epoch)), tracing.AttrBackup.String(keep))
		tracing.End(ps, errors.Join(err, res.Err))
		// The takeover's span says what the registry now holds: this
		// node's claim, or the entry that beat it.
		if s := trace.SpanFromContext(ctx); err == nil && s.IsRecording() {
			s.SetAttributes(tracing.AttrEpoch.Int64(int64(res.Entry.Epoch)), tracing.AttrOwner.String(res.Entry.Owner),
				tracing.AttrBackup.String(res.Entry.Backup), attribute.String("switchboard.node.owner_was", e.Owner),
				attribute.String("switchboard.node.backup_was", e.Backup), attribute.Bool("switchboard.new_session", res.Err == nil && sess != e.Session))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: claim %s: %v", protocol.ErrUnavailable, key, err)
	}
	if res.Err != nil {
		if errors.Is(res.Err, session.ErrStaleEpoch) {
			return nil, &ownedElsewhere{entry: res.Entry}
		}
		return nil, fmt.Errorf("claim %s: %w", key, res.Err)
	}
	b.log.Debug("claimed", "stream", key, "epoch", res.Entry.Epoch, "session", sess, "new_session", sess != e.Session,
		"was_owner", e.Owner, "was_backup", e.Backup, "backup", res.Entry.Backup)
	stream := session.NewStream(name, sess, res.Entry.Epoch, b.streamConfig(key))
	replicated := false
	if ok && sess == e.Session {
		// The backup the registry keeps naming, if it is to stay the
		// backup, keeps its sealed replica as this node's copy.
		keepAt := ""
		if res.Entry.Backup == e.Backup && b.usable(e.Backup, avoid) && b.isPeer(e.Backup) {
			keepAt = e.Backup
		}
		tail, from, empty, err := b.fetchTail(ctx, key, e, res.Entry.Epoch, avoid, keepAt)
		if err == nil {
			err = stream.Load(tail.Last, tail.Msgs)
		}
		if err != nil {
			// The stream still exists somewhere we cannot reach now. Never
			// start over while it might: the claim stands (it fences the
			// old holders, and the backup stays named), and the next
			// attempt fetches again.
			b.nameOldOwner(e, res.Entry, empty)
			return nil, fmt.Errorf("%w: recovering stream %s: %v", protocol.ErrUnavailable, key, err)
		}
		replicated = tail.Kept && from == keepAt
	}
	backup := res.Entry.Backup
	if !b.usable(backup, avoid) || !b.isPeer(backup) {
		backup = "" // the first flush chooses (and records) another one
	}
	h, err = b.serve(ctx, key, stream, backup, replicated && backup != "", attach)
	if err == nil && key.Kind == session.ChannelStream && ok && sess == e.Session && e.Owner != b.cfg.NodeID {
		// Another owner had the channel's presence set (the entry's owner,
		// or one the leader cleared as failed): rebuild it quietly, then
		// reconcile (presence.go).
		b.afterTakeover(h, e.Backup)
	}
	return h, err
}

// reachable says whether some holder of e's stream can be asked for it now.
func (b *Broker) reachable(e session.Entry, avoid map[string]bool) bool {
	return b.usable(e.Owner, avoid) || b.usable(e.Backup, avoid) || b.holdsLocally(e)
}

func (b *Broker) holdsLocally(e session.Entry) bool {
	key, err := session.ParseKey(e.User)
	return err == nil && (e.Owner == b.cfg.NodeID || e.Backup == b.cfg.NodeID) && (b.holder(key) != nil || b.replicaFor(key) != nil)
}

// lost says whether nobody can hand over the stream of e any more: this
// node holds no copy, and every node the registry still names as owner or
// backup answers that it does not hold it (it restarted). The leader's
// node-failed verdict clears a dead node from the entry; this node's own
// view is never enough: after a partition its gossip may call live nodes
// dead, and a node it cannot reach may hold the only copy. An unreachable
// holder therefore means "unknown", and the caller retries.
func (b *Broker) lost(ctx context.Context, e session.Entry) bool {
	if b.holdsLocally(e) {
		return false
	}
	for _, node := range []string{e.Owner, e.Backup} {
		if node == "" || node == b.cfg.NodeID {
			continue
		}
		if b.isDown(node) {
			return false // its link just failed: a probe would only fail too
		}
		if held, known := b.probe(ctx, node, e.User); held || !known {
			return false
		}
	}
	return true
}

// probe asks node whether it holds the stream named name, or its replica; known is
// false when it could not be asked.
func (b *Broker) probe(ctx context.Context, node, name string) (held, known bool) {
	key, err := session.ParseKey(name)
	if err != nil {
		return false, false
	}
	cctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	held, err = peerapi.Probe.Call(cctx, b.peers, node, key)
	return held, err == nil
}

// probeTimeout bounds the direct check behind lost().
const probeTimeout = 500 * time.Millisecond

// fetchTail seals the stream under the new epoch wherever it still lives
// and returns its content and the node it came from: from the old owner if
// it answers (it holds everything its backup has, and maybe appends not
// yet replicated), otherwise from the backup, which holds everything ever
// acknowledged. A backup named keepAt is asked to keep its sealed replica
// as the new owner's copy (handoffReply.Kept). On failure, empty lists the
// nodes that answered that they hold nothing.
func (b *Broker) fetchTail(ctx context.Context, key session.Key, e session.Entry, epoch uint64, avoid map[string]bool, keepAt string) (_ session.Tail, from string, empty map[string]bool, _ error) {
	var errs []error
	empty = map[string]bool{}
	check := func(rep session.Tail, err error, node, what string) (session.Tail, bool) {
		if err == nil && rep.Session != e.Session {
			err = fmt.Errorf("%s holds session %q, registry says %q", what, rep.Session, e.Session)
		}
		if err != nil {
			empty[node] = errors.Is(err, peerapi.ErrNotHere)
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
			return rep, false
		}
		return rep, true
	}
	if b.usable(e.Owner, avoid) {
		cctx, cancel := b.callCtx(ctx)
		rep, err := peerapi.Handoff.Call(cctx, b.peers, e.Owner, peerapi.HandoffRequest{Key: key, Epoch: epoch})
		cancel()
		if rep, ok := check(rep, err, e.Owner, "old owner "+e.Owner); ok {
			return rep, e.Owner, nil, nil
		}
	}
	if e.Backup == b.cfg.NodeID {
		rep, err := b.serveSeal(b.cfg.NodeID, peerapi.HandoffRequest{Key: key, Epoch: epoch})
		if rep, ok := check(rep, err, b.cfg.NodeID, "local replica"); ok {
			return rep, b.cfg.NodeID, nil, nil
		}
	} else if b.usable(e.Backup, avoid) {
		req := peerapi.HandoffRequest{Key: key, Epoch: epoch, Keep: e.Backup == keepAt}
		cctx, cancel := b.callCtx(ctx)
		rep, err := peerapi.Seal.Call(cctx, b.peers, e.Backup, req)
		cancel()
		if rep, ok := check(rep, err, e.Backup, "backup "+e.Backup); ok {
			return rep, e.Backup, nil, nil
		}
	}
	if len(errs) == 0 {
		return session.Tail{}, "", empty, errors.New("neither the old owner nor the backup is reachable")
	}
	return session.Tail{}, "", empty, errors.Join(errs...)
}

// nameOldOwner keeps a failed takeover from hiding the stream. The claim
// (claimed) named this node the owner and kept e's backup, which holds
// every acknowledged message. But if that backup has just answered that it
// holds nothing (it restarted), the old owner, whose fetch failed, is the
// only holder left: the claim sealed its stream, which it keeps retired
// for the resume window, but the registry no longer names it, and the next
// attempt would find no holder and start a new session over it. So it is
// recorded as the backup, where the next attempt asks for it. An old owner
// that answered it holds nothing, or that gossip no longer lists alive
// (the leader's node-failed would clear it anyway), is left out.
func (b *Broker) nameOldOwner(e, claimed session.Entry, empty map[string]bool) {
	old := e.Owner
	if old == "" || old == b.cfg.NodeID || old == claimed.Backup || empty[old] ||
		claimed.Backup == "" || !empty[claimed.Backup] || !b.cluster.Alive(old) {
		return
	}
	ctx, cancel := b.callCtx(b.ctx)
	defer cancel()
	res, err := b.reg.Propose(ctx, session.Command{
		Kind: session.KindSetBackup, User: e.User, Node: b.cfg.NodeID, Epoch: claimed.Epoch, Backup: old,
	})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		b.log.Warn("could not name the old owner after a failed fetch", "stream", e.User, "old_owner", old, "err", err)
		return
	}
	b.log.Info("backup holds nothing; old owner named instead", "stream", e.User, "old_owner", old, "epoch", res.Entry.Epoch)
}

// serve installs a freshly claimed stream as the one this node holds and
// copies it to the backup before anyone is served from it: what a client
// is shown must survive this node's crash too. replicated says the backup
// already holds exactly this content under the stream's epoch (it kept its
// sealed replica for this node), so there is nothing to copy. attached says
// the claim recorded a live connection, so attaching it proposes nothing.
func (b *Broker) serve(ctx context.Context, key session.Key, s *session.Stream, backup string, replicated, attached bool) (*held, error) {
	epoch := s.Epoch // read before the stream is shared: the owner adopts newer epochs under h.mu
	h := b.newHeld(key, s, backup, replicated, attached)
	b.mu.Lock()
	prev := b.held[key]
	b.held[key] = h
	if prev == nil && key.Kind == session.ChannelStream {
		b.heldChannels++
	}
	b.mu.Unlock()
	if prev != nil {
		prev.seal(epoch, false, "session reclaimed")
	}
	b.dropReplica(key, epoch) // this node is the owner now, not the backup
	h.mu.Lock()
	err := h.syncLocked(ctx)
	h.mu.Unlock()
	if err != nil {
		h.settle()
		return nil, err
	}
	return h, nil
}
