package broker

import (
	"context"
	"sync"

	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
)

// promoteParallel bounds concurrent takeovers after a node failure; the
// registry proposer batches their claims into few Raft entries.
const promoteParallel = 64

// NodeDown reacts to membership declaring node dead or gone:
//   - streams it owned and this node backs up are taken over here at once
//     (proactive promotion), so publishes are accepted again before the
//     clients even reconnect;
//   - streams held here that it backed up get a new backup on their next
//     append;
//   - connections attached to its streams are told to reconnect;
//   - it no longer receives deliveries.
func (b *Broker) NodeDown(node string) {
	b.mu.Lock()
	delete(b.tipsFrom, node) // it may come back as a version that sends none
	b.mu.Unlock()
	b.evictAttached(node)
	for _, h := range b.heldStreams() {
		h.detachRemote(node, 0)
	}
	b.Rebackup(node)
	b.promote(node)
	b.presenceDown(node)
}

// promote takes over every stream whose registry owner is node and whose
// backup is this node.
func (b *Broker) promote(node string) {
	b.reps.mu.Lock()
	var keys []session.Key
	for k, r := range b.reps.m {
		r.mu.Lock()
		if r.owner == node {
			keys = append(keys, k)
		}
		r.mu.Unlock()
	}
	b.reps.mu.Unlock()
	mine := map[session.Key]session.Entry{}
	for _, k := range keys {
		// The leader's node-failed may already have cleared the owner.
		if e, ok := b.reg.Get(k.String()); ok && (e.Owner == node || e.Owner == "") && e.Backup == b.cfg.NodeID {
			mine[k] = e
		}
	}
	if len(mine) == 0 {
		return
	}
	b.log.Info("promoting replicas of a failed node", "node", node, "streams", len(mine))
	b.goSafe(func() {
		sem := make(chan struct{}, promoteParallel)
		var wg sync.WaitGroup
		for k, e := range mine {
			select {
			case sem <- struct{}{}:
			case <-b.ctx.Done():
				wg.Wait()
				return
			}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				ctx, cancel := context.WithTimeout(b.ctx, 4*b.cfg.CallTimeout)
				defer cancel()
				// Not from a live node that took it over first (a
				// subscriber whose link to the dead owner broke).
				if _, err := b.takeover(ctx, k, map[string]bool{node: true}, false, &e); err != nil {
					b.log.Debug("promotion failed", "stream", k, "err", err)
				}
			}()
		}
		wg.Wait()
	})
}

// ownerDown is why the connections attached to key's stream at owner end
// when owner is gone: to resume, unless the registry names no other node
// that may hold the stream (the leader recorded its owner and backup as
// failed, or the entry is gone): then continuity is lost. This node's own
// view of who is alive never decides it (see lost): a node it cannot
// reach may hold the stream.
func (b *Broker) ownerDown(key session.Key, owner string) error {
	e, ok := b.reg.Get(key.String())
	if ok && (e.Owner != "" && e.Owner != owner || e.Backup != "" && e.Backup != owner) {
		return protocol.Errorf(protocol.ErrMoved, "owner node is down: reconnect to resume")
	}
	return protocol.Errorf(protocol.ErrContinuityLost, "no node left holds the stream: continuity lost, resync")
}
