package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/peer"
)

// Serve registers the stream methods of peerapi this broker serves.
func (b *Broker) Serve(r peer.Registry) {
	peerapi.Publish.Serve(r, func(ctx context.Context, from string, items []peerapi.PublishItem) ([]peerapi.PublishOutcome, error) {
		return b.servePublish(ctx, from, items), nil
	})
	peerapi.Handoff.Serve(r, func(_ context.Context, _ string, req peerapi.HandoffRequest) (session.Tail, error) {
		return b.serveHandoff(req)
	})
	peerapi.Attach.Serve(r, func(_ context.Context, _ string, req peerapi.AttachRequest) (peerapi.AttachReply, error) {
		return b.serveAttach(req)
	})
	peerapi.Detach.Serve(r, func(_ context.Context, _ string, m peerapi.KeyNode) {
		if h := b.local(m.Key); h != nil {
			h.detachRemote(m.Node, m.Nonce)
		}
	})
	peerapi.Deliver.Serve(r, func(ctx context.Context, from string, d peerapi.Delivery) {
		b.serveDelivery(ctx, from, d)
	})
	peerapi.Replicate.Serve(r, func(ctx context.Context, from string, req session.Replication) (peerapi.Empty, error) {
		return peerapi.Empty{}, b.serveReplicateTraced(ctx, from, req)
	})
	peerapi.ReplicateBatch.Serve(r, func(ctx context.Context, from string, reqs []session.Replication) ([]error, error) {
		errs := make([]error, len(reqs))
		for i, req := range reqs {
			errs[i] = b.serveReplicateTraced(ctx, from, req)
		}
		return errs, nil
	})
	peerapi.Seal.Serve(r, func(_ context.Context, from string, req peerapi.HandoffRequest) (session.Tail, error) {
		return b.serveSeal(from, req)
	})
	peerapi.Takeover.Serve(r, func(ctx context.Context, _ string, key session.Key) (peerapi.Empty, error) {
		if b.draining.Load() {
			return peerapi.Empty{}, fmt.Errorf("%w: this node is draining", protocol.ErrUnavailable)
		}
		_, err := b.takeover(ctx, key, map[string]bool{}, false, nil)
		return peerapi.Empty{}, err
	})
	peerapi.Probe.Serve(r, func(_ context.Context, _ string, key session.Key) (bool, error) {
		return b.holder(key) != nil || b.replicaFor(key) != nil || b.isClaiming(key), nil
	})
	peerapi.Tips.Serve(r, func(_ context.Context, from string, tips []peerapi.Tip) {
		b.serveTips(from, tips)
	})
	peerapi.ReportPresence.Serve(r, func(_ context.Context, _ string, rep peerapi.PresenceReport) {
		b.takeReport(rep)
	})
	peerapi.ReportPresenceBatch.Serve(r, func(_ context.Context, _ string, reps []peerapi.PresenceReport) {
		for _, rep := range reps {
			b.takeReport(rep)
		}
	})
	peerapi.PresenceEvents.Serve(r, func(_ context.Context, _ string, evs []peerapi.PresenceEvent) {
		b.deliverPresence(evs)
	})
	peerapi.PresenceSnapshot.Serve(r, func(_ context.Context, _ string, snap peerapi.PresenceReport) {
		b.keepSnapshot(snap)
	})
	peerapi.FetchPresenceSnapshot.Serve(r, func(_ context.Context, _ string, key session.Key) (peerapi.PresenceReport, error) {
		return b.serveSnapshot(key)
	})
	peerapi.Presence.Serve(r, func(_ context.Context, _ string, rep peerapi.PresenceReport) ([]session.Member, error) {
		return b.servePresence(rep)
	})
	peerapi.Subscribers.Serve(r, func(_ context.Context, _ string, key session.Key) (uint64, error) {
		return uint64(b.Subscribers(key.Name)), nil
	})
	peerapi.History.Serve(r, func(_ context.Context, _ string, req peerapi.HistoryRequest) (peerapi.HistoryReply, error) {
		return b.serveHistory(req)
	})
	peerapi.Evict.Serve(r, func(_ context.Context, from string, m peerapi.KeyNode) {
		b.mu.Lock()
		a := b.remote[m.Key]
		b.mu.Unlock()
		switch {
		case a == nil || a.owner != from:
		case m.Lost:
			a.evict(protocol.Errorf(protocol.ErrContinuityLost, "stream lost: continuity lost, resync"))
		default:
			a.evict(protocol.Errorf(protocol.ErrMoved, "session moved: reconnect to resume"))
		}
	})
}

// Link failures. Gossip takes seconds to declare a node dead; a refused or
// reset link says so at once. A node whose link just failed is neither
// forwarded to, nor chosen as a backup, nor asked for a stream, for
// downFor. This view is only ever used to avoid a node: whether a stream
// is lost is never decided on it.

// downFor is how long a node whose link failed is avoided.
const downFor = 3 * time.Second

// marking is the broker's peer.Caller: every call goes through it, so a
// failed link marks its node down and a successful call clears the mark.
type marking struct {
	b    *Broker
	next peer.Caller
}

func (m *marking) Call(ctx context.Context, node string, method uint8, payload []byte) ([]byte, error) {
	p, err := m.next.Call(ctx, node, method, payload)
	if err == nil {
		m.b.mu.Lock()
		delete(m.b.down, node)
		m.b.mu.Unlock()
	} else {
		m.b.linkFailed(node, err)
	}
	return p, err
}

// Send is the caller's: a queued one-way frame says nothing of the link.
func (m *marking) Send(ctx context.Context, node string, method uint8, payload []byte) error {
	return m.next.Send(ctx, node, method, payload)
}

// linkFailed records that a call to node failed at the link level (not a
// timeout or a remote error) and reports whether that was the case.
func (b *Broker) linkFailed(node string, err error) bool {
	if !errors.Is(err, peer.ErrUnavailable) {
		return false
	}
	b.mu.Lock()
	b.down[node] = b.cfg.Now().Add(downFor)
	b.mu.Unlock()
	return true
}

// LinkDown reacts to a peer link to node breaking (transport/peer's
// OnDown). A process that dies closes its links at once, seconds before
// gossip declares it dead, and until then the streams attached here to
// an owner on it would wait: for the tips' silence (tipSilence
// intervals) or for NodeDown. So the owner is asked at once, on a new
// link: if it answers, or is merely slow, nothing changes (tips mend what
// the broken link lost). If no link can be made (refused: marked down,
// as any failed call marks it), the attached connections are sent to
// resume as NodeDown would send them: a channel's subscriptions resume
// by themselves and take the stream over, claiming it in Raft, which
// fences the old owner should it be alive after all; a user's
// connections reconnect and do the same.
func (b *Broker) LinkDown(node string) {
	b.mu.Lock()
	var key session.Key
	found := false
	for k, a := range b.remote {
		if a.owner == node {
			key, found = k, true
			break
		}
	}
	if !found || b.checking[node] {
		b.mu.Unlock()
		return
	}
	b.checking[node] = true
	b.mu.Unlock()
	b.goSafe(func() {
		defer func() {
			b.mu.Lock()
			delete(b.checking, node)
			b.mu.Unlock()
		}()
		if b.refusesLinks(node, key) {
			b.evictAttached(node)
		}
	})
}

// refusesLinks says whether node cannot be reached on a new link: a call
// (a probe of key) is not even sent because no link can be made. A call
// that went out on a link that then broke as well (the same failure,
// seen on another link) is made again; one that times out says node is
// slow, not gone.
func (b *Broker) refusesLinks(node string, key session.Key) bool {
	ctx, cancel := context.WithTimeout(b.ctx, probeTimeout)
	defer cancel()
	for {
		_, err := peerapi.Probe.Call(ctx, b.peers, node, key)
		switch {
		case err == nil, !errors.Is(err, peer.ErrUnavailable):
			return false // it answered, or is slow: the tips judge it
		case errors.Is(err, peer.ErrNotSent):
			b.log.Info("owner unreachable after its link broke; sending attached connections to resume", "peer", node, "err", err)
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// evictAttached sends the connections attached to streams owned by
// node to resume, where they will take the streams over.
func (b *Broker) evictAttached(node string) {
	b.mu.Lock()
	var gone []*attached
	for _, a := range b.remote {
		if a.owner == node {
			gone = append(gone, a)
		}
	}
	b.mu.Unlock()
	for _, a := range gone {
		a.evict(b.ownerDown(a.key, node))
	}
}

// NodeUp clears the link-failure mark of a node gossip sees alive again.
func (b *Broker) NodeUp(node string) {
	b.mu.Lock()
	delete(b.down, node)
	b.mu.Unlock()
}

// isDown says whether node's links failed within downFor.
func (b *Broker) isDown(node string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	until, ok := b.down[node]
	if ok && b.cfg.Now().After(until) {
		delete(b.down, node)
		return false
	}
	return ok
}

// usable says whether node can be asked for a stream during a request
// that has found the nodes in avoid unreachable.
func (b *Broker) usable(node string, avoid map[string]bool) bool {
	return node != "" && node != b.cfg.NodeID && !avoid[node] && !b.isDown(node) && b.cluster.Alive(node)
}

// isPeer says whether node may take replicas: alive and not draining.
func (b *Broker) isPeer(node string) bool {
	for _, p := range b.cluster.Peers() {
		if p.ID == node {
			return true
		}
	}
	return false
}
