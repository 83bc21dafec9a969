package broker

import (
	"context"
	"fmt"

	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
)

// History returns a channel's highest acknowledged seq and at most limit
// of its acknowledged messages after since that are still kept, oldest
// first, from the channel's owner. A channel nobody owns has none.
func (b *Broker) History(ctx context.Context, channel string, since uint64, limit int) (uint64, []session.Message, error) {
	key := session.ChannelKey(channel)
	req := peerapi.HistoryRequest{Key: key, Since: since, Limit: uint64(limit)}
	rt := newRouting(false)
	var (
		rep  peerapi.HistoryReply
		last error
	)
	err := b.attempts(ctx, func() bool {
		if _, ok := b.reg.Get(key.String()); !ok {
			rep, last = peerapi.HistoryReply{}, nil
			return false
		}
		// Reading must not take over a stream whose owner is alive, so it
		// routes like a publish: held here, forwarded to the owner, or
		// (owner gone) taken over here.
		w, err := b.route(ctx, key, rt)
		switch {
		case err != nil:
			last = err
			return reroute(err)
		case w.h != nil:
			rep, last = w.h.history(req), nil
			return false
		}
		cctx, cancel := b.callCtx(ctx)
		rep, err = peerapi.History.Call(cctx, b.peers, w.owner, req)
		cancel()
		last = err
		if err != nil && b.linkFailed(w.owner, err) {
			rt.avoid[w.owner] = true
			return true
		}
		return false
	})
	if err == nil {
		err = last
	}
	if err != nil {
		return 0, nil, fmt.Errorf("%w: history of %s: %v", protocol.ErrUnavailable, channel, err)
	}
	return rep.Last, rep.Msgs, nil
}

// serveHistory answers a history request for a channel held here.
func (b *Broker) serveHistory(req peerapi.HistoryRequest) (peerapi.HistoryReply, error) {
	h := b.local(req.Key)
	if h == nil {
		return peerapi.HistoryReply{}, peerapi.ErrNotHere
	}
	return h.history(req), nil
}

// history reads the acknowledged messages req asks for.
func (h *held) history(req peerapi.HistoryRequest) peerapi.HistoryReply {
	h.mu.Lock()
	defer h.mu.Unlock()
	limit := int(min(req.Limit, 1<<20))
	return peerapi.HistoryReply{Last: h.o.Acked(), Msgs: h.o.History(req.Since, limit)}
}
