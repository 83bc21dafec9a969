package broker

import (
	"context"
	"time"

	"github.com/switchboard/switchboard/session"
)

func (b *Broker) expire() {
	helds := b.heldStreams()
	now := b.cfg.Now()
	b.expireReplicas(now)
	window := time.Duration(b.cfg.Stream.Window) * time.Millisecond
	for _, h := range helds {
		h.mu.Lock()
		h.stream.Trim(now.UnixMilli())
		due := !h.sealed && !h.flushing && len(h.pending) == 0 && !h.idleSince.IsZero() && now.Sub(h.idleSince) > window && h.stream.Len() == 0
		epoch := h.stream.Epoch
		h.mu.Unlock()
		if !due {
			continue
		}
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.CallTimeout)
		res, err := b.reg.Propose(ctx, session.Command{
			Kind: session.KindExpire, User: h.user, Node: b.cfg.NodeID, Epoch: epoch, Window: b.cfg.Stream.Window,
		})
		cancel()
		if err != nil || res.Err != nil || res.Count == 0 {
			continue // still attached per registry, or ownership moved: not ours to retire
		}
		if h.seal(epoch+1, "session expired") {
			b.drop(h)
		}
	}
}
