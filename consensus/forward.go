package consensus

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Forward payload kinds: the first byte of every payload, so the forward
// protocol can grow without breaking older nodes (they answer ErrMalformed).
const (
	// kindBatch: [1][batch framing] → results framing. A follower's batch of
	// commands, applied by the leader.
	kindBatch byte = 1
	// kindReadIndex: [2] → [version][uvarint index]. The leader runs a
	// barrier and answers the index of the last entry its state machine
	// applied: the catch-up target behind Ready.
	kindReadIndex byte = 2
)

// readIndexTimeout bounds the leader's barrier for a read-index request
// whose context has no deadline.
const readIndexTimeout = 5 * time.Second

// HandleForward is the leader side of Config.Forward. It answers
// ErrNotLeader when this node does not lead, or when it stopped leading
// before the commands reached Raft; the sender may then retry safely.
// Other errors leave the outcome of forwarded commands unknown.
func (r *Raft) HandleForward(ctx context.Context, payload []byte) ([]byte, error) {
	if len(payload) == 0 {
		return nil, fmt.Errorf("%w: empty forward payload", ErrMalformed)
	}
	switch payload[0] {
	case kindBatch:
		return r.handleForwardBatch(ctx, payload[1:])
	case kindReadIndex:
		if len(payload) != 1 {
			return nil, fmt.Errorf("%w: read-index payload of %d bytes", ErrMalformed, len(payload))
		}
		index, err := r.readIndex(ctx)
		if err != nil {
			return nil, err
		}
		return encodeIndex(index), nil
	default:
		return nil, fmt.Errorf("%w: unknown forward kind %d", ErrMalformed, payload[0])
	}
}

func (r *Raft) handleForwardBatch(ctx context.Context, frames []byte) ([]byte, error) {
	if !r.IsLeader() {
		return nil, ErrNotLeader
	}
	cmds, err := decodeFrames(frames)
	if err != nil {
		return nil, err
	}
	if len(cmds) == 0 {
		return encodeFrames(nil), nil
	}
	// One proposal for the whole batch: it joins the leader's own batches
	// but lands in a single entry, so it commits or fails as a unit.
	results, err := r.prop.submit(ctx, newProposal(cmds, true))
	switch {
	case err == nil:
		return encodeFrames(results), nil
	case errors.Is(err, ErrNotLeader):
		return nil, err
	case errors.Is(err, errNotSubmitted):
		return nil, fmt.Errorf("%w: %w", ErrNotLeader, err)
	default:
		return nil, err
	}
}

// readIndex returns, on the leader, the last index its state machine has
// applied after a barrier: everything committed before the call.
func (r *Raft) readIndex(ctx context.Context) (uint64, error) {
	if !r.IsLeader() {
		return 0, ErrNotLeader
	}
	timeout := readIndexTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return 0, fmt.Errorf("consensus: read index: %w", context.DeadlineExceeded)
	}
	bctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := r.await(bctx, r.raft.Barrier(timeout)); err != nil {
		return 0, fmt.Errorf("%w: read index barrier: %w", ErrNotLeader, err)
	}
	return r.fsm.lastApplied.Load(), nil
}

// queryReadIndex asks the leader at addr for its read index.
func (r *Raft) queryReadIndex(ctx context.Context, addr string) (uint64, error) {
	resp, err := r.cfg.Forward(ctx, addr, []byte{kindReadIndex})
	if err != nil {
		return 0, fmt.Errorf("consensus: read index from %s: %w", addr, err)
	}
	return decodeIndex(resp)
}

// ReadBarrier makes the next local reads linearizable: it learns the
// leader's read index (everything committed before the call) and waits
// until this replica has applied it. Routing never waits like this (it is
// fenced by epochs); admin reads and tests do.
func (r *Raft) ReadBarrier(ctx context.Context) error {
	var index uint64
	var err error
	if r.IsLeader() {
		index, err = r.readIndex(ctx)
	} else {
		_, addr := r.Leader()
		if addr == "" {
			return ErrNoLeader
		}
		index, err = r.queryReadIndex(ctx, addr)
	}
	if err != nil {
		return err
	}
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for r.fsm.lastApplied.Load() < index {
		select {
		case <-ctx.Done():
			return fmt.Errorf("consensus: read barrier at %d (applied %d): %w", index, r.fsm.lastApplied.Load(), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}
