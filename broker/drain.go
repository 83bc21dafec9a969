package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
)

// drainParallel bounds concurrent handovers during a drain.
const drainParallel = 32

// Drain hands every stream held here to another node, its backup first
// (which already has the data), and from then on takes no stream over
// here: publishes for users nobody holds go to a live peer. It returns
// once every stream is handed over or ctx ends. Streams with no other
// node to go to (a single-node cluster) stay, as their durability was
// local all along.
func (b *Broker) Drain(ctx context.Context) error {
	b.draining.Store(true)
	helds := b.heldStreams()
	b.log.Info("handing streams over", "streams", len(helds))
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, drainParallel)
	)
	for _, h := range helds {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := b.handOver(ctx, h); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("drain: %d of %d streams not handed over: %w", len(errs), len(helds), errors.Join(errs...))
	}
	return nil
}

// handOver asks another node to take h's stream over; the taker seals it
// here and fetches it, exactly as a resuming client's node would.
func (b *Broker) handOver(ctx context.Context, h *held) error {
	h.mu.Lock()
	first, sealed := h.o.Backup(), h.o.Sealed()
	h.mu.Unlock()
	if sealed {
		return nil
	}
	tried := map[string]bool{}
	for target := first; ; {
		if target == "" {
			var err error
			if target, err = b.pickBackup(h.key, tried); err != nil {
				if errors.Is(err, errNoBackup) && len(tried) == 0 {
					return nil // nobody to hand it to: local durability only
				}
				return fmt.Errorf("%s: %w", h.key, err)
			}
		}
		tried[target] = true
		cctx, cancel := context.WithTimeout(ctx, 4*b.cfg.CallTimeout)
		_, err := peerapi.Takeover.Call(cctx, b.peers, target, h.key)
		cancel()
		if err == nil || h.isSealed() {
			return nil
		}
		b.log.Warn("handover failed; trying another node", "stream", h.key, "to", target, "err", err)
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", h.key, ctx.Err())
		}
		target = ""
	}
}

// Rebackup makes the streams held here that node backs up (or that have
// no backup at all) choose another backup and copy themselves there now,
// rather than at their next append: node is leaving (draining) or gone,
// and an idle stream must not be left with a single copy.
func (b *Broker) Rebackup(node string) {
	b.repair(func(h *held) bool { return h.o.Backup() == node || h.o.Backup() == "" })
}

// repair copies the streams held here for which needs holds (under their
// lock) to a new backup, in the background: one attempt each; whatever
// fails is tried again by the next append or repair.
func (b *Broker) repair(needs func(h *held) bool) {
	b.repairWith(needs, nil)
}

// repairWith is repair; done, when set, is called once the attempt is over
// (or at once when there is nothing to repair).
func (b *Broker) repairWith(needs func(h *held) bool, done func()) {
	finish := func() {
		if done != nil {
			done()
		}
	}
	var todo []*held
	for _, h := range b.heldStreams() {
		h.mu.Lock()
		if !h.o.Sealed() && needs(h) {
			todo = append(todo, h)
		}
		h.mu.Unlock()
	}
	if len(todo) == 0 {
		finish()
		return
	}
	b.goSafe(func() {
		defer finish()
		sem := make(chan struct{}, promoteParallel)
		var wg sync.WaitGroup
		for _, h := range todo {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				ctx, cancel := context.WithTimeout(b.ctx, 4*b.cfg.CallTimeout)
				defer cancel()
				h.mu.Lock()
				defer h.mu.Unlock()
				for h.o.Flushing() {
					h.cond.Wait()
				}
				if h.o.Sealed() || !needs(h) || !h.o.DropBackup(h.o.Backup()) {
					return
				}
				needBackup, ok := h.o.BeginFlush()
				if !ok {
					return
				}
				if err := h.flushLocked(ctx, needBackup); err != nil {
					b.log.Debug("re-backup failed; the next append or repair retries", "stream", h.key, "err", err)
				}
			}()
		}
		wg.Wait()
	})
}

// forwardTarget is where a draining node sends publishes for a user it
// would otherwise take over.
func (b *Broker) forwardTarget(key session.Key, avoid map[string]bool) (string, error) {
	t, err := b.pickBackup(key, avoid)
	if err != nil {
		return "", fmt.Errorf("%w: draining and no other node to take %s", protocol.ErrUnavailable, key)
	}
	return t, nil
}
