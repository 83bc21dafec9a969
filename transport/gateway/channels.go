package gateway

import (
	"context"

	"github.com/switchboard/switchboard/protocol"
)

// channelState is a connection's side of its channel subscriptions
// (DESIGN.md §3a): which channels it has, for the per-connection limit and
// the not_subscribed answers, and which its token allows. Only the holder
// of the reader's turn touches it: the reader, or work it runs offReader.
type channelState struct {
	allowed []string
	subs    map[string]struct{}
}

// channelFrame acts on a subscribe, unsubscribe or presence frame; true
// means work that may block now holds the reader's turn.
func (c *conn) channelFrame(f protocol.ClientFrame) (paused bool) {
	switch f.Type {
	case protocol.TypeSubscribe:
		if err := c.mayChannel(f.Sub.Channel, true); err != nil {
			c.channelError(f.Sub.Channel, err)
			return false
		}
		sub := *f.Sub
		c.offReader(func() {
			ctx, cancel := context.WithTimeout(context.Background(), c.g.cfg.HelloTimeout)
			defer cancel()
			c.subscribe(ctx, sub)
		})
		return true
	case protocol.TypeUnsubscribe:
		if err := c.mayChannel(f.Channel, false); err != nil {
			c.channelError(f.Channel, err)
			return false
		}
		var err error
		c.guard("Hub.Unsubscribe", func() { err = c.g.hub.Unsubscribe(c, f.Channel) })
		delete(c.chans.subs, f.Channel)
		if err != nil {
			c.channelError(f.Channel, err)
			return false
		}
		c.Send(0, protocol.EncodeUnsubscribed(f.Channel))
	case protocol.TypePresence:
		if err := c.mayChannel(f.Channel, false); err != nil {
			c.channelError(f.Channel, err)
			return false
		}
		c.offReader(func() {
			ctx, cancel := context.WithTimeout(context.Background(), c.g.cfg.HelloTimeout)
			defer cancel()
			var (
				p   protocol.Presence
				err error
			)
			c.guard("Hub.Presence", func() { p, err = c.g.hub.Presence(ctx, c, f.Channel) })
			if err != nil {
				c.channelError(f.Channel, err)
				return
			}
			c.Send(0, protocol.EncodePresence(p))
		})
		return true
	}
	return false
}

// mayChannel checks a channel frame before the hub sees it: the name's
// rules, and for a subscribe (adding) the token's channels and the
// connection's limit; for the others, that the connection has it.
func (c *conn) mayChannel(channel string, adding bool) error {
	if err := protocol.ValidChannel(channel); err != nil {
		return err
	}
	_, has := c.chans.subs[channel]
	switch {
	case !adding && !has:
		return protocol.Errorf(protocol.ErrNotSubscribed, "not subscribed to %s", channel)
	case !adding:
		return nil
	case !protocol.ChannelAllowed(c.chans.allowed, channel):
		return protocol.Errorf(protocol.ErrChannelForbidden, "the token's channels claim does not allow %s", channel)
	case !has && c.g.cfg.MaxChannelsPerConn > 0 && len(c.chans.subs) >= c.g.cfg.MaxChannelsPerConn:
		return protocol.Errorf(protocol.ErrTooManyChannels, "the connection has %d channels, the most it may", len(c.chans.subs))
	}
	return nil
}

// subscribe asks the hub for one subscription (a subscribe frame's, or a
// hello's) and answers a refusal with an error frame.
func (c *conn) subscribe(ctx context.Context, sub protocol.Subscription) {
	if err := c.mayChannel(sub.Channel, true); err != nil {
		c.channelError(sub.Channel, err)
		return
	}
	var err error
	c.guard("Hub.Subscribe", func() { err = c.g.hub.Subscribe(ctx, c, sub) })
	if err != nil {
		c.g.log.Debug("subscribe refused", "conn", c.id, "channel", sub.Channel, "err", err)
		// A refused re-subscribe leaves no subscription behind.
		delete(c.chans.subs, sub.Channel)
		c.channelError(sub.Channel, err)
		return
	}
	if c.chans.subs == nil {
		c.chans.subs = make(map[string]struct{})
	}
	c.chans.subs[sub.Channel] = struct{}{}
}

// channelError answers a channel frame with an error frame that names
// the channel; the connection goes on.
func (c *conn) channelError(channel string, err error) {
	c.Send(0, protocol.EncodeChannelError(channel, err))
}
