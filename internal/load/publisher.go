package load

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard/switchboard/protocol"
)

// pubMsg is one message to publish.
type pubMsg struct {
	k        uint64
	user     int
	intended int64 // UnixNano
}

// batchJob is one batch request, retried until acknowledged or expired.
type batchJob struct {
	msgs  []pubMsg
	nodes []int // candidate nodes, tried in turn
	first int   // index into nodes of the first try
}

// PublishStats counts publish requests and their outcomes.
type PublishStats struct {
	Requests int64 `json:"requests"`
	// Status503 counts requests answered 503 (no quorum or owner
	// unavailable); ItemErrors counts messages that failed inside a 200
	// batch answer; NetErrors counts requests that got no answer.
	Status503   int64 `json:"publish_503s"`
	ItemErrors  int64 `json:"item_errors"`
	NetErrors   int64 `json:"net_errors"`
	OtherStatus int64 `json:"other_status"`
	Retries     int64 `json:"retries"`
}

// publisher sends messages open-loop: a scheduler computes each message's
// intended send time from the rate and a worker pool posts batches, so a
// slow cluster delays deliveries (and shows in latency) but never the
// schedule.
type publisher struct {
	cfg *Config
	cl  *cluster
	tr  ledger
	// nodesFor returns the nodes to publish user u's messages to.
	nodesFor func(u int) []int
	idPrefix string
	// field and names are what messages go to: "user" and the users'
	// names, or "channel" and the channels'; message k goes to
	// names[k % len(names)].
	field string
	names []string

	jobs    chan *batchJob
	sent    atomic.Int64
	batches atomic.Int64

	requests, s503, itemErr, netErr, other, retries atomic.Int64
}

// ledger records what a publisher sends and what is acknowledged.
type ledger interface {
	// add registers message k as published to target (an index of the
	// publisher's names).
	add(k uint64, target int)
	// ack records message k's acknowledgement with its seq.
	ack(k, seq uint64, intended int64, now time.Time)
}

func newPublisher(cfg *Config, cl *cluster, tr ledger, nodesFor func(int) []int) *publisher {
	names := make([]string, cfg.Users)
	for i := range names {
		names[i] = cfg.userName(i)
	}
	return &publisher{
		cfg: cfg, cl: cl, tr: tr, nodesFor: nodesFor,
		idPrefix: cfg.UserPrefix + "-m",
		field:    "user",
		names:    names,
		jobs:     make(chan *batchJob, max(cfg.Inflight, 1)),
	}
}

// newChannelPublisher publishes to channels instead of users.
func newChannelPublisher(cfg *Config, cl *cluster, l ledger, channels []string, nodesFor func(int) []int) *publisher {
	p := newPublisher(cfg, cl, l, nodesFor)
	p.field, p.names = "channel", channels
	return p
}

func (p *publisher) stats() PublishStats {
	return PublishStats{
		Requests: p.requests.Load(), Status503: p.s503.Load(), ItemErrors: p.itemErr.Load(),
		NetErrors: p.netErr.Load(), OtherStatus: p.other.Load(), Retries: p.retries.Load(),
	}
}

// run publishes from start until until (or ctx), then waits for every
// batch to be acknowledged or to expire. It returns the publishing time.
func (p *publisher) run(ctx context.Context, until time.Time) time.Duration {
	var wg sync.WaitGroup
	for range max(p.cfg.Inflight, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range p.jobs {
				p.send(ctx, j)
			}
		}()
	}
	start := time.Now()
	if p.cfg.Rate > 0 {
		p.openLoop(ctx, start, until)
	} else {
		p.closedLoop(ctx, until)
	}
	elapsed := time.Since(start)
	close(p.jobs)
	wg.Wait()
	return elapsed
}

// due returns how many messages are due by elapsed time d at rate r.
func due(d time.Duration, r float64) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64(math.Floor(d.Seconds()*r)) + 1 // message 0 is due at once
}

// intendedAt returns the intended send time of message k.
func intendedAt(start time.Time, k uint64, r float64) time.Time {
	return start.Add(time.Duration(float64(k) / r * float64(time.Second)))
}

func (p *publisher) openLoop(ctx context.Context, start, until time.Time) {
	t := time.NewTicker(p.cfg.Tick)
	defer t.Stop()
	var k uint64
	pending := map[int][]pubMsg{}
	for {
		now := time.Now()
		if !now.Before(until) || ctx.Err() != nil {
			return
		}
		n := due(now.Sub(start), p.cfg.Rate)
		for ; k < n; k++ {
			u := int(k % uint64(len(p.names)))
			m := pubMsg{k: k, user: u, intended: intendedAt(start, k, p.cfg.Rate).UnixNano()}
			p.tr.add(k, u)
			first := p.nodesFor(u)[0]
			pending[first] = append(pending[first], m)
			if len(pending[first]) >= p.cfg.Batch {
				p.submit(ctx, pending[first])
				pending[first] = nil
			}
		}
		for nd, msgs := range pending {
			if len(msgs) > 0 {
				p.submit(ctx, msgs)
				pending[nd] = nil
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// closedLoop keeps every worker busy with full batches; the intended send
// time is when the message is made.
func (p *publisher) closedLoop(ctx context.Context, until time.Time) {
	pending := map[int][]pubMsg{}
	for k := uint64(0); time.Now().Before(until) && ctx.Err() == nil; k++ {
		u := int(k % uint64(len(p.names)))
		p.tr.add(k, u)
		first := p.nodesFor(u)[0]
		pending[first] = append(pending[first], pubMsg{k: k, user: u, intended: time.Now().UnixNano()})
		if len(pending[first]) >= p.cfg.Batch {
			p.submit(ctx, pending[first])
			pending[first] = nil
		}
	}
	for _, msgs := range pending {
		p.submit(ctx, msgs)
	}
}

// submit hands a batch to the workers; it blocks while all are busy,
// which delays sending but not the intended times.
func (p *publisher) submit(ctx context.Context, msgs []pubMsg) {
	if len(msgs) == 0 {
		return
	}
	p.sent.Add(int64(len(msgs)))
	// Batches rotate over the candidate nodes to spread the routing work.
	j := &batchJob{msgs: msgs, nodes: p.nodesFor(msgs[0].user), first: int(p.batches.Add(1))}
	select {
	case p.jobs <- j:
	case <-ctx.Done():
	}
}

// send posts a batch, rotating over its nodes and retrying the messages
// not yet acknowledged (same ids) until RetryFor has passed.
func (p *publisher) send(ctx context.Context, j *batchJob) {
	deadline := time.Now().Add(p.cfg.RetryFor)
	remaining := j.msgs
	var body []byte
	for try := 0; len(remaining) > 0; try++ {
		if try > 0 {
			p.retries.Add(1)
			backoff := min(50*time.Millisecond<<min(try-1, 5), time.Second)
			if time.Now().Add(backoff).After(deadline) {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
		node := p.cl.nodes[j.nodes[(j.first+try)%len(j.nodes)]]
		body = p.encode(body[:0], remaining)
		p.requests.Add(1)
		st, answer, err := p.cl.do(ctx, http.MethodPost, node.Base+"/v1/publish/batch", p.cl.apiKey, body)
		now := time.Now()
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			p.netErr.Add(1)
			continue
		case st == http.StatusServiceUnavailable:
			p.s503.Add(1)
			continue
		case st != http.StatusOK:
			p.other.Add(1)
			if st >= 500 {
				continue
			}
			p.cfg.Logger.Warn("publish refused; giving the batch up", "component", "sbload", "status", st, "answer", string(bytes.TrimSpace(answer)))
			return // a 4xx will not change on retry
		}
		var a protocol.PublishBatchResult
		if err := json.Unmarshal(answer, &a); err != nil || len(a.Results) != len(remaining) {
			p.other.Add(1)
			continue
		}
		next := remaining[:0:0]
		for i, r := range a.Results {
			m := remaining[i]
			if r.Error != "" || r.Seq == 0 {
				p.itemErr.Add(1)
				next = append(next, m)
				continue
			}
			p.tr.ack(m.k, r.Seq, m.intended, now)
		}
		remaining = next
	}
}

// encode writes a batch body; ids are stable per message so that retries
// are idempotent (G3).
func (p *publisher) encode(dst []byte, msgs []pubMsg) []byte {
	dst = append(dst, `{"messages":[`...)
	for i, m := range msgs {
		if i > 0 {
			dst = append(dst, ',')
		}
		// Names are safeName-checked: no escaping needed.
		dst = append(dst, `{"`...)
		dst = append(dst, p.field...)
		dst = append(dst, `":"`...)
		dst = append(dst, p.names[m.user]...)
		dst = append(dst, `","id":"`...)
		dst = append(dst, p.idPrefix...)
		dst = strconv.AppendUint(dst, m.k, 10)
		dst = append(dst, `","data":`...)
		dst = appendPayload(dst, payload{T: m.intended, U: m.user, K: m.k})
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}
