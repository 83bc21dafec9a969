package broker

import (
	"context"
	"errors"
	"time"

	"github.com/switchboard/switchboard/session"
)

// routing is what one request learns about where its streams are while it
// is routed, attempt after attempt: publishes, forwarded publishes and
// hellos all route through it (route).
type routing struct {
	// avoid lists owners whose links failed during this request.
	avoid map[string]bool
	// refused lists owners that said they do not hold the stream, or that
	// released an idle one to this node: not asked again, taken over.
	refused map[string]bool
	// hints are entries learned from lost claims, fresher than the local
	// replica may be.
	hints map[session.Key]session.Entry
	// hello says the request serves a connection: it attaches to a live
	// owner rather than forwarding to it.
	hello bool
	// follow says an idle stream moves to the node of its connection (a
	// user's does; a channel's stays with its owner).
	follow bool
}

func newRouting(hello bool) *routing {
	return &routing{avoid: map[string]bool{}, refused: map[string]bool{}, hints: map[session.Key]session.Entry{}, hello: hello}
}

// where is a routing decision for one stream: held here (h), or at a live
// owner to forward to or attach at. release asks that owner, if its stream
// is idle, to let this node take it over instead (the stream follows its
// connections).
type where struct {
	h       *held
	owner   string
	release bool
}

// route decides where key's stream is served for this request: held here,
// at a live owner, or — nobody reachable holding it — taken over here.
func (b *Broker) route(ctx context.Context, key session.Key, rt *routing) (where, error) {
	if h := b.local(key); h != nil {
		return where{h: h}, nil
	}
	e, ok := b.entry(key, rt)
	if ok && b.usable(e.Owner, rt.avoid) && !rt.refused[e.Owner] {
		return where{owner: e.Owner, release: rt.hello && rt.follow && e.State != session.Attached}, nil
	}
	if b.draining.Load() {
		// A draining node takes nothing over: another node will.
		t, err := b.forwardTarget(key, rt.avoid)
		return where{owner: t}, err
	}
	h, err := b.takeover(ctx, key, rt.avoid, rt.hello, &e)
	var oe *ownedElsewhere
	if errors.As(err, &oe) {
		rt.hints[key] = oe.entry
	}
	return where{h: h}, err
}

// entry prefers a hint learned from a lost claim over the local replica,
// which may not have applied that claim yet.
func (b *Broker) entry(key session.Key, rt *routing) (session.Entry, bool) {
	e, ok := b.reg.Get(key.String())
	if hint, hok := rt.hints[key]; hok && (!ok || hint.Epoch > e.Epoch) {
		return hint, hint.Epoch > 0
	}
	return e, ok
}

// reroute reports whether err asks the request to route again: ownership
// moved under it (a lost claim, a sealed stream, a stream promised to
// another node).
func reroute(err error) bool {
	var oe *ownedElsewhere
	return errors.As(err, &oe) || errors.Is(err, session.ErrSealed) || errors.Is(err, session.ErrStaleEpoch) || errors.Is(err, errReleased)
}

// attempts runs one routing attempt after another, up to MaxRoutes, while
// try asks for another (more) and ctx lasts. Between attempts it pauses a
// little longer each time: ownership is moving, and a takeover needs a
// moment to finish. It returns ErrRerouted when the attempts ran out with
// more asked for, or ctx's error.
func (b *Broker) attempts(ctx context.Context, try func() (more bool)) error {
	for attempt := 0; ; attempt++ {
		if attempt == b.cfg.MaxRoutes {
			return ErrRerouted
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !try() {
			return nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt+1) * 20 * time.Millisecond):
		}
	}
}
