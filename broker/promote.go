package broker

import (
	"context"
	"sync"
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
	var gone []*attached
	for _, a := range b.remote {
		if a.owner == node {
			gone = append(gone, a)
		}
	}
	helds := b.heldStreamsLocked()
	b.mu.Unlock()
	for _, a := range gone {
		a.evict("owner node is down")
	}
	for _, h := range helds {
		h.detachRemote(node)
	}
	b.Rebackup(node)
	b.promote(node)
}

// promote takes over every stream whose registry owner is node and whose
// backup is this node.
func (b *Broker) promote(node string) {
	b.reps.mu.Lock()
	var users []string
	for u, r := range b.reps.m {
		r.mu.Lock()
		if r.owner == node {
			users = append(users, u)
		}
		r.mu.Unlock()
	}
	b.reps.mu.Unlock()
	var mine []string
	for _, u := range users {
		// The leader's node-failed may already have cleared the owner.
		if e, ok := b.reg.Get(u); ok && (e.Owner == node || e.Owner == "") && e.Backup == b.cfg.NodeID {
			mine = append(mine, u)
		}
	}
	if len(mine) == 0 {
		return
	}
	b.log.Info("promoting replicas of a failed node", "node", node, "streams", len(mine))
	b.goSafe(func() {
		sem := make(chan struct{}, promoteParallel)
		var wg sync.WaitGroup
		for _, u := range mine {
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
				if _, err := b.takeover(ctx, u, map[string]bool{node: true}, false); err != nil {
					b.log.Debug("promotion failed", "user", u, "err", err)
				}
			}()
		}
		wg.Wait()
	})
}
