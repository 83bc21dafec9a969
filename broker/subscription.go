package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/gateway"
)

// Channel subscriptions. A subscription is a connection to the channel's
// stream, served by the same code as a user's connection to the user's
// stream (connect): held here, it is one of the stream's local sinks;
// owned elsewhere, it joins this node's attachment to the owner, so that
// each message crosses the cluster once per node however many subscribers
// the node has. What differs is the welcome (`subscribed`, greet) and what
// happens when the stream moves: a user's connection is sent to resume
// elsewhere, a subscription resumes by itself, here, from the last seq it
// delivered — unnoticed by the client if nothing was lost, with a new
// `subscribed` resumed:false if something was.

// subscription is one connection's subscription to one channel.
type subscription struct {
	b    *Broker
	conn gateway.Sink
	key  session.Key
	req  protocol.Subscription

	mu sync.Mutex
	// cur is the subscription's registration at the stream (held here or
	// attached to the owner); nil while it resumes. Frames from an older
	// registration are ignored.
	cur *subAttempt
	// session and last are the channel session the client's position
	// counts in and the highest seq it was sent.
	session string
	last    uint64
	greeted bool // the client had its first subscribed frame
	// lost: the stream lost messages for it; the next greet says so.
	lost  bool
	ended bool
	// resuming: a resume goroutine runs (only one at a time).
	resuming bool
	// floor carries over a replaced subscription's position (session,
	// seq): what the client already had is not sent twice.
	floorSession string
	floor        uint64
}

// subAttempt is one registration of a subscription at its stream: the
// gateway.Sink the stream's code delivers to.
type subAttempt struct {
	s   *subscription
	id  uint64
	pos position
}

// ID implements gateway.Sink: unique among subscriptions.
func (a *subAttempt) ID() uint64 { return a.id }

// User implements gateway.Sink: the subscribing connection's user.
func (a *subAttempt) User() string { return a.s.conn.User() }

// Send implements gateway.Sink: messages after the client's position go
// to its connection; older ones (a replay after resuming) are skipped.
func (a *subAttempt) Send(seq uint64, frame []byte) bool { return a.s.send(a, seq, frame) }

// Close implements gateway.Sink: the stream moved, was lost, or the
// connection cannot keep up.
func (a *subAttempt) Close(err error, _ []string) { a.s.interrupted(a, err) }

func (a *subAttempt) greet(sess string, seq uint64, resumed bool) bool {
	return a.s.greet(a, sess, seq, resumed)
}

// Subscribe serves a subscribe frame (or one of a hello's subscriptions):
// conn subscribes to req.Channel, replacing a subscription it has to that
// channel. The caller has checked the name, the token's channels claim
// and the connection's channel limit. `subscribed` and any replay are
// queued on conn before Subscribe returns.
func (b *Broker) Subscribe(ctx context.Context, conn gateway.Sink, req protocol.Subscription) error {
	s := &subscription{b: b, conn: conn, key: session.ChannelKey(req.Channel), req: req}
	b.subsMu.Lock()
	if b.subs[conn.ID()] == nil {
		b.subs[conn.ID()] = make(map[string]*subscription)
	}
	old := b.subs[conn.ID()][req.Channel]
	b.subs[conn.ID()][req.Channel] = s
	b.subsMu.Unlock()
	if old != nil {
		s.floorSession, s.floor = old.end()
	}
	pos := position{live: true}
	if req.Seq != nil {
		pos = position{asked: true, after: *req.Seq}
	}
	err := s.attach(ctx, pos)
	if err != nil {
		b.subsMu.Lock()
		if b.subs[conn.ID()][req.Channel] == s {
			delete(b.subs[conn.ID()], req.Channel)
		}
		b.subsMu.Unlock()
		s.end()
		return err
	}
	b.subscribed(s)
	return nil
}

// Unsubscribe ends conn's subscription to channel.
func (b *Broker) Unsubscribe(conn gateway.Sink, channel string) error {
	b.subsMu.Lock()
	s := b.subs[conn.ID()][channel]
	delete(b.subs[conn.ID()], channel)
	b.subsMu.Unlock()
	if s == nil {
		return protocol.Errorf(protocol.ErrNotSubscribed, "not subscribed to %s", channel)
	}
	s.end()
	return nil
}

// Subscribed reports whether conn has subscribed channel.
func (b *Broker) Subscribed(conn gateway.Sink, channel string) bool {
	b.subsMu.Lock()
	defer b.subsMu.Unlock()
	return b.subs[conn.ID()][channel] != nil
}

// endSubscriptions ends a closed connection's subscriptions.
func (b *Broker) endSubscriptions(conn uint64) {
	b.subsMu.Lock()
	subs := b.subs[conn]
	delete(b.subs, conn)
	b.subsMu.Unlock()
	for _, s := range subs {
		s.end()
	}
}

// attach registers the subscription at its stream from pos.
func (s *subscription) attach(ctx context.Context, pos position) error {
	a := &subAttempt{s: s, id: s.b.subSeq.Add(1), pos: pos}
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return protocol.Errorf(protocol.ErrNotSubscribed, "unsubscribed")
	}
	s.cur = a
	s.mu.Unlock()
	err := s.b.connect(ctx, s.key, a, pos)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && s.cur != a && !s.greeted {
		// Closed by the stream before its welcome (sealed meanwhile).
		err = fmt.Errorf("%w: channel %s moved while subscribing", protocol.ErrUnavailable, s.req.Channel)
	}
	if err != nil && s.cur == a {
		s.cur = nil
	}
	return err
}

// end forgets the subscription at its stream and returns the position its
// client reached.
func (s *subscription) end() (sess string, last uint64) {
	s.mu.Lock()
	wasEnded := s.ended
	s.ended = true
	a := s.cur
	s.cur = nil
	sess, last = s.session, s.last
	s.mu.Unlock()
	if a != nil {
		s.b.detach(s.key, a.id)
	}
	if !wasEnded {
		s.b.unsubscribed(s)
	}
	return sess, last
}

// greet is the stream's welcome to a's registration.
func (s *subscription) greet(a *subAttempt, sess string, seq uint64, resumed bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != a || s.ended {
		return false
	}
	first := !s.greeted
	continues := resumed && !s.lost && (first || sess == s.session)
	s.greeted, s.lost = true, false
	switch {
	case !continues:
		s.last = seq
	case a.pos.live:
		s.last = seq
	case first:
		s.last = a.pos.after
	}
	if first && s.floorSession == sess {
		s.last = max(s.last, s.floor)
	}
	s.session = sess
	if first || !continues {
		// A first subscription is always answered; a resumed one only
		// when the client must resync.
		return s.conn.Send(0, protocol.AppendSubscribed(nil, s.req.Channel, seq, continues))
	}
	return true
}

// send writes a message of the stream to the client unless it had it.
func (s *subscription) send(a *subAttempt, seq uint64, frame []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != a || s.ended {
		return false
	}
	if seq <= s.last {
		return true
	}
	s.last = seq
	return s.conn.Send(0, frame)
}

// interrupted handles the stream's Close of a's registration: a slow
// client's connection is closed (4008) like any other; otherwise the
// subscription resumes at the stream's new place.
func (s *subscription) interrupted(a *subAttempt, why error) {
	s.mu.Lock()
	if s.cur != a || s.ended {
		s.mu.Unlock()
		return
	}
	s.cur = nil
	if errors.Is(why, protocol.ErrContinuityLost) {
		s.lost = true
	}
	if errors.Is(why, protocol.ErrSlowConsumer) {
		s.mu.Unlock()
		s.conn.Close(why, nil)
		return
	}
	// Before its first welcome, its Subscribe is still running and
	// reports the failure; a resume already running tries again itself.
	start := s.greeted && !s.resuming
	s.resuming = s.resuming || start
	s.mu.Unlock()
	if start {
		s.b.log.Debug("subscription interrupted; resuming", "channel", s.req.Channel, "conn", s.conn.ID(), "why", why)
		s.b.goSafe(s.resume)
	}
}

// resumeFor bounds how long a subscription tries to resume before its
// connection is closed (1013): the client reconnects and resubscribes by
// seq, and the node it reaches tells it whether continuity held.
func (b *Broker) resumeFor() time.Duration { return 4 * b.cfg.CallTimeout }

// resume registers the subscription again from the client's position,
// retrying while the stream moves.
func (s *subscription) resume() {
	deadline := time.Now().Add(s.b.resumeFor())
	wait := 20 * time.Millisecond
	for {
		s.mu.Lock()
		if s.ended || s.cur != nil || s.b.ctx.Err() != nil {
			s.resuming = false // under the lock that interrupted reads it with
			s.mu.Unlock()
			return
		}
		if time.Now().After(deadline) {
			s.resuming = false
			s.mu.Unlock()
			s.b.log.Warn("subscription could not resume; closing its connection", "channel", s.req.Channel, "conn", s.conn.ID())
			// 1013, not 4011: the connection's user stream lost nothing.
			s.conn.Close(protocol.Errorf(protocol.ErrUnavailable, "channel %s: cannot resume the subscription here: reconnect and resubscribe from your last seq", s.req.Channel), nil)
			return
		}
		pos := position{session: s.session, after: s.last, asked: true}
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(s.b.ctx, 2*s.b.cfg.CallTimeout)
		err := s.attach(ctx, pos)
		cancel()
		if err == nil {
			s.b.resumedPresence(s)
			continue // registered, unless interrupted again meanwhile
		}
		select {
		case <-s.b.ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}
