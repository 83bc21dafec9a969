package broker

import (
	"context"
	"fmt"
)

// Handler is one peer-link method the broker serves.
type Handler struct {
	Method uint8
	// Inline handlers run on the link's read loop in arrival order: used
	// where order matters (deliveries after an attach) and work is short.
	Inline bool
	Fn     func(ctx context.Context, from string, payload []byte) ([]byte, error)
}

// Handlers lists the peer-link methods to register on the node's links.
func (b *Broker) Handlers() []Handler {
	return []Handler{
		{Method: methodPublish, Fn: func(ctx context.Context, from string, p []byte) ([]byte, error) {
			items, err := decodePublish(p)
			if err != nil {
				return nil, err
			}
			return encodePublishReply(b.servePublish(ctx, from, items)), nil
		}},
		{Method: methodHandoff, Fn: func(_ context.Context, _ string, p []byte) ([]byte, error) {
			req, err := decodeHandoff(p)
			if err != nil {
				return nil, err
			}
			rep, err := b.serveHandoff(req)
			if err != nil {
				return nil, err
			}
			return encodeHandoffReply(rep), nil
		}},
		{Method: methodAttach, Inline: true, Fn: func(_ context.Context, _ string, p []byte) ([]byte, error) {
			req, err := decodeAttach(p)
			if err != nil {
				return nil, err
			}
			rep, err := b.serveAttach(req)
			if err != nil {
				return nil, err
			}
			return encodeAttachReply(rep), nil
		}},
		{Method: methodDetach, Inline: true, Fn: func(_ context.Context, _ string, p []byte) ([]byte, error) {
			u, err := decodeUserNode(p)
			if err != nil {
				return nil, err
			}
			if h := b.local(u.User); h != nil {
				h.detachRemote(u.Node)
			}
			return nil, nil
		}},
		{Method: methodDeliver, Inline: true, Fn: func(_ context.Context, from string, p []byte) ([]byte, error) {
			d, err := decodeDeliver(p)
			if err != nil {
				return nil, err
			}
			b.mu.Lock()
			a := b.remote[d.User]
			b.mu.Unlock()
			if a == nil || a.owner != from {
				// Nobody here listens any more: tell the owner to stop.
				b.goSafe(func() {
					ctx, cancel := b.callCtx(b.ctx)
					defer cancel()
					_ = b.peers.Send(ctx, from, methodDetach, encodeUserNode(userNode{User: d.User, Node: b.cfg.NodeID}))
				})
				return nil, nil
			}
			a.deliver(d.Msgs)
			return nil, nil
		}},
		{Method: methodReplicate, Inline: true, Fn: func(_ context.Context, from string, p []byte) ([]byte, error) {
			req, err := decodeReplicate(p)
			if err != nil {
				return nil, err
			}
			return nil, b.serveReplicate(from, req)
		}},
		{Method: methodReplicateBatch, Inline: true, Fn: func(_ context.Context, from string, p []byte) ([]byte, error) {
			reqs, err := decodeReplicateBatch(p)
			if err != nil {
				return nil, err
			}
			errs := make([]error, len(reqs))
			for i, req := range reqs {
				errs[i] = b.serveReplicate(from, req)
			}
			return encodeReplicateResults(errs), nil
		}},
		{Method: methodSeal, Fn: func(_ context.Context, from string, p []byte) ([]byte, error) {
			req, err := decodeHandoff(p)
			if err != nil {
				return nil, err
			}
			rep, err := b.serveSeal(from, req)
			if err != nil {
				return nil, err
			}
			return encodeHandoffReply(rep), nil
		}},
		{Method: methodTakeover, Fn: func(ctx context.Context, _ string, p []byte) ([]byte, error) {
			if b.draining.Load() {
				return nil, fmt.Errorf("%w: this node is draining", ErrUnavailable)
			}
			_, err := b.takeover(ctx, string(p), nil, false)
			return nil, err
		}},
		{Method: methodProbe, Inline: true, Fn: func(_ context.Context, _ string, p []byte) ([]byte, error) {
			user := string(p)
			if b.holder(user) != nil || b.replicaFor(user) != nil || b.isClaiming(user) {
				return []byte{1}, nil
			}
			return []byte{0}, nil
		}},
		{Method: methodTip, Inline: true, Fn: func(_ context.Context, from string, p []byte) ([]byte, error) {
			tips, err := decodeTips(p)
			if err != nil {
				return nil, err
			}
			b.serveTips(from, tips)
			return nil, nil
		}},
		{Method: methodEvict, Inline: true, Fn: func(_ context.Context, from string, p []byte) ([]byte, error) {
			u, err := decodeUserNode(p)
			if err != nil {
				return nil, err
			}
			b.mu.Lock()
			a := b.remote[u.User]
			b.mu.Unlock()
			if a != nil && a.owner == from {
				a.evict("session moved")
			}
			return nil, nil
		}},
	}
}
