package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport"
)

// PublishRequest is one message to publish.
type PublishRequest struct {
	User string
	ID   string // idempotency key; the API layer fills one in when absent
	Data []byte // a JSON value
}

// PublishResult is the answer to one PublishRequest.
type PublishResult struct {
	Seq  uint64
	Node string // the owner that stored it
	Err  error
}

// Publish stores each message in its user's stream, on whichever node owns
// it, and answers once it is stored. Results are in request order.
// Requests for users owned elsewhere are forwarded in one peer call per
// owner; when ownership moves meanwhile they are re-routed.
func (b *Broker) Publish(ctx context.Context, reqs []PublishRequest) []PublishResult {
	res := make([]PublishResult, len(reqs))
	pending := make([]int, len(reqs))
	for i := range reqs {
		pending[i] = i
	}
	avoid := map[string]bool{}
	hints := map[string]*session.Entry{}
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt == b.cfg.MaxRoutes {
			for _, i := range pending {
				res[i].Err = ErrRerouted
			}
			break
		}
		if err := ctx.Err(); err != nil {
			for _, i := range pending {
				res[i].Err = fmt.Errorf("%w: %v", ErrUnavailable, err)
			}
			break
		}
		var retry []int
		forward := map[string][]int{}
		local := map[*held][]int{}
		// Route each user once; its messages keep their request order.
		byUser := map[string][]int{}
		var users []string
		for _, i := range pending {
			u := reqs[i].User
			if _, ok := byUser[u]; !ok {
				users = append(users, u)
			}
			byUser[u] = append(byUser[u], i)
		}
		for _, u := range users {
			idx := byUser[u]
			h, owner, err := b.route(ctx, u, hints[u], avoid, false)
			var oe *ownedElsewhere
			switch {
			case errors.As(err, &oe):
				hints[u] = &oe.entry
				retry = append(retry, idx...)
			case err != nil:
				for _, i := range idx {
					res[i].Err = err
				}
			case h != nil:
				local[h] = idx
			default:
				forward[owner] = append(forward[owner], idx...)
			}
		}
		retry = append(retry, b.appendLocal(ctx, reqs, res, local)...)
		retry = append(retry, b.forward(ctx, reqs, res, forward, avoid)...)
		pending = retry
		if len(pending) > 0 {
			// Ownership is moving: give the takeover a moment to finish.
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(attempt+1) * 20 * time.Millisecond):
			}
		}
	}
	return res
}

// forward sends each owner its share in one call, concurrently, and
// returns the requests to re-route.
func (b *Broker) forward(ctx context.Context, reqs []PublishRequest, res []PublishResult, groups map[string][]int, avoid map[string]bool) []int {
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
			items := make([]publishItem, len(idx))
			for k, i := range idx {
				items[k] = publishItem{User: reqs[i].User, ID: reqs[i].ID, Data: reqs[i].Data}
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
					avoid[owner] = true
					retry = append(retry, idx...)
					return
				}
				// Slow or refusing, but there: not a reason to take its
				// streams away. The publisher retries with the same id.
				for _, i := range idx {
					res[i].Err = fmt.Errorf("%w: owner %s: %v", ErrUnavailable, owner, err)
				}
				return
			}
			for k, i := range idx {
				switch o := fw[k].out; o.Code {
				case itemOK:
					res[i] = PublishResult{Seq: o.Seq, Node: owner}
				case itemNotOwner:
					retry = append(retry, i)
				case itemUnavailable:
					res[i].Err = fmt.Errorf("%w: %s", ErrUnavailable, o.Msg)
				default:
					res[i].Err = errors.New(o.Msg)
				}
			}
		}()
	}
	wg.Wait()
	return retry
}

// servePublish appends a forwarded batch here. Users whose stream lives
// on another live node are answered itemNotOwner so the sender re-routes;
// users nobody reachable holds are taken over here, as the sender would.
func (b *Broker) servePublish(ctx context.Context, from string, items []publishItem) []publishOutcome {
	out := make([]publishOutcome, len(items))
	avoid := map[string]bool{from: b.draining.Load()}
	reqs := make([]PublishRequest, len(items))
	byUser := map[string][]int{}
	var users []string
	for k, it := range items {
		reqs[k] = PublishRequest{User: it.User, ID: it.ID, Data: it.Data}
		if _, ok := byUser[it.User]; !ok {
			users = append(users, it.User)
		}
		byUser[it.User] = append(byUser[it.User], k)
	}
	local := map[*held][]int{}
	for _, u := range users {
		h, owner, err := b.route(ctx, u, nil, avoid, false)
		for _, k := range byUser[u] {
			switch {
			case err != nil:
				out[k] = outcomeOf(err)
			case h == nil:
				out[k] = publishOutcome{Code: itemNotOwner, Msg: "owned by " + owner}
			}
		}
		if err == nil && h != nil {
			local[h] = byUser[u]
		}
	}
	res := make([]PublishResult, len(items))
	for _, k := range b.appendLocal(ctx, reqs, res, local) {
		out[k] = publishOutcome{Code: itemNotOwner, Msg: "stream moved"}
	}
	for _, idx := range local {
		for _, k := range idx {
			if out[k].Code == itemNotOwner {
				continue
			}
			if res[k].Err != nil {
				out[k] = outcomeOf(res[k].Err)
				continue
			}
			out[k] = publishOutcome{Code: itemOK, Seq: res[k].Seq}
		}
	}
	return out
}

// appendParallel bounds how many users' appends wait at once.
const appendParallel = 64

// appendLocal appends each held stream's messages and replicates them
// before it answers: all users whose backup is the same node in one peer
// call (a publish batch spans many users, and a call per user was most of
// an owner's work), the rest one flush per user as waitAckedLocked does
// it. It fills res and returns the requests to re-route because their
// stream was sealed meanwhile.
func (b *Broker) appendLocal(ctx context.Context, reqs []PublishRequest, res []PublishResult, groups map[*held][]int) []int {
	type appended struct {
		h       *held
		idx     []int
		msgs    []session.Message
		top     uint64
		err     error
		req     replicateRequest // batched flush, when backup != ""
		backup  string
		callErr error
		skip    bool // the batch call was not understood: flush alone
	}
	all := make([]*appended, 0, len(groups))
	byBackup := map[string][]*appended{}
	var noBackup []*appended
	for h, idx := range groups {
		a := &appended{h: h, idx: idx}
		h.mu.Lock()
		a.msgs, a.top, a.err = h.appendLocked(reqs, idx)
		if a.err == nil && h.acked < a.top {
			if req, backup, ok := h.takeBatchLocked(); ok {
				a.req, a.backup = req, backup
				byBackup[backup] = append(byBackup[backup], a)
			} else if h.backup == "" {
				noBackup = append(noBackup, a)
			}
		}
		h.mu.Unlock()
		all = append(all, a)
	}
	// The only server of the cluster acknowledges with its own copy, as
	// flushLocked would, without a flush (and a goroutine) per user. Asked
	// only when some stream has no backup: never, in a formed cluster.
	if len(noBackup) > 0 && len(b.cluster.Peers()) == 0 && b.cluster.Solo() {
		for _, a := range noBackup {
			h := a.h
			h.mu.Lock()
			if h.backup == "" && !h.flushing && !h.sealed && h.acked < a.top {
				h.fullCopy = false
				h.ackLocked(h.stream.Last())
			}
			h.mu.Unlock()
		}
	}

	var wg sync.WaitGroup
	for backup, as := range byBackup {
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := make([]replicateRequest, len(as))
			for i, a := range as {
				batch[i] = a.req
			}
			rs := b.replicateBatch(ctx, backup, batch)
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
	// is flushed user by user, in parallel.
	sem := make(chan struct{}, appendParallel)
	for _, a := range all {
		if a.err != nil {
			continue
		}
		a.h.mu.Lock()
		done := a.h.acked >= a.top
		a.h.mu.Unlock()
		if done {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			a.h.mu.Lock()
			a.err = a.h.waitAckedLocked(ctx, a.top)
			a.h.mu.Unlock()
		}()
	}
	wg.Wait()

	var retry []int
	for _, a := range all {
		if errors.Is(a.err, errSealed) || errors.Is(a.err, session.ErrStaleEpoch) {
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

// forwarded is the owner's answer to one forwarded publish, or the
// error of the call that carried it.
type forwarded struct {
	out publishOutcome
	err error
}

// sendPublish forwards items to their owner in one call (b.forwards).
func (b *Broker) sendPublish(ctx context.Context, owner string, items []publishItem) []forwarded {
	cctx, cancel := b.callCtx(ctx)
	p, err := b.call(cctx, owner, methodPublish, encodePublish(items))
	cancel()
	var out []publishOutcome
	if err == nil {
		out, err = decodePublishReply(p)
		if err == nil && len(out) != len(items) {
			err = fmt.Errorf("%w: %d answers for %d publishes", ErrBadPayload, len(out), len(items))
		}
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

func publishItemSize(it publishItem) int { return len(it.User) + len(it.ID) + len(it.Data) + 16 }

// replicated is a backup's answer to one stream's replication; skip
// means the backup does not know batched calls (an older node in a
// rolling upgrade): nothing was stored and the stream must flush on its own.
type replicated struct {
	err  error
	skip bool
}

// replicateBatch replicates reqs to backup, in one call with whatever
// else is being replicated to it at the moment (b.replicates).
func (b *Broker) replicateBatch(ctx context.Context, backup string, reqs []replicateRequest) []replicated {
	return b.replicates.do(ctx, backup, reqs)
}

// sendReplicate sends reqs to backup: one request alone as a plain
// replication, several in one batched call. There is one answer per
// request (the call's error for all when the call failed).
func (b *Broker) sendReplicate(ctx context.Context, backup string, reqs []replicateRequest) []replicated {
	res := make([]replicated, len(reqs))
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	if len(reqs) == 1 {
		_, res[0].err = b.call(cctx, backup, methodReplicate, encodeReplicate(reqs[0]))
		return res
	}
	p, err := b.call(cctx, backup, methodReplicateBatch, encodeReplicateBatch(reqs))
	if err == nil {
		var got []error
		if got, err = decodeReplicateResults(p, len(reqs)); err == nil {
			for i, e := range got {
				res[i].err = e
			}
			return res
		}
	}
	skip := strings.Contains(err.Error(), transport.ErrPeerUnknownMethod.Error())
	for i := range res {
		if skip {
			res[i].skip = true
		} else {
			res[i].err = err
		}
	}
	return res
}

func replicateRequestSize(r replicateRequest) int {
	n := len(r.User) + len(r.Session) + 32
	for _, m := range r.Msgs {
		n += len(m.ID) + len(m.Data) + 24
	}
	return n
}

func outcomeOf(err error) publishOutcome {
	var oe *ownedElsewhere
	switch {
	case errors.As(err, &oe), errors.Is(err, errSealed), errors.Is(err, session.ErrStaleEpoch):
		return publishOutcome{Code: itemNotOwner, Msg: err.Error()}
	case errors.Is(err, ErrUnavailable):
		return publishOutcome{Code: itemUnavailable, Msg: err.Error()}
	}
	return publishOutcome{Code: itemFailed, Msg: err.Error()}
}
