package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// forwardTimeout bounds one forward of a batch to the leader, from send to
// the leader's answer; past it the batch's outcome is unknown.
const forwardTimeout = 10 * time.Second

// retryBackoff is how long a batch waits for a leader change before trying
// again after a failure that left it uncommitted.
const retryBackoff = 20 * time.Millisecond

// Proposal states. Whoever moves a proposal out of stateQueued owns it: the
// proposer (stateClaimed) must resolve it, the waiting caller
// (stateCancelled) has already returned.
const (
	stateQueued int32 = iota
	stateClaimed
	stateCancelled
)

var (
	// errNotSubmitted marks failures where the commands never reached Raft,
	// so retrying them cannot apply them twice.
	errNotSubmitted = errors.New("not submitted to raft")
	// errRetry marks dispatch failures that left a batch uncommitted; the
	// proposer retries those itself.
	errRetry = errors.New("uncommitted, retrying")

	errClosedNotSubmitted = fmt.Errorf("%w: %w", ErrClosed, errNotSubmitted)
)

// proposal is one caller's commands: one for Propose, a follower's whole
// batch for HandleForward. A proposal always lands in a single log entry,
// so a forwarded batch commits or fails as a unit.
type proposal struct {
	cmds      [][]byte
	size      int
	forwarded bool // came from a follower: rejected, never re-forwarded, when not leader
	enqueued  time.Time
	state     atomic.Int32
	results   [][]byte
	err       error
	done      chan struct{}
}

func newProposal(cmds [][]byte, forwarded bool) *proposal {
	size := 0
	for _, c := range cmds {
		size += len(c)
	}
	return &proposal{cmds: cmds, size: size, forwarded: forwarded, enqueued: time.Now(), done: make(chan struct{})}
}

// resolve is called exactly once, by the owner of a claimed proposal.
func (p *proposal) resolve(results [][]byte, err error) {
	p.results, p.err = results, err
	close(p.done)
}

// batch is what becomes one log entry, or one forward to the leader.
type batch struct {
	props []*proposal
	n     int // commands
	size  int // command bytes
}

func (b *batch) add(p *proposal) {
	b.props = append(b.props, p)
	b.n += len(p.cmds)
	b.size += p.size
}

// proposerBackend is what the proposer needs from Raft; tests fake it.
type proposerBackend interface {
	// leader returns the leader's address and whether this node leads.
	leader() (addr string, self bool)
	// leaderChanged returns a channel closed at the next leadership change.
	leaderChanged() <-chan struct{}
	// apply appends one entry on this (leader) node and returns the FSM's
	// response. Errors wrap errRetry when the entry was not appended.
	apply(data []byte) ([]byte, error)
	// forward sends a payload to the leader's HandleForward.
	forward(ctx context.Context, addr string, payload []byte) ([]byte, error)
	// noLeader reports that no leader is currently known.
	noLeader() bool
}

// proposer packs concurrent proposals into batches (group commit): one
// goroutine forms batches while up to maxInFlight workers each carry one
// batch to Raft (on the leader) or to the leader (on a follower). While all
// workers are busy the next batch keeps growing, so batches grow with load
// and an idle system still answers a lone proposal at once.
type proposer struct {
	be       proposerBackend
	log      *slog.Logger
	metrics  *metrics
	maxCmds  int
	maxBytes int

	queue    chan *proposal
	batches  chan *batch
	freed    chan int // a worker finished a batch of this many commands
	inFlight int      // workers, the most batches in flight

	ctx    context.Context // cancelled by close: aborts forwards in progress
	cancel context.CancelFunc
	stop   chan struct{} // closed by close
	done   chan struct{} // closed by wait, once every goroutine has exited
	wg     sync.WaitGroup
}

func newProposer(be proposerBackend, m *metrics, log *slog.Logger, maxCmds, maxBytes, inFlight int) *proposer {
	ctx, cancel := context.WithCancel(context.Background())
	pr := &proposer{
		be:       be,
		log:      log,
		metrics:  m,
		maxCmds:  maxCmds,
		maxBytes: maxBytes,
		// Bounded: when full, Propose blocks under its context, which is
		// the back-pressure callers feel when Raft cannot keep up.
		queue:    make(chan *proposal, maxCmds),
		batches:  make(chan *batch),
		freed:    make(chan int, inFlight),
		inFlight: inFlight,
		ctx:      ctx,
		cancel:   cancel,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	pr.wg.Add(1 + inFlight)
	go pr.run()
	for range inFlight {
		go pr.work()
	}
	return pr
}

// close stops taking proposals and aborts forwards; it does not wait.
func (pr *proposer) close() {
	select {
	case <-pr.stop:
		return
	default:
	}
	close(pr.stop)
	pr.cancel()
}

// wait blocks until every proposer goroutine has exited. Call it after
// close and after Raft has shut down, so that pending apply futures resolve.
func (pr *proposer) wait() {
	pr.wg.Wait()
	select {
	case <-pr.done:
	default:
		close(pr.done)
	}
}

func (pr *proposer) stopped() bool {
	select {
	case <-pr.stop:
		return true
	default:
		return false
	}
}

// submit queues p and waits for its outcome or for ctx.
func (pr *proposer) submit(ctx context.Context, p *proposal) ([][]byte, error) {
	if pr.stopped() {
		return nil, errClosedNotSubmitted
	}
	select {
	case pr.queue <- p:
	case <-ctx.Done():
		return nil, pr.notSubmitted(ctx)
	case <-pr.stop:
		return nil, errClosedNotSubmitted
	}
	select {
	case <-p.done:
		return p.results, p.err
	case <-ctx.Done():
		if p.state.CompareAndSwap(stateQueued, stateCancelled) {
			return nil, pr.notSubmitted(ctx)
		}
		select {
		case <-p.done:
			return p.results, p.err
		default:
		}
		return nil, fmt.Errorf("%w: %w", ErrNotCommitted, context.Cause(ctx))
	case <-pr.done:
		// Every goroutine has exited and resolved what it claimed; a
		// proposal still unresolved was queued after the final drain.
		select {
		case <-p.done:
			return p.results, p.err
		default:
		}
		return nil, errClosedNotSubmitted
	}
}

func (pr *proposer) notSubmitted(ctx context.Context) error {
	if pr.be.noLeader() {
		return fmt.Errorf("%w: %w: %w", ErrNoLeader, errNotSubmitted, context.Cause(ctx))
	}
	return fmt.Errorf("consensus: %w: %w", errNotSubmitted, context.Cause(ctx))
}

// fits reports whether p may join b. A proposal over the limits on its own
// still gets a batch of its own.
func (pr *proposer) fits(b *batch, p *proposal) bool {
	return b.n == 0 || (b.n+len(p.cmds) <= pr.maxCmds && b.size+p.size <= pr.maxBytes)
}

func (pr *proposer) full(b *batch) bool {
	return b.n >= pr.maxCmds || b.size >= pr.maxBytes
}

// run forms batches: it takes what is queued, then keeps adding to the
// batch until it may be dispatched.
//
// A batch goes out at once when nothing is in flight. While batches are in
// flight, another one joins them only once it holds at least as many
// commands as all of them together (or is full). Raft writes and replicates entries one
// after another, so on a LAN many small pipelined entries cost more than a
// few large ones, while at low load, or with long round trips (WAN), a
// command still does not wait for the batch ahead of it.
func (pr *proposer) run() {
	defer pr.wg.Done()
	var (
		carry    *proposal // the proposal that did not fit the previous batch
		inFlight int       // batches handed to workers and not yet finished
		inCmds   int       // commands in those batches
	)
	for {
		b := &batch{}
		for b.n == 0 {
			if carry != nil {
				b.add(carry)
				carry = nil
				break
			}
			select {
			case p := <-pr.queue:
				b.add(p)
			case n := <-pr.freed:
				inFlight--
				inCmds -= n
			case <-pr.stop:
				pr.drain()
				return
			}
		}
		for {
			// Take everything already queued before offering the batch.
			for carry == nil && !pr.full(b) {
				select {
				case p := <-pr.queue:
					if pr.fits(b, p) {
						b.add(p)
					} else {
						carry = p
					}
					continue
				default:
				}
				break
			}
			// Nil channels never deliver: a full batch stops collecting,
			// and a batch not yet allowed out is not offered to workers.
			var queue chan *proposal
			if carry == nil && !pr.full(b) {
				queue = pr.queue
			}
			var batches chan *batch
			if inFlight == 0 || (inFlight < pr.inFlight && (b.n >= inCmds || carry != nil || pr.full(b))) {
				batches = pr.batches
			}
			select {
			case batches <- b:
				inFlight++
				inCmds += b.n
			case n := <-pr.freed:
				inFlight--
				inCmds -= n
				continue
			case p := <-queue:
				if pr.fits(b, p) {
					b.add(p)
				} else {
					carry = p
				}
				continue
			case <-pr.stop:
				pr.failUnclaimed(b.props, errClosedNotSubmitted)
				if carry != nil {
					pr.failUnclaimed([]*proposal{carry}, errClosedNotSubmitted)
				}
				pr.drain()
				return
			}
			break
		}
	}
}

// drain fails every queued proposal; called once the proposer has stopped.
func (pr *proposer) drain() {
	for {
		select {
		case p := <-pr.queue:
			pr.failUnclaimed([]*proposal{p}, errClosedNotSubmitted)
		default:
			return
		}
	}
}

func (pr *proposer) failUnclaimed(props []*proposal, err error) {
	for _, p := range claim(props) {
		p.resolve(nil, err)
	}
}

func (pr *proposer) work() {
	defer pr.wg.Done()
	for {
		select {
		case b := <-pr.batches:
			pr.dispatch(b)
			pr.freed <- b.n // never blocks: one slot per worker
		case <-pr.stop:
			return
		}
	}
}

// claim takes ownership of the proposals whose callers still wait.
func claim(props []*proposal) []*proposal {
	live := props[:0:0]
	for _, p := range props {
		if p.state.CompareAndSwap(stateQueued, stateClaimed) {
			live = append(live, p)
		}
	}
	return live
}

// unclaim hands proposals back, so callers may cancel them while the batch
// waits to be retried.
func unclaim(props []*proposal) {
	for _, p := range props {
		p.state.Store(stateQueued)
	}
}

// waiting returns the proposals whose callers still wait, without taking
// them; claim settles any cancelled in between.
func waiting(props []*proposal) []*proposal {
	live := props[:0:0]
	for _, p := range props {
		if p.state.Load() == stateQueued {
			live = append(live, p)
		}
	}
	return live
}

// dispatch carries one batch to its outcome, retrying while failures leave
// it uncommitted.
//
// It claims the proposals only once it has a leader to hand them to. A
// caller whose context ends finds its proposal claimed and must report the
// outcome unknown, so while no leader is known the callers keep them: one
// giving up then gets ErrNoLeader, which it may safely retry.
func (pr *proposer) dispatch(b *batch) {
	start := b.props[0].enqueued
	pending := b.props
	for {
		pending = waiting(pending)
		if len(pending) == 0 {
			return
		}
		if pr.stopped() {
			pr.failUnclaimed(pending, errClosedNotSubmitted)
			return
		}
		addr, self := pr.be.leader()
		if !self {
			pending = rejectForwarded(pending)
		}
		switch {
		case len(pending) == 0:
			return
		case !self && addr == "":
			pr.backoff()
			continue
		}
		pending = claim(pending)
		n, size := 0, 0
		for _, p := range pending {
			n += len(p.cmds)
			size += p.size
		}
		var results [][]byte
		var err error
		switch {
		case n == 0:
			return
		case self:
			results, err = pr.applyLocal(pending, n, size)
		default:
			results, err = pr.forward(addr, pending, n, size)
		}
		if errors.Is(err, errRetry) {
			unclaim(pending)
			pr.backoff()
			continue
		}
		pr.metrics.batchDone(!self, n, start, err)
		if err != nil {
			for _, p := range pending {
				p.resolve(nil, err)
			}
			return
		}
		for _, p := range pending {
			p.resolve(results[:len(p.cmds):len(p.cmds)], nil)
			results = results[len(p.cmds):]
		}
		return
	}
}

// rejectForwarded fails proposals forwarded by followers: this node no
// longer leads, and forwarding them again would build forwarding chains.
// The follower retries them with the real leader.
func rejectForwarded(props []*proposal) []*proposal {
	local := props[:0:0]
	for _, p := range props {
		switch {
		case !p.forwarded:
			local = append(local, p)
		case p.state.CompareAndSwap(stateQueued, stateClaimed):
			p.resolve(nil, fmt.Errorf("%w: %w", ErrNotLeader, errNotSubmitted))
		}
	}
	return local
}

func (pr *proposer) backoff() {
	t := time.NewTimer(retryBackoff)
	defer t.Stop()
	select {
	case <-pr.be.leaderChanged():
	case <-t.C:
	case <-pr.stop:
	}
}

// Propose submits one command through the batching proposer and returns
// the state machine's result for it.
//
// On the leader, concurrent commands are packed into one log entry (group
// commit) with up to MaxInFlightBatches entries in flight. On a follower the
// batch is forwarded through Config.Forward to the leader, whose proposer
// merges it into its own batches. Errors:
//   - ErrNoLeader (wrapped, with the context's error) when no leader became
//     known before ctx ended; the command was not submitted.
//   - ErrNotCommitted when the command was handed to Raft or to the leader
//     but leadership was lost, the forward failed, or ctx ended before the
//     answer: the outcome is then unknown, the command may or may not have
//     been applied. Callers make commands conditional (compare-and-set), so
//     retrying is safe.
//   - ErrClosed when the node closes; together with ErrNotCommitted if the
//     command was already in flight.
//
// Failures known to leave the command uncommitted (a leader change before
// the entry was appended) are retried internally until ctx ends.
func (r *Raft) Propose(ctx context.Context, cmd []byte) ([]byte, error) {
	results, err := r.prop.submit(ctx, newProposal([][]byte{cmd}, false))
	if err != nil {
		return nil, err
	}
	return results[0], nil
}

func encodeProposals(prefix []byte, props []*proposal, n, size int) []byte {
	e := newFrameEncoder(prefix, n, size)
	for _, p := range props {
		for _, c := range p.cmds {
			e.add(c)
		}
	}
	return e.buf
}

func (pr *proposer) applyLocal(props []*proposal, n, size int) ([][]byte, error) {
	resp, err := pr.be.apply(encodeProposals(nil, props, n, size))
	if err != nil {
		return nil, err
	}
	return splitResults(resp, n)
}

func (pr *proposer) forward(addr string, props []*proposal, n, size int) ([][]byte, error) {
	payload := encodeProposals([]byte{kindBatch}, props, n, size)
	ctx, cancel := context.WithTimeout(pr.ctx, forwardTimeout)
	defer cancel()
	resp, err := pr.be.forward(ctx, addr, payload)
	switch {
	case err == nil:
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrNotSent) && !pr.stopped():
		return nil, fmt.Errorf("%w: %w", errRetry, err)
	case pr.stopped():
		return nil, fmt.Errorf("%w: %w: %w", ErrClosed, ErrNotCommitted, err)
	default:
		return nil, fmt.Errorf("%w: forward to leader %s: %w", ErrNotCommitted, addr, err)
	}
	results, err := splitResults(resp, n)
	if err != nil {
		// The leader may well have applied the batch.
		return nil, fmt.Errorf("%w: %w", ErrNotCommitted, err)
	}
	return results, nil
}

func splitResults(resp []byte, n int) ([][]byte, error) {
	results, err := decodeFrames(resp)
	if err != nil {
		return nil, fmt.Errorf("consensus: results: %w", err)
	}
	if len(results) != n {
		return nil, fmt.Errorf("%w: %d results for %d commands", ErrMalformed, len(results), n)
	}
	return results, nil
}
