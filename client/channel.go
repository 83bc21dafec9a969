package client

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/switchboard/switchboard/protocol"
)

// Channels (DESIGN.md §3a). A Subscription survives reconnects like the
// user stream: every hello carries every subscription with the last seq
// it delivered, so the new node resumes each from there; duplicates are
// dropped, and a channel whose continuity was lost says so on its Events.

// SubscribeOptions says how to subscribe.
type SubscribeOptions struct {
	// From, when set, asks for the messages after *From (0: from the
	// channel's start); nil asks for live messages only.
	From *uint64
	// Presence makes this user visible in the channel's presence set.
	Presence bool
	// JoinLeave asks for join and leave events.
	JoinLeave bool
	// Buffer is the capacity of Messages (default Config.Buffer).
	Buffer int
}

// ChannelMessage is one channel message delivered to the application.
type ChannelMessage struct {
	Channel string
	Seq     uint64
	ID      string
	TS      time.Time
	Data    json.RawMessage
}

// SubscriptionEventKind says what happened to a subscription.
type SubscriptionEventKind int

// Subscription event kinds.
const (
	// SubSubscribed: the node confirmed the subscription (Seq is the
	// channel's highest seq then).
	SubSubscribed SubscriptionEventKind = iota + 1
	// SubContinuityLost: messages after the subscription's position are
	// gone (Err wraps ErrContinuityLost); it goes on from Seq: resync.
	SubContinuityLost
	// SubJoin and SubLeave: a user's presence on the channel began or
	// ended.
	SubJoin
	SubLeave
	// SubError: the node refused the subscription (Code: forbidden,
	// bad_channel, too_many_channels, not_subscribed, unavailable).
	SubError
)

// SubscriptionEvent is a change on one subscription.
type SubscriptionEvent struct {
	Kind SubscriptionEventKind
	Seq  uint64
	User string // join, leave
	Code string // error
	Err  error
}

// presenceAnswer is the node's answer to a presence question.
type presenceAnswer struct {
	members []protocol.Member
	err     error
}

// Subscription is the client's subscription to one channel.
type Subscription struct {
	c       *Client
	channel string
	opts    SubscribeOptions
	msgs    chan ChannelMessage
	events  chan SubscriptionEvent

	stop chan struct{} // closed by finish: a blocked delivery gives up

	mu       sync.Mutex
	last     uint64              // last delivered seq
	started  bool                // a subscribed frame came: last is a position
	closed   bool                // finished: nothing more is delivered
	sending  bool                // the read loop is sending on msgs (not under mu)
	shut     bool                // msgs and events are closed
	presence chan presenceAnswer // the answer to a presence question in flight
}

// Subscribe subscribes to channel, now if connected and on every
// reconnect after. A second Subscribe to a channel replaces the first.
func (c *Client) Subscribe(channel string, opts SubscribeOptions) (*Subscription, error) {
	if err := protocol.ValidChannel(channel); err != nil {
		return nil, fmt.Errorf("client: subscribe: %w", err)
	}
	if c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	buf := opts.Buffer
	if buf <= 0 {
		buf = c.cfg.Buffer
	}
	s := &Subscription{c: c, channel: channel, opts: opts,
		msgs: make(chan ChannelMessage, buf), events: make(chan SubscriptionEvent, c.cfg.EventBuffer),
		stop: make(chan struct{})}
	c.mu.Lock()
	if c.subs == nil {
		c.subs = make(map[string]*Subscription)
	}
	old := c.subs[channel]
	c.subs[channel] = s
	cn := c.cur
	c.mu.Unlock()
	if old != nil {
		old.finish()
	}
	if cn != nil {
		b, _ := json.Marshal(protocol.NewSubscribe(s.request()))
		// A failed write ends the connection; the next hello subscribes.
		_ = cn.write(b, c.cfg.DialTimeout)
	}
	return s, nil
}

// Channel is the subscription's channel.
func (s *Subscription) Channel() string { return s.channel }

// Messages returns the channel's messages in seq order, without
// duplicates; closed by Unsubscribe and Client.Close.
func (s *Subscription) Messages() <-chan ChannelMessage { return s.msgs }

// Events returns the subscription's events; bounded, events that find it
// full are dropped. Closed with Messages.
func (s *Subscription) Events() <-chan SubscriptionEvent { return s.events }

// LastSeq is the seq of the last message delivered on Messages.
func (s *Subscription) LastSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// request is what to ask the node: the subscription's options, from its
// position once it has one.
func (s *Subscription) request() protocol.Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := protocol.Subscription{Channel: s.channel, Seq: s.opts.From, Presence: s.opts.Presence, JoinLeave: s.opts.JoinLeave}
	if s.started {
		last := s.last
		r.Seq = &last
	}
	return r
}

// Unsubscribe ends the subscription and closes its channels.
func (s *Subscription) Unsubscribe() error {
	c := s.c
	c.mu.Lock()
	mine := c.subs[s.channel] == s
	if mine {
		delete(c.subs, s.channel)
	}
	cn := c.cur
	c.mu.Unlock()
	s.finish()
	if mine && cn != nil {
		b, _ := json.Marshal(protocol.ChannelRequest{Type: protocol.TypeUnsubscribe, Channel: s.channel})
		if err := cn.write(b, c.cfg.DialTimeout); err != nil {
			return fmt.Errorf("%w: unsubscribe: %w", ErrConnectionLost, err)
		}
	}
	return nil
}

// Presence asks the channel's presence set.
func (s *Subscription) Presence(ctx context.Context) ([]protocol.Member, error) {
	c := s.c
	c.mu.Lock()
	cn := c.cur
	c.mu.Unlock()
	if cn == nil {
		return nil, ErrNotConnected
	}
	ch := make(chan presenceAnswer, 1)
	s.mu.Lock()
	s.presence = ch
	s.mu.Unlock()
	b, _ := json.Marshal(protocol.ChannelRequest{Type: protocol.TypePresence, Channel: s.channel})
	if err := cn.write(b, c.cfg.DialTimeout); err != nil {
		return nil, fmt.Errorf("%w: presence: %w", ErrConnectionLost, err)
	}
	select {
	case a := <-ch:
		return a.members, a.err
	case <-cn.done:
		return nil, ErrConnectionLost
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// finish ends the subscription: its channels are closed once no
// delivery is in flight.
func (s *Subscription) finish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	close(s.stop)
	if !s.sending {
		s.shutLocked()
	}
}

func (s *Subscription) shutLocked() {
	if !s.shut {
		s.shut = true
		close(s.msgs)
		close(s.events)
	}
}

func (s *Subscription) emit(e SubscriptionEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	select {
	case s.events <- e:
	default:
		s.c.log.Warn("subscription event dropped: Events full", "channel", s.channel)
	}
}

// subscriptions lists the requests for a hello.
func (c *Client) subscriptions() []protocol.Subscription {
	c.mu.Lock()
	subs := make([]*Subscription, 0, len(c.subs))
	for _, s := range c.subs {
		subs = append(subs, s)
	}
	c.mu.Unlock()
	out := make([]protocol.Subscription, len(subs))
	for i, s := range subs {
		out[i] = s.request()
	}
	return out
}

func (c *Client) subscription(channel string) *Subscription {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.subs[channel]
}

// onChannelFrame handles a channel frame on the read loop; an error ends
// the connection (only Close does that).
func (c *Client) onChannelFrame(frameType string, data []byte) error {
	var f struct {
		Channel string            `json:"channel"`
		Seq     uint64            `json:"seq"`
		Resumed bool              `json:"resumed"`
		User    string            `json:"user"`
		Code    string            `json:"code"`
		Message string            `json:"message"`
		ID      string            `json:"id"`
		TS      int64             `json:"ts"`
		Data    json.RawMessage   `json:"data"`
		Count   int               `json:"count"`
		Members []protocol.Member `json:"members"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return fmt.Errorf("%w: undecodable %s frame: %w", ErrProtocol, frameType, err)
	}
	s := c.subscription(f.Channel)
	if s == nil {
		return nil // unsubscribed meanwhile
	}
	switch frameType {
	case protocol.TypeMessage:
		return c.deliverChannel(protocol.Message{Channel: f.Channel, Seq: f.Seq, ID: f.ID, TS: f.TS, Data: f.Data})
	case protocol.TypeSubscribed:
		s.mu.Lock()
		asked := s.started || s.opts.From != nil
		prev := s.last
		if !f.Resumed || !s.started && s.opts.From == nil {
			s.last = f.Seq
		} else if !s.started {
			s.last = *s.opts.From
		}
		s.started = true
		s.mu.Unlock()
		if !f.Resumed && asked {
			s.emit(SubscriptionEvent{Kind: SubContinuityLost, Seq: f.Seq,
				Err: fmt.Errorf("%w: channel %s: messages after seq %d are gone", ErrContinuityLost, f.Channel, prev)})
		}
		s.emit(SubscriptionEvent{Kind: SubSubscribed, Seq: f.Seq})
	case protocol.TypeJoin:
		s.emit(SubscriptionEvent{Kind: SubJoin, User: f.User})
	case protocol.TypeLeave:
		s.emit(SubscriptionEvent{Kind: SubLeave, User: f.User})
	case protocol.TypePresence:
		s.mu.Lock()
		ch := s.presence
		s.presence = nil
		s.mu.Unlock()
		if ch != nil {
			ch <- presenceAnswer{members: f.Members}
		}
	case protocol.TypeError:
		err := fmt.Errorf("client: channel %s: %s: %s", f.Channel, f.Code, f.Message)
		s.mu.Lock()
		ch := s.presence
		s.presence = nil
		s.mu.Unlock()
		if ch != nil {
			// Errors answer frames in order: a presence question in
			// flight is what this one answers, unless it is about a
			// subscription (those come before their subscribed).
			ch <- presenceAnswer{err: err}
		}
		s.emit(SubscriptionEvent{Kind: SubError, Code: f.Code, Err: err})
	}
	return nil
}

// deliverChannel hands a channel message to its subscription, if any.
func (c *Client) deliverChannel(m protocol.Message) error {
	s := c.subscription(m.Channel)
	if s == nil {
		return nil // unsubscribed meanwhile
	}
	return s.deliver(ChannelMessage{Channel: m.Channel, Seq: m.Seq, ID: m.ID, TS: time.UnixMilli(m.TS), Data: m.Data})
}

// deliver hands a message to the application unless it had it; like the
// user stream it blocks while Messages is full.
func (s *Subscription) deliver(m ChannelMessage) error {
	s.mu.Lock()
	if s.closed || m.Seq <= s.last {
		s.mu.Unlock()
		return nil
	}
	if m.Seq > s.last+1 && s.started {
		err := fmt.Errorf("%w: channel %s: expected seq %d, got %d", ErrSequenceGap, s.channel, s.last+1, m.Seq)
		s.c.log.Error("server bug", "err", err)
		s.mu.Unlock()
		s.emit(SubscriptionEvent{Kind: SubError, Code: "sequence_anomaly", Err: err})
		s.mu.Lock()
	}
	prev := s.last
	s.last = m.Seq
	// Not under mu, which Unsubscribe needs: finish leaves msgs open
	// while sending is set, and the read loop is the only sender.
	s.sending = true
	s.mu.Unlock()
	var err error
	select {
	case s.msgs <- m:
	case <-s.stop:
	case <-s.c.ctx.Done():
		err = ErrClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sending = false
	if err != nil {
		s.last = prev
	}
	if s.closed {
		s.shutLocked()
	}
	return err
}

// finishSubscriptions ends every subscription (Close).
func (c *Client) finishSubscriptions() {
	c.mu.Lock()
	subs := c.subs
	c.subs = nil
	c.mu.Unlock()
	for _, s := range subs {
		s.finish()
	}
}
