package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/internal/tracing"
	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
)

// PublishRequest is one message to publish.
type PublishRequest struct {
	Key  session.Key
	ID   string // idempotency key; the API layer fills one in when absent
	Data []byte // a JSON value
}

// PublishResult is the answer to one PublishRequest.
type PublishResult struct {
	Seq  uint64
	Node string // the owner that stored it
	Err  error
}

// Publish stores each message in its stream, on whichever node owns it,
// and answers once it is acknowledged. Results are in request order.
// Messages for streams owned elsewhere are forwarded in one peer call per
// owner; when ownership moves meanwhile they are routed again, keeping
// their ids, so each is stored once.
func (b *Broker) Publish(ctx context.Context, reqs []PublishRequest) []PublishResult {
	res := make([]PublishResult, len(reqs))
	pending := make([]int, len(reqs))
	for i := range reqs {
		pending[i] = i
	}
	ctx, span := b.cfg.Tracer.Child(ctx, tracing.SpanPublishRoute, trace.SpanKindInternal)
	if span.IsRecording() {
		span.SetAttributes(tracing.AttrEntry.String(b.cfg.NodeID), tracing.AttrCount.Int(len(reqs)))
		if len(reqs) == 1 {
			span.SetAttributes(keyAttr(reqs[0].Key), tracing.AttrID.String(reqs[0].ID))
		}
		defer func() { b.endRoute(span, res) }()
	}
	tries := 0
	rt := newRouting(false)
	err := b.attempts(ctx, func() bool {
		tries++
		if tries > 1 && span.IsRecording() {
			span.AddEvent("route again", trace.WithAttributes(attribute.Int("switchboard.pending", len(pending))))
		}
		local, forward := map[*held][]int{}, map[string][]int{}
		var retry []int
		for _, group := range byStream(reqs, pending) {
			w, err := b.route(ctx, reqs[group[0]].Key, rt)
			switch {
			case reroute(err):
				retry = append(retry, group...)
			case err != nil:
				for _, i := range group {
					res[i].Err = err
				}
			case w.h != nil:
				local[w.h] = group
			default:
				forward[w.owner] = append(forward[w.owner], group...)
			}
		}
		if span.IsRecording() && len(reqs) == 1 {
			owner := b.cfg.NodeID
			for o := range forward {
				owner = o
			}
			span.SetAttributes(tracing.AttrOwner.String(owner))
		}
		retry = append(retry, b.appendLocal(ctx, b.cfg.NodeID, reqs, res, local)...)
		retry = append(retry, b.forward(ctx, reqs, res, forward, rt)...)
		pending = retry
		return len(pending) > 0
	})
	if err != nil {
		if !errors.Is(err, ErrRerouted) {
			err = fmt.Errorf("%w: %v", protocol.ErrUnavailable, err)
		}
		for _, i := range pending {
			res[i].Err = err
		}
	}
	return res
}

// endRoute ends a publish's publish.route span with what became of it.
func (b *Broker) endRoute(span trace.Span, res []PublishResult) {
	var err error
	for _, r := range res {
		if r.Err != nil {
			err = r.Err
			break
		}
	}
	if len(res) == 1 && res[0].Err == nil {
		span.SetAttributes(tracing.AttrSeq.Int64(int64(res[0].Seq)), tracing.AttrOwner.String(res[0].Node))
	}
	tracing.End(span, err)
}

// byStream groups the requests idx by stream, each group in request
// order, the groups in order of first appearance.
func byStream(reqs []PublishRequest, idx []int) [][]int {
	at := map[session.Key]int{}
	var groups [][]int
	for _, i := range idx {
		g, ok := at[reqs[i].Key]
		if !ok {
			g = len(groups)
			at[reqs[i].Key] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	return groups
}

// forward sends each owner its share in one call, concurrently, and
// returns the requests to route again.
func (b *Broker) forward(ctx context.Context, reqs []PublishRequest, res []PublishResult, groups map[string][]int, rt *routing) []int {
	if len(groups) == 0 {
		return nil
	}
	var (
		mu    sync.Mutex
		retry []int
		wg    sync.WaitGroup
	)
	for owner, idx := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			items := make([]peerapi.PublishItem, len(idx))
			for k, i := range idx {
				items[k] = peerapi.PublishItem(reqs[i])
			}
			fw := b.forwards.do(ctx, owner, items)
			err := fw[0].err // a call's error is every item's
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				b.log.Debug("forward failed", "owner", owner, "err", err)
				if b.linkFailed(owner, err) {
					// The owner's link broke: it may be dead. The outcome is
					// unknown, so the retry keeps the same id (stored once,
					// G3) and goes wherever the stream is by then.
					rt.avoid[owner] = true
					retry = append(retry, idx...)
					return
				}
				// Slow or refusing, but there: not a reason to take its
				// streams away. The publisher retries with the same id.
				for _, i := range idx {
					res[i].Err = fmt.Errorf("%w: owner %s: %v", protocol.ErrUnavailable, owner, err)
				}
				return
			}
			for k, i := range idx {
				switch o := fw[k].out; o.Code {
				case peerapi.PublishOK:
					res[i] = PublishResult{Seq: o.Seq, Node: owner}
				case peerapi.PublishNotOwner:
					retry = append(retry, i)
				case peerapi.PublishUnavailable:
					res[i].Err = protocol.Errorf(protocol.ErrUnavailable, "%s", o.Msg)
				default:
					res[i].Err = errors.New(o.Msg)
				}
			}
		}()
	}
	wg.Wait()
	return retry
}

// servePublish appends a forwarded batch here. Streams that live on
// another live node are answered PublishNotOwner so the sender routes
// again; streams nobody reachable holds are taken over here, as the sender
// would.
func (b *Broker) servePublish(ctx context.Context, from string, items []peerapi.PublishItem) []peerapi.PublishOutcome {
	out := make([]peerapi.PublishOutcome, len(items))
	reqs := make([]PublishRequest, len(items))
	all := make([]int, len(items))
	for k, it := range items {
		reqs[k], all[k] = PublishRequest(it), k
	}
	rt := newRouting(false)
	rt.avoid[from] = b.draining.Load()
	local := map[*held][]int{}
	for _, group := range byStream(reqs, all) {
		w, err := b.route(ctx, reqs[group[0]].Key, rt)
		for _, k := range group {
			switch {
			case err != nil:
				out[k] = outcomeOf(err)
			case w.h == nil:
				out[k] = peerapi.PublishOutcome{Code: peerapi.PublishNotOwner, Msg: "owned by " + w.owner}
			}
		}
		if err == nil && w.h != nil {
			local[w.h] = group
		}
	}
	res := make([]PublishResult, len(items))
	for _, k := range b.appendLocal(ctx, from, reqs, res, local) {
		out[k] = peerapi.PublishOutcome{Code: peerapi.PublishNotOwner, Msg: "stream moved"}
	}
	for _, idx := range local {
		for _, k := range idx {
			switch {
			case out[k].Code == peerapi.PublishNotOwner:
			case res[k].Err != nil:
				out[k] = outcomeOf(res[k].Err)
			default:
				out[k] = peerapi.PublishOutcome{Code: peerapi.PublishOK, Seq: res[k].Seq}
			}
		}
	}
	return out
}

func outcomeOf(err error) peerapi.PublishOutcome {
	switch {
	case reroute(err):
		return peerapi.PublishOutcome{Code: peerapi.PublishNotOwner, Msg: err.Error()}
	case errors.Is(err, protocol.ErrUnavailable):
		return peerapi.PublishOutcome{Code: peerapi.PublishUnavailable, Msg: err.Error()}
	}
	return peerapi.PublishOutcome{Code: peerapi.PublishFailed, Msg: err.Error()}
}

// forwarded is the owner's answer to one forwarded publish, or the
// error of the call that carried it.
type forwarded struct {
	out peerapi.PublishOutcome
	err error
}

// sendPublish forwards items to their owner in one call (b.forwards).
func (b *Broker) sendPublish(ctx context.Context, owner string, items []peerapi.PublishItem) []forwarded {
	cctx, cancel := b.callCtx(ctx)
	out, err := peerapi.Publish.Call(cctx, b.peers, owner, items)
	cancel()
	if err == nil && len(out) != len(items) {
		err = fmt.Errorf("%w: %d answers for %d publishes", peerapi.ErrBadPayload, len(out), len(items))
	}
	res := make([]forwarded, len(items))
	for i := range res {
		if err != nil {
			res[i].err = err
		} else {
			res[i].out = out[i]
		}
	}
	return res
}

func publishItemSize(it peerapi.PublishItem) int {
	return len(it.Key.Name) + len(it.ID) + len(it.Data) + 16
}
