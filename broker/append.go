package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/internal/tracing"
	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/peer"
)

// appendParallel bounds how many streams' appends wait at once.
const appendParallel = 64

// appendLocal appends each held stream's messages and replicates them
// before it answers: the streams whose backup is the same node in one peer
// call (a publish batch spans many streams, and a call per stream was most
// of an owner's work), the rest one flush per stream. It fills res and
// returns the requests to route again because their stream was sealed
// meanwhile. entry is the node the publishes came in at (for traces).
func (b *Broker) appendLocal(ctx context.Context, entry string, reqs []PublishRequest, res []PublishResult, groups map[*held][]int) []int {
	type appended struct {
		ctx     context.Context // under the stream's stream.append span, if sampled
		span    trace.Span
		h       *held
		idx     []int
		msgs    []session.Message
		top     uint64
		err     error
		req     session.Replication // batched flush, when backup != ""
		backup  string
		callErr error
		skip    bool // the batch call was not understood: flush alone
	}
	all := make([]*appended, 0, len(groups))
	byBackup := map[string][]*appended{}
	var noBackup []*appended
	for h, idx := range groups {
		a := &appended{h: h, idx: idx}
		a.ctx, a.span = b.cfg.Tracer.Child(ctx, tracing.SpanStreamAppend, trace.SpanKindInternal)
		h.mu.Lock()
		h.waitFanoutLocked()
		a.msgs, a.top, a.err = h.appendLocked(reqs, idx)
		if a.span.IsRecording() {
			h.traceLocked(a.msgs, a.span.SpanContext())
			a.span.SetAttributes(append(seqAttrs(a.msgs), keyAttr(h.key), tracing.AttrEpoch.Int64(int64(h.o.Epoch())),
				tracing.AttrEntry.String(entry), tracing.AttrOwner.String(b.cfg.NodeID), tracing.AttrBackup.String(h.o.Backup()))...)
		}
		if a.err == nil && h.o.Acked() < a.top {
			if req, backup, ok := h.o.BeginPlainFlush(); ok {
				a.req, a.backup = req, backup
				byBackup[backup] = append(byBackup[backup], a)
			} else if h.o.Backup() == "" {
				noBackup = append(noBackup, a)
			}
		}
		h.mu.Unlock()
		all = append(all, a)
	}
	// The only server of the cluster acknowledges with its own copy, as a
	// flush would, without a flush (and a goroutine) per stream. Asked only
	// when some stream has no backup: never, in a formed cluster.
	if len(noBackup) > 0 && len(b.cluster.Peers()) == 0 && b.cluster.Solo() {
		for _, a := range noBackup {
			h := a.h
			h.mu.Lock()
			if h.o.Backup() == "" && !h.o.Flushing() && h.o.Acked() < a.top {
				h.applyLocked(h.o.AckAlone(), "")
			}
			h.mu.Unlock()
		}
	}

	var wg sync.WaitGroup
	for backup, as := range byBackup {
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := make([]session.Replication, len(as))
			rctx := ctx // one call for many streams: it joins the first sampled one's trace
			for i, a := range as {
				batch[i] = a.req
				if rctx == ctx && a.span.IsRecording() {
					rctx = a.ctx
				}
			}
			start := time.Now()
			rs := b.replicates.do(rctx, backup, batch)
			// Timed when the backup answered for some stream: a failed
			// call's time is the timeout, not a latency.
			if slices.ContainsFunc(rs, func(r replicated) bool { return r.err == nil }) {
				b.cfg.Observer.Replicated(time.Since(start))
			}
			for i, a := range as {
				a.callErr, a.skip = rs[i].err, rs[i].skip
			}
		}()
	}
	wg.Wait()
	for _, as := range byBackup {
		for _, a := range as {
			a.h.mu.Lock()
			a.h.endBatchLocked(a.req, a.backup, a.callErr, a.skip)
			a.h.mu.Unlock()
		}
	}

	// What is not acknowledged yet (no batch, or the batch failed for it)
	// is flushed stream by stream, in parallel.
	sem := make(chan struct{}, appendParallel)
	for _, a := range all {
		if a.err != nil {
			continue
		}
		a.h.mu.Lock()
		done := a.h.o.Acked() >= a.top
		a.h.mu.Unlock()
		if done {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			a.h.mu.Lock()
			a.err = a.h.waitAckedLocked(a.ctx, a.top)
			a.h.mu.Unlock()
		}()
	}
	wg.Wait()

	var retry []int
	for _, a := range all {
		tracing.End(a.span, a.err)
		if reroute(a.err) {
			retry = append(retry, a.idx...)
			continue
		}
		for k, i := range a.idx {
			if a.err != nil {
				res[i].Err = a.err
				continue
			}
			res[i] = PublishResult{Seq: a.msgs[k].Seq, Node: b.cfg.NodeID}
		}
	}
	return retry
}

// replicated is a backup's answer to one stream's replication; skip
// means the backup does not know batched calls (an older node in a
// rolling upgrade): nothing was stored and the stream must flush on its own.
type replicated struct {
	err  error
	skip bool
}

// sendReplicate sends reqs to backup (b.replicates): one request alone as
// a plain replication, several in one batched call. There is one answer
// per request (the call's error for all when the call failed).
func (b *Broker) sendReplicate(ctx context.Context, backup string, reqs []session.Replication) []replicated {
	res := make([]replicated, len(reqs))
	ctx, span := b.cfg.Tracer.Child(ctx, tracing.SpanStreamReplicate, trace.SpanKindClient)
	if span.IsRecording() {
		span.SetAttributes(tracing.AttrOwner.String(b.cfg.NodeID), tracing.AttrBackup.String(backup), attribute.Int("switchboard.streams", len(reqs)))
		if len(reqs) == 1 {
			span.SetAttributes(append(seqAttrs(reqs[0].Msgs), keyAttr(reqs[0].Key), tracing.AttrEpoch.Int64(int64(reqs[0].Epoch)))...)
		}
		defer func() { tracing.End(span, res[0].err) }()
	}
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	if len(reqs) == 1 {
		_, res[0].err = peerapi.Replicate.Call(cctx, b.peers, backup, reqs[0])
		return res
	}
	got, err := peerapi.ReplicateBatch.Call(cctx, b.peers, backup, reqs)
	if err == nil && len(got) != len(reqs) {
		err = fmt.Errorf("%w: %d results for %d replications", peerapi.ErrBadPayload, len(got), len(reqs))
	}
	if err == nil {
		for i, e := range got {
			res[i].err = e
		}
		return res
	}
	skip := errors.Is(err, peer.ErrUnknownMethod)
	for i := range res {
		res[i].err, res[i].skip = err, skip
	}
	return res
}

func replicationSize(r session.Replication) int {
	n := len(r.Key.Name) + len(r.Session) + 32
	for _, m := range r.Msgs {
		n += len(m.ID) + len(m.Data) + 24
	}
	return n
}
