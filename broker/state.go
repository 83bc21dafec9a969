package broker

import (
	"context"
	"errors"
	"sync"

	"github.com/switchboard/switchboard/session"
)

// stateRecorder records in the registry whether a held stream has
// connections (attach) or not (detach), in the background. The record is
// advisory — it decides whether another node's connection attaches here
// or asks to take the stream over, and starts the resume window — and
// fenced by epoch, so failures are only logged. Records of one stream go
// one at a time and coalesce to the latest wanted state, so a quick
// detach and attach can never land in the wrong order.
type stateRecorder struct {
	b    *Broker
	mu   sync.Mutex
	want map[session.Key]session.Kind // the state to record next
	busy map[session.Key]bool         // streams with a sender running
}

func newStateRecorder(b *Broker) *stateRecorder {
	return &stateRecorder{b: b, want: map[session.Key]session.Kind{}, busy: map[session.Key]bool{}}
}

// record asks for kind (KindAttach or KindDetach) to be recorded for key.
func (r *stateRecorder) record(key session.Key, kind session.Kind) {
	r.mu.Lock()
	r.want[key] = kind
	busy := r.busy[key]
	r.busy[key] = true
	r.mu.Unlock()
	if !busy {
		r.b.goSafe(func() { r.send(key) })
	}
}

// send records the wanted states of key until none is left to record.
func (r *stateRecorder) send(key session.Key) {
	b := r.b
	var last session.Kind
	for {
		r.mu.Lock()
		want, ok := r.want[key]
		h := b.local(key)
		if !ok || want == last || h == nil {
			delete(r.want, key)
			delete(r.busy, key)
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		// The epoch is read now, not when the change was asked for: a
		// set-backup in between moved it on.
		h.mu.Lock()
		epoch := h.o.Epoch()
		h.mu.Unlock()
		ctx, cancel := context.WithTimeout(b.ctx, 2*b.cfg.CallTimeout)
		_, err := b.reg.Propose(ctx, session.Command{Kind: want, User: key.String(), Node: b.cfg.NodeID, Epoch: epoch})
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			b.log.Debug("registry state update failed", "stream", key, "kind", want, "err", err)
		}
		last = want
		if b.ctx.Err() != nil {
			return
		}
	}
}
