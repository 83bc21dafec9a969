package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/switchboard/switchboard/session"
)

// ownedElsewhere is returned by takeover when the claim lost the race: the
// entry names the current owner, fresher than the local replica may be.
type ownedElsewhere struct{ entry session.Entry }

func (o *ownedElsewhere) Error() string {
	return fmt.Sprintf("user %s is owned by %s at epoch %d", o.entry.User, o.entry.Owner, o.entry.Epoch)
}

// route finds where user's stream lives: a stream held here (h != nil) or
// the owner to forward to. Where nobody reachable holds it, this node
// takes it over. avoid lists owners found unreachable during this request.
func (b *Broker) route(ctx context.Context, user string, hint *session.Entry, avoid map[string]bool, attach bool) (*held, string, error) {
	if h := b.local(user); h != nil && !h.isSealed() {
		return h, "", nil
	}
	e, ok := b.entry(user, hint)
	if ok && e.Owner != b.cfg.NodeID && !avoid[e.Owner] && b.cluster.Alive(e.Owner) {
		return nil, e.Owner, nil
	}
	h, err := b.takeover(ctx, user, avoid, attach)
	return h, "", err
}

// entry prefers a hint learned from a failed claim over the local replica,
// which may not have applied that claim yet.
func (b *Broker) entry(user string, hint *session.Entry) (session.Entry, bool) {
	e, ok := b.reg.Get(user)
	if hint != nil && hint.User == user && (!ok || hint.Epoch > e.Epoch) {
		return *hint, hint.Epoch > 0
	}
	return e, ok
}

// takeover makes this node the owner of user's stream: claim in Raft
// (epoch+1), then seal the stream at the old owner and fetch it, and only
// then serve. Concurrent takeovers of one user on this node share one
// attempt.
func (b *Broker) takeover(ctx context.Context, user string, avoid map[string]bool, attach bool) (*held, error) {
	v, err, _ := b.flight.Do(user, func() (any, error) {
		if h := b.local(user); h != nil && !h.isSealed() {
			return h, nil
		}
		return b.claim(ctx, user, avoid, attach)
	})
	if err != nil {
		return nil, err
	}
	return v.(*held), nil
}

func (b *Broker) claim(ctx context.Context, user string, avoid map[string]bool, attach bool) (*held, error) {
	e, ok := b.reg.Get(user)
	old := e.Owner
	fetch := ok && old != "" && old != b.cfg.NodeID && !avoid[old] && b.cluster.Alive(old)
	sess := e.Session
	if !fetch {
		// Nobody reachable holds the stream: continuity is lost and a new
		// session tells resuming clients so (resumed:false).
		sess = newSessionID()
	}
	res, err := b.reg.Propose(ctx, session.Command{
		Kind: session.KindClaim, User: user, Node: b.cfg.NodeID,
		Session: sess, Epoch: e.Epoch, Attach: attach,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: claim %s: %v", ErrUnavailable, user, err)
	}
	if res.Err != nil {
		if errors.Is(res.Err, session.ErrStaleEpoch) {
			return nil, &ownedElsewhere{entry: res.Entry}
		}
		return nil, fmt.Errorf("claim %s: %w", user, res.Err)
	}
	epoch := res.Entry.Epoch
	stream := session.NewStream(user, sess, epoch, b.cfg.Stream)
	if fetch {
		if err := b.fetchFrom(ctx, old, stream); err != nil {
			b.log.Warn("handoff failed; starting a new session", "user", user, "from", old, "err", err)
			return b.restart(ctx, user, epoch, attach)
		}
	}
	return b.install(user, stream), nil
}

// fetchFrom seals the stream at its old owner under the new epoch and
// loads everything it held into stream.
func (b *Broker) fetchFrom(ctx context.Context, old string, stream *session.Stream) error {
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	p, err := b.peers.Call(cctx, old, methodHandoff, encodeHandoff(handoffRequest{User: stream.User, Epoch: stream.Epoch}))
	if err != nil {
		return err
	}
	rep, err := decodeHandoffReply(p)
	if err != nil {
		return err
	}
	if rep.Session != stream.Session {
		return fmt.Errorf("old owner holds session %q, registry says %q", rep.Session, stream.Session)
	}
	return stream.Load(rep.Last, rep.Msgs)
}

// restart claims user again with a fresh session after a failed handoff:
// the stream's continuity is lost, and the new session says so.
func (b *Broker) restart(ctx context.Context, user string, epoch uint64, attach bool) (*held, error) {
	sess := newSessionID()
	res, err := b.reg.Propose(ctx, session.Command{
		Kind: session.KindClaim, User: user, Node: b.cfg.NodeID,
		Session: sess, Epoch: epoch, Attach: attach,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: reclaim %s: %v", ErrUnavailable, user, err)
	}
	if res.Err != nil {
		if errors.Is(res.Err, session.ErrStaleEpoch) {
			return nil, &ownedElsewhere{entry: res.Entry}
		}
		return nil, fmt.Errorf("reclaim %s: %w", user, res.Err)
	}
	return b.install(user, session.NewStream(user, sess, res.Entry.Epoch, b.cfg.Stream)), nil
}

// install makes a freshly claimed stream the one this node serves.
func (b *Broker) install(user string, s *session.Stream) *held {
	h := b.newHeld(user, s)
	b.mu.Lock()
	prev := b.held[user]
	b.held[user] = h
	b.mu.Unlock()
	if prev != nil {
		prev.seal(s.Epoch, "session reclaimed")
	}
	return h
}

func (h *held) isSealed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sealed
}
