package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/gateway"
)

// Hello serves a client's hello (gateway.Hub). The user's stream is served
// from wherever it lives:
//   - held here: attach the connection to it;
//   - held by a live owner: attach to that owner's stream over the peer
//     link; the owner stays put while it has connections. An owner whose
//     stream is idle lets this node take it over instead: the stream
//     follows its connections;
//   - otherwise (no stream yet, owner dead or unreachable): take the
//     stream over (claim, seal and fetch at the old owner) and serve it here.
//
// Welcome and replay are queued on the sink before any live message.
func (b *Broker) Hello(ctx context.Context, sink gateway.Sink, user string, resume *protocol.Resume) error {
	return b.connect(ctx, session.UserKey(user), sink, positionOf(resume))
}

// connect serves sink from key's stream, from pos: the routing of a hello,
// and of a channel subscription, which is a connection to the channel's
// stream. A user's idle stream follows its connection to this node; a
// channel stays with its owner.
func (b *Broker) connect(ctx context.Context, key session.Key, sink gateway.Sink, pos position) error {
	rt := newRouting(true)
	rt.follow = key.Kind == session.UserStream
	var last error
	err := b.attempts(ctx, func() bool {
		w, err := b.route(ctx, key, rt)
		switch {
		case err != nil:
			last = err
			return reroute(err)
		case w.h == nil:
			err = b.attachRemote(ctx, key, w.owner, w.release, sink, pos)
			last = err
			switch {
			case err == nil:
				return false
			case errors.Is(err, peerapi.ErrIdle), errors.Is(err, peerapi.ErrNotHere):
				// Released to this node, or not held there (our replica is
				// behind, or the owner restarted): re-read, and take it
				// over if it still says so.
				rt.refused[w.owner] = true
				delete(rt.hints, key)
				return true
			case b.linkFailed(w.owner, err):
				b.log.Debug("owner unreachable; taking over", "stream", key, "owner", w.owner, "err", err)
				rt.avoid[w.owner] = true
				return true
			case errors.Is(err, protocol.ErrUnavailable):
				// The owner is still taking the stream over (errBusy):
				// ask it again shortly.
				return true
			}
			last = fmt.Errorf("%w: attaching to %s: %v", protocol.ErrUnavailable, w.owner, err)
			return false
		}
		err = w.h.attach(ctx, sink, pos)
		if err != nil && !reroute(err) {
			// A claim may have recorded this connection as attached; it is not.
			w.h.settle()
		}
		last = err
		return reroute(err)
	})
	switch {
	case err == nil:
		return last
	case errors.Is(err, ErrRerouted):
		return fmt.Errorf("%w: stream %s: %v", ErrRerouted, key, last)
	}
	return fmt.Errorf("%w: connecting to %s: %v", protocol.ErrUnavailable, key, err)
}

// position is where a connection starts reading a stream: after `after`
// in session (asked; session "" matches any), only what comes next
// (live: a channel subscription without seq), or, neither, wherever the
// stream is now (a first connect, welcomed with resumed:false).
type position struct {
	session string
	after   uint64
	asked   bool
	live    bool
}

// positionOf is a hello's resume point.
func positionOf(r *protocol.Resume) position {
	if r == nil {
		return position{}
	}
	return position{session: r.Session, after: r.Seq, asked: true}
}

// Ack records a client's cumulative acknowledgement. Streams are bounded
// by count and window rather than by acks, so there is nothing to free yet.
func (b *Broker) Ack(gateway.Sink, uint64) {}

// Gone forgets a closed connection and ends its subscriptions.
func (b *Broker) Gone(sink gateway.Sink) {
	b.detach(session.UserKey(sink.User()), sink.ID())
	b.endSubscriptions(sink.ID())
}

// detach forgets the connection id of key's stream, held here or attached
// to its owner.
func (b *Broker) detach(key session.Key, id uint64) {
	if h := b.local(key); h != nil {
		h.detachSink(id)
	}
	b.mu.Lock()
	a := b.remote[key]
	b.mu.Unlock()
	if a != nil {
		a.remove(id)
	}
}

// serveAttach registers a node as attached to a stream held here.
func (b *Broker) serveAttach(req peerapi.AttachRequest) (peerapi.AttachReply, error) {
	h := b.local(req.Key)
	if h == nil {
		if b.isClaiming(req.Key) {
			// Claimed here, not served yet: "not here" would have the
			// caller take it from this node, a live owner.
			return peerapi.AttachReply{}, errBusy
		}
		return peerapi.AttachReply{}, peerapi.ErrNotHere
	}
	rep, err := h.attachRemote(req)
	if errors.Is(err, session.ErrSealed) {
		return rep, peerapi.ErrNotHere
	}
	return rep, err
}

// serveHandoff seals a held stream for its new owner and returns it.
// A retired stream (sealed when another node claimed it) still answers:
// that claimant may have failed to fetch it. The handed-over stream stays
// here, retired, for the resume window: until the new owner has copied it
// to a backup this node may hold its only other copy (a claimant that was
// the backup names this node as backup, and dropped its own replica).
func (b *Broker) serveHandoff(req peerapi.HandoffRequest) (session.Tail, error) {
	h := b.holder(req.Key)
	if h == nil {
		if b.isClaiming(req.Key) {
			return session.Tail{}, errBusy
		}
		return session.Tail{}, peerapi.ErrNotHere
	}
	tail, err := h.handoff(req.Epoch)
	if err == nil {
		b.drop(h)
	}
	return tail, err
}

// ownerChanged closes connections attached to a stream whose claim they
// no longer follow: to resync when the claim started a new session (even
// at the same owner: it restarted and lost the stream), to resume at the
// new owner when only the owner changed.
func (b *Broker) ownerChanged(key session.Key, e session.Entry) {
	b.mu.Lock()
	a := b.remote[key]
	b.mu.Unlock()
	if a == nil {
		return
	}
	a.mu.Lock()
	sess := a.session
	a.mu.Unlock()
	switch {
	case sess != "" && e.Session != sess:
		a.evict(protocol.Errorf(protocol.ErrContinuityLost, "stream lost: continuity lost, resync"))
	case a.owner != e.Owner:
		a.evict(protocol.Errorf(protocol.ErrMoved, "session moved: reconnect to resume"))
	}
}
