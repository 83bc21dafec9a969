package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport"
)

// Hello serves a client's hello (transport.Hub). The user's stream is
// served from wherever it lives:
//   - held here: attach the connection to it;
//   - held by a live owner that has connections of this user: attach to
//     that owner's stream over the peer link (the owner stays put);
//   - otherwise (no stream yet, owner idle, dead or unreachable): take the
//     stream over (claim, seal and fetch at the old owner) and serve it here.
//
// Welcome and replay are enqueued on the sink before any live message.
func (b *Broker) Hello(ctx context.Context, sink transport.Sink, user string, resume *transport.Resume) error {
	avoid := map[string]bool{}
	noAttach := map[string]bool{} // owners that said they do not hold the stream
	var hint *session.Entry
	for attempt := 0; attempt < b.cfg.MaxRoutes; attempt++ {
		if h := b.local(user); h != nil {
			err := h.attach(ctx, sink, resume)
			if !errors.Is(err, errSealed) {
				return err
			}
			continue
		}
		e, ok := b.entry(user, hint)
		if ok && e.State == session.Attached && b.usable(e.Owner, avoid) && !noAttach[e.Owner] {
			err := b.attachRemote(ctx, e.Owner, sink, resume)
			switch {
			case err == nil:
				return nil
			case errors.Is(err, ErrNotHere):
				// Our replica is behind, or the owner lost the stream (it
				// restarted): re-read, and take it over if it still says so.
				hint = nil
				noAttach[e.Owner] = true
			case b.linkFailed(e.Owner, err):
				b.log.Debug("owner unreachable; taking over", "user", user, "owner", e.Owner, "err", err)
				avoid[e.Owner] = true
			default:
				return fmt.Errorf("%w: attaching to %s: %v", ErrUnavailable, e.Owner, err)
			}
			continue
		}
		h, err := b.takeover(ctx, user, avoid, true)
		var oe *ownedElsewhere
		switch {
		case errors.As(err, &oe):
			hint = &oe.entry
			continue
		case err != nil:
			return err
		}
		err = h.attach(ctx, sink, resume)
		if err != nil && !errors.Is(err, errSealed) {
			// The claim recorded this connection as attached; it is not.
			h.settle()
		}
		if !errors.Is(err, errSealed) {
			return err
		}
	}
	return fmt.Errorf("%w: user %s", ErrRerouted, user)
}

// Ack records a client's cumulative acknowledgement. Streams are bounded
// by count and window rather than by acks, so there is nothing to free yet.
func (b *Broker) Ack(transport.Sink, uint64) {}

// Gone forgets a closed connection.
func (b *Broker) Gone(sink transport.Sink) {
	user := sink.User()
	if h := b.local(user); h != nil {
		h.detachSink(sink.ID())
	}
	b.mu.Lock()
	a := b.remote[user]
	b.mu.Unlock()
	if a != nil {
		a.remove(sink.ID())
	}
}

// ErrNotHere answers a peer request about a stream this node does not hold.
var ErrNotHere = errors.New("stream not held here")

// serveAttach registers node as attached to a stream held here.
func (b *Broker) serveAttach(req attachRequest) (attachReply, error) {
	h := b.local(req.User)
	if h == nil {
		return attachReply{}, ErrNotHere
	}
	rep, err := h.attachRemote(req.Node, req.After, req.Session)
	if errors.Is(err, errSealed) {
		return rep, ErrNotHere
	}
	return rep, err
}

// serveHandoff seals a held stream for its new owner and returns it.
// A retired stream (sealed when another node claimed it) still answers:
// that claimant may have failed to fetch it.
func (b *Broker) serveHandoff(req handoffRequest) (handoffReply, error) {
	h := b.holder(req.User)
	if h == nil {
		if b.isClaiming(req.User) {
			return handoffReply{}, errBusy
		}
		return handoffReply{}, ErrNotHere
	}
	rep, err := h.handoff(req.Epoch)
	if err == nil {
		b.forget(h)
	}
	return rep, err
}

// evict tells an attached node that the stream moved, in the background.
func (b *Broker) evict(node, user string) {
	b.goSafe(func() {
		ctx, cancel := b.callCtx(b.ctx)
		defer cancel()
		if err := b.peers.Send(ctx, node, methodEvict, encodeUserNode(userNode{User: user})); err != nil {
			b.log.Debug("evict failed", "node", node, "user", user, "err", err)
		}
	})
}

// ownerChanged closes connections attached to a stream whose owner is no
// longer the one they attached to.
func (b *Broker) ownerChanged(user, owner string) {
	b.mu.Lock()
	a := b.remote[user]
	b.mu.Unlock()
	if a != nil && a.owner != owner {
		a.evict("session moved")
	}
}

// goSafe runs fn in a goroutine the broker waits for on Close; after Close
// it does nothing.
func (b *Broker) goSafe(fn func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		fn()
	}()
}
