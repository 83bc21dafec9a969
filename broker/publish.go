package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/switchboard/switchboard/session"
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
			cctx, cancel := b.callCtx(ctx)
			p, err := b.call(cctx, owner, methodPublish, encodePublish(items))
			cancel()
			var out []publishOutcome
			if err == nil {
				out, err = decodePublishReply(p)
				if err == nil && len(out) != len(idx) {
					err = fmt.Errorf("%w: %d answers for %d publishes", ErrBadPayload, len(out), len(idx))
				}
			}
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
				switch o := out[k]; o.Code {
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

// appendParallel bounds how many users' appends run at once.
const appendParallel = 64

// appendLocal appends each held stream's messages in one go (one
// replication round for all of them) and runs different users in
// parallel. It fills res and returns the requests to re-route because
// their stream was sealed meanwhile.
func (b *Broker) appendLocal(ctx context.Context, reqs []PublishRequest, res []PublishResult, groups map[*held][]int) []int {
	var (
		mu    sync.Mutex
		retry []int
		wg    sync.WaitGroup
		sem   = make(chan struct{}, appendParallel)
	)
	for h, idx := range groups {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			msgs, err := h.appendMany(ctx, reqs, idx)
			mu.Lock()
			defer mu.Unlock()
			if errors.Is(err, errSealed) || errors.Is(err, session.ErrStaleEpoch) {
				retry = append(retry, idx...)
				return
			}
			for k, i := range idx {
				if err != nil {
					res[i].Err = err
					continue
				}
				res[i] = PublishResult{Seq: msgs[k].Seq, Node: b.cfg.NodeID}
			}
		}()
	}
	wg.Wait()
	return retry
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
