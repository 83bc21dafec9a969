// Package membership keeps the pool of Switchboard nodes: who is in the
// cluster, where to reach them and whether they take work. It wraps
// hashicorp/memberlist (SWIM gossip); each node gossips a small Meta.
package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

const (
	// defaultBroadcastTimeout bounds a metadata broadcast when the caller's
	// context has no deadline, and a Leave called with a non-positive timeout
	// (memberlist would otherwise wait forever).
	defaultBroadcastTimeout = 5 * time.Second
	// leavePropagateRounds is how many gossip intervals Leave keeps gossiping
	// after memberlist reports the leave broadcast sent.
	leavePropagateRounds = 5
	joinBackoffMin       = 100 * time.Millisecond
	joinBackoffMax       = 5 * time.Second
)

// Pool is this node's view of the cluster membership. It is safe for
// concurrent use. It starts no goroutines of its own; memberlist's are
// stopped by Close.
type Pool struct {
	cfg     Config
	logger  *slog.Logger
	ml      *memberlist.Memberlist
	changes chan struct{}
	now     func() time.Time

	gossipInterval time.Duration // memberlist's, for Leave's propagation delay

	// keyring encrypts gossip; nil when it is plaintext. keyMu serializes
	// its changes and their persistence (keyring.go).
	keyring *memberlist.Keyring
	keyMu   sync.Mutex

	mu      sync.Mutex // guards the fields below; never held while calling memberlist
	table   *table
	listed  []Member // table.list() until the table changes; nil: not made yet
	meta    Meta     // local metadata
	leaving bool     // local node has started a graceful leave
	encoded []byte   // encodeMeta(meta, leaving), served to memberlist

	// lifeMu serializes SetDraining, Leave and Close: memberlist panics on
	// Leave after Shutdown, and a broadcast racing Shutdown would wait out its
	// whole timeout.
	lifeMu sync.Mutex
	closed atomic.Bool
	left   atomic.Bool
}

// New validates cfg, binds the gossip listeners and starts memberlist. The
// pool initially contains only the local node; call Join to meet peers.
func New(cfg Config) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "membership", "node", cfg.NodeID)
	p := &Pool{
		cfg:     cfg,
		logger:  logger,
		changes: make(chan struct{}, 1),
		now:     time.Now,
		table:   newTable(cfg.NodeID),
		meta:    cfg.meta(),
	}
	var err error
	if p.encoded, err = encodeMeta(p.meta, false); err != nil {
		return nil, err
	}
	mc, err := cfg.memberlistConfig(&delegate{p: p}, logger)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	keys, fromFile, err := cfg.initialKeys()
	if err != nil {
		return nil, err
	}
	if len(keys) > 0 {
		if p.keyring, err = memberlist.NewKeyring(keys, keys[0]); err != nil {
			return nil, fmt.Errorf("%w: Keys: %w", ErrInvalidConfig, err)
		}
		mc.Keyring = p.keyring
		// Refuse what is not encrypted with a key of the ring, and send
		// nothing in the clear.
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	p.gossipInterval = mc.GossipInterval
	var gated *gatedTransport
	if cfg.Gate != nil {
		if gated, err = newGatedTransport(mc, cfg.Gate); err != nil {
			return nil, fmt.Errorf("membership: start gossip on %s: %w", cfg.BindAddr, err)
		}
		mc.Transport = gated
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		if gated != nil {
			_ = gated.Shutdown()
		}
		return nil, fmt.Errorf("membership: start gossip on %s: %w", cfg.BindAddr, err)
	}
	p.ml = ml
	profile := cfg.Profile
	if profile == "" {
		profile = ProfileLAN
	}
	p.logger.Info("gossip started", "gossip_addr", p.Local().GossipAddr, "profile", profile)
	switch {
	case fromFile:
		p.logger.Info("gossip encrypted with the saved keyring", "file", cfg.KeyringFile,
			"keys", len(keys), "primary", Fingerprint(keys[0]))
	case len(keys) > 0:
		p.logger.Info("gossip encrypted", "keys", len(keys), "primary", Fingerprint(keys[0]))
	default:
		p.logger.Warn("gossip is not encrypted: gossip ports must be on a private network")
	}
	return p, nil
}

// Join contacts the given gossip addresses (host:port) and merges state with
// them. It retries with capped exponential backoff until at least one address
// answered or ctx is done. Empty addrs, or only the local address, means
// there is no one to join: it returns nil. A single attempt on an unreachable
// address can outlast ctx by up to memberlist's TCPTimeout.
func (p *Pool) Join(ctx context.Context, addrs []string) error {
	self := p.Local().GossipAddr
	seeds := make([]string, 0, len(addrs))
	for _, a := range addrs {
		if a != "" && a != self {
			seeds = append(seeds, a)
		}
	}
	if len(seeds) == 0 {
		return nil
	}
	backoff := joinBackoffMin
	for attempt := 1; ; attempt++ {
		if err := p.usable(); err != nil {
			return err
		}
		n, err := p.joinOnce(ctx, seeds)
		if n > 0 {
			p.logger.Info("joined cluster", "contacted", n, "seeds", len(seeds), "attempt", attempt)
			if err != nil {
				p.logger.Debug("some seeds unreachable", "err", err)
			}
			return nil
		}
		p.logger.Debug("join attempt failed", "attempt", attempt, "err", err)
		// Jitter spreads retries of nodes that started together.
		wait := backoff/2 + rand.N(backoff/2+1)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: no seed of %v answered in %d attempts: %w", ErrJoin, seeds, attempt, errors.Join(err, ctx.Err()))
		case <-t.C:
		}
		backoff = min(2*backoff, joinBackoffMax)
	}
}

// joinOnce tries each seed once, checking ctx between them.
func (p *Pool) joinOnce(ctx context.Context, seeds []string) (int, error) {
	contacted := 0
	var errs []error
	for _, s := range seeds {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		n, err := p.ml.Join([]string{s})
		contacted += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return contacted, errors.Join(errs...)
}

// Members returns every known member sorted by ID, including the local node
// and members that are dead or left (kept for 24 hours, at most 1024 of them).
func (p *Pool) Members() []Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.listed == nil {
		// Kept until the table changes: the broker asks on every flush
		// of a single-server cluster, and sorting each time showed.
		p.listed = p.table.list()
	}
	return slices.Clone(p.listed)
}

// Member returns the member with the given ID.
func (p *Pool) Member(id string) (Member, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.table.get(id)
}

// Local returns the local node as the pool sees it.
func (p *Pool) Local() Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.table.get(p.cfg.NodeID)
	if !ok {
		// Only before memberlist announced the local node inside New.
		m = Member{Meta: p.meta, State: StateAlive}
	}
	return m
}

// Changes returns a level-triggered hint that the membership may have
// changed: a channel of capacity 1 that receives (without blocking memberlist)
// after every join, leave, failure or metadata update. Consumers re-read
// Members. The channel is never closed; watch your own context too.
func (p *Pool) Changes() <-chan struct{} {
	return p.changes
}

// SetDraining sets the local Meta.Draining and gossips it; peers then report
// this node as StateDraining. The change applies locally at once; an error
// from the broadcast (ErrBroadcastTimeout, or ctx's) means peers may learn it
// later through periodic state sync. Without a ctx deadline the broadcast
// wait is bounded by 5 s.
func (p *Pool) SetDraining(ctx context.Context, draining bool) error {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	if err := p.usable(); err != nil {
		return err
	}
	// Settle the timeout before touching the meta: once changed locally it
	// must reach memberlist (UpdateNode), which only reads NodeMeta then.
	timeout := defaultBroadcastTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if timeout <= 0 {
		return context.DeadlineExceeded
	}
	p.mu.Lock()
	changed := p.meta.Draining != draining
	if changed {
		m := p.meta
		m.Draining = draining
		enc, err := encodeMeta(m, p.leaving)
		if err != nil {
			p.mu.Unlock()
			return err
		}
		p.meta, p.encoded = m, enc
	}
	p.mu.Unlock()
	if !changed {
		return nil
	}
	p.logger.Info("draining changed", "draining", draining)
	if err := p.ml.UpdateNode(timeout); err != nil {
		return fmt.Errorf("%w: draining=%t: %w", ErrBroadcastTimeout, draining, err)
	}
	return nil
}

// Leave announces a graceful departure and waits up to timeout (5 s if not
// positive) for it to be broadcast; peers then report this node as
// StateLeft rather than StateDead. The pool keeps gossiping until Close but
// cannot rejoin: Join and SetDraining return ErrLeft. Calling Leave again
// returns nil.
func (p *Pool) Leave(timeout time.Duration) error {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	if p.closed.Load() {
		return ErrClosed
	}
	if p.left.Load() {
		return nil
	}
	if timeout <= 0 {
		timeout = defaultBroadcastTimeout
	}
	deadline := time.Now().Add(timeout)

	// Gossip the leaving flag first: memberlist's own left/dead distinction
	// is not visible to event delegates (hashicorp/memberlist#293).
	p.mu.Lock()
	enc, err := encodeMeta(p.meta, true)
	if err == nil {
		p.leaving, p.encoded = true, enc
	}
	p.mu.Unlock()
	if err != nil {
		return err
	}
	var errs []error
	if err := p.ml.UpdateNode(max(timeout/2, time.Millisecond)); err != nil {
		errs = append(errs, fmt.Errorf("%w: leaving flag: %w", ErrBroadcastTimeout, err))
	}
	// memberlist treats 0 as "wait forever"; keep a small positive bound.
	remaining := max(time.Until(deadline), 10*time.Millisecond)
	if err := p.ml.Leave(remaining); err != nil {
		errs = append(errs, fmt.Errorf("%w: leave: %w", ErrBroadcastTimeout, err))
	} else {
		// memberlist reports the leave broadcast done once it is dequeued
		// for its last transmission, before the packet is written; a Close
		// right away can drop it. Keep gossiping and answering probes a few
		// gossip rounds longer (serf's LeavePropagateDelay does the same).
		time.Sleep(min(time.Until(deadline), leavePropagateRounds*p.gossipInterval))
	}
	p.left.Store(true)
	p.logger.Info("left cluster")
	return errors.Join(errs...)
}

// Close stops gossip without a leave broadcast; peers will detect this node
// as dead unless Leave was called first. It waits for an in-flight
// SetDraining or Leave. It is idempotent.
func (p *Pool) Close() error {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	if p.closed.Swap(true) {
		return nil
	}
	if err := p.ml.Shutdown(); err != nil {
		return fmt.Errorf("membership: shutdown: %w", err)
	}
	p.logger.Info("gossip stopped")
	return nil
}

// usable reports ErrClosed or ErrLeft.
func (p *Pool) usable() error {
	if p.closed.Load() {
		return ErrClosed
	}
	if p.left.Load() {
		return ErrLeft
	}
	return nil
}

// observeAlive applies a join or update callback from memberlist.
func (p *Pool) observeAlive(n *memberlist.Node) {
	meta, leaving, err := decodeMeta(n.Meta)
	if err != nil {
		p.logger.Warn("cannot decode member metadata", "member", n.Name, "err", err)
		meta, leaving = Meta{}, false
	}
	p.observe(n.Name, func(t *table, now time.Time) bool {
		return t.alive(n.Name, n.Address(), meta, leaving, now)
	})
}

// observeGone applies a leave callback (failed or left) from memberlist.
func (p *Pool) observeGone(n *memberlist.Node) {
	p.observe(n.Name, func(t *table, now time.Time) bool {
		return t.gone(n.Name, n.Address(), now)
	})
}

// observe runs one table update, logs state changes and signals Changes.
func (p *Pool) observe(id string, apply func(*table, time.Time) bool) {
	p.mu.Lock()
	before, existed := p.table.get(id)
	changed := apply(p.table, p.now())
	if changed {
		p.listed = nil
	}
	after, _ := p.table.get(id)
	p.mu.Unlock()
	if !changed {
		return
	}
	if !existed || before.State != after.State {
		from := State("none")
		if existed {
			from = before.State
		}
		p.logger.Info("member state changed", "member", id, "from", from, "to", after.State,
			"region", after.Region, "zone", after.Zone, "gossip_addr", after.GossipAddr)
	}
	select {
	case p.changes <- struct{}{}:
	default: // a hint is already pending; consumers re-read everything
	}
}
