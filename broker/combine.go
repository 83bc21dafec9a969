package broker

import (
	"context"
	"fmt"
	"sync"

	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/protocol"
)

// combineMaxBytes bounds what one combined call carries (a quarter of the
// peer link's largest frame); a single call larger than this goes alone,
// as it would uncombined.
const combineMaxBytes = 4 << 20

// combiner merges calls to the same node that overlap in time into one
// peer call. While a call to a node is in flight, later callers queue;
// when it returns, the first of them sends everything queued in one call
// and every caller gets its own part of the answer. Idle, a call goes out
// at once and waits for nothing; loaded, calls grow instead of
// multiplying, so a busy node spends its time on messages rather than on
// round trips (each costs syscalls and goroutine wake-ups at both ends).
//
// A caller waits for at most its own call and the one in flight before
// it, each bounded by the peer call timeout inside send.
type combiner[T, R any] struct {
	// send makes one peer call to node for items and returns one result
	// per item, in order.
	send func(ctx context.Context, node string, items []T) []R
	size func(T) int   // bytes an item adds to the call
	fail func(error) R // the result of an item whose call panicked

	mu    sync.Mutex
	nodes map[string]*combineQueue[T, R]
}

type combineQueue[T, R any] struct {
	busy  bool // a call to this node is in flight
	queue []*combineCall[T, R]
}

type combineCall[T, R any] struct {
	// sc is the caller's span context when sampled, else nil: a combined
	// call carries the first sampled caller's (the frame has room for one).
	sc    *trace.SpanContext
	items []T
	res   []R
	wake  chan bool // true: send the next combined call; false: res is filled
}

func newCombiner[T, R any](send func(context.Context, string, []T) []R, size func(T) int, fail func(error) R) *combiner[T, R] {
	return &combiner[T, R]{send: send, size: size, fail: fail, nodes: map[string]*combineQueue[T, R]{}}
}

// do sends items to node, in one call with whatever else is queued for
// node, and returns their results in order.
func (c *combiner[T, R]) do(ctx context.Context, node string, items []T) []R {
	me := &combineCall[T, R]{items: items, wake: make(chan bool, 1)}
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		me.sc = &sc
	}
	c.mu.Lock()
	q := c.nodes[node]
	if q == nil {
		q = &combineQueue[T, R]{}
		c.nodes[node] = q
	}
	q.queue = append(q.queue, me)
	if q.busy {
		c.mu.Unlock()
		if lead := <-me.wake; !lead {
			return me.res
		}
		c.mu.Lock()
	}
	q.busy = true
	batch := c.takeLocked(q)
	c.mu.Unlock()

	// The callers' contexts differ; the combined call must not end with
	// the leader's cancellation. send bounds it by the call timeout.
	c.run(context.WithoutCancel(ctx), node, batch)

	c.mu.Lock()
	if len(q.queue) > 0 {
		q.queue[0].wake <- true // it leads the next call; busy stays set
	} else {
		q.busy = false
		delete(c.nodes, node)
	}
	c.mu.Unlock()
	return me.res
}

// takeLocked takes the calls for the next combined call off q: at least
// one, then as many as fit in combineMaxBytes.
func (c *combiner[T, R]) takeLocked(q *combineQueue[T, R]) []*combineCall[T, R] {
	n, bytes := 0, 0
	for _, call := range q.queue {
		s := 0
		for _, it := range call.items {
			s += c.size(it)
		}
		if n > 0 && bytes+s > combineMaxBytes {
			break
		}
		n, bytes = n+1, bytes+s
	}
	batch := q.queue[:n:n]
	q.queue = q.queue[n:]
	if len(q.queue) == 0 {
		q.queue = nil
	}
	return batch
}

// run sends batch as one call and hands each caller its results; the
// caller running it (batch[0]) reads its own from res.
func (c *combiner[T, R]) run(ctx context.Context, node string, batch []*combineCall[T, R]) {
	if len(batch) == 1 {
		batch[0].res = c.sendSafely(ctx, node, batch[0].items)
		return
	}
	var items []T
	traced := false
	for _, call := range batch {
		items = append(items, call.items...)
		if !traced && call.sc != nil {
			ctx, traced = trace.ContextWithSpanContext(ctx, *call.sc), true
		}
	}
	res := c.sendSafely(ctx, node, items)
	off := 0
	for i, call := range batch {
		call.res = res[off : off+len(call.items) : off+len(call.items)]
		off += len(call.items)
		if i > 0 {
			call.wake <- false
		}
	}
}

// sendSafely is send, with a panic turned into every item's error: the
// callers queued behind this call must be answered, and the node's calls
// must not stay blocked behind a call that never ended.
func (c *combiner[T, R]) sendSafely(ctx context.Context, node string, items []T) (res []R) {
	defer func() {
		if r := recover(); r != nil {
			err := fmt.Errorf("%w: peer call to %s panicked: %v", protocol.ErrUnavailable, node, r)
			res = make([]R, len(items))
			for i := range res {
				res[i] = c.fail(err)
			}
		}
	}()
	return c.send(ctx, node, items)
}
