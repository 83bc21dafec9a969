package broker

import (
	"context"

	"github.com/switchboard/switchboard/session"
)

// expire runs every ExpiryInterval: it trims held streams and replicas to
// their windows, retires streams idle for longer than the resume window,
// and repairs streams left without a backup (a replication that failed,
// and no append since to choose another).
func (b *Broker) expire() {
	now := b.cfg.Now()
	b.expireReplicas(now)
	window := b.cfg.Stream.Window
	for _, h := range b.heldStreams() {
		h.mu.Lock()
		h.o.Trim(now.UnixMilli())
		due := h.o.ExpireDue(now.UnixMilli(), window)
		epoch := h.o.Epoch()
		h.mu.Unlock()
		if !due {
			continue
		}
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.CallTimeout)
		res, err := b.reg.Propose(ctx, session.Command{
			Kind: session.KindExpire, User: h.key.String(), Node: b.cfg.NodeID, Epoch: epoch, Window: window,
		})
		cancel()
		if err != nil || res.Err != nil || res.Count == 0 {
			continue // still attached per registry, or ownership moved: not ours to retire
		}
		if h.seal(epoch+1, true, "session expired") {
			b.drop(h)
		}
	}
	// One repair at a time: with backups that time out, a round can
	// outlast the interval.
	if !b.draining.Load() && !b.cluster.Solo() && len(b.cluster.Peers()) > 0 && b.repairing.CompareAndSwap(false, true) {
		b.repairWith(func(h *held) bool { return h.o.Backup() == "" && !h.o.Flushing() }, func() { b.repairing.Store(false) })
	}
}
