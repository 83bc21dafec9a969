// Package broker routes messages: it holds the streams this node owns,
// appends publishes to them (or forwards publishes to the owner), serves
// client hellos by attaching to a local stream, attaching to the owner's
// stream over the peer link, or taking the stream over, and reacts to
// registry changes by fencing what it no longer owns.
//
// It is the glue between the pure session logic and the adapters: it sees
// the registry, peers and cluster only through the small interfaces below,
// which node/ implements over consensus, transport and membership.
package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport"
)

// Registry is the replicated session registry as the broker sees it.
type Registry interface {
	// Get reads the local replica: fast, possibly a little behind; every
	// decision taken on it is fenced by epochs.
	Get(user string) (session.Entry, bool)
	// Propose commits a command through Raft and returns its result. The
	// implementation stamps Command.Now.
	Propose(ctx context.Context, c session.Command) (session.Result, error)
}

// Peers carries broker calls to other nodes, addressed by node id.
type Peers interface {
	Call(ctx context.Context, node string, method uint8, payload []byte) ([]byte, error)
	Send(ctx context.Context, node string, method uint8, payload []byte) error
}

// Cluster is the broker's view of the other nodes.
type Cluster interface {
	// Alive reports whether node is worth calling (alive, suspect or draining).
	Alive(node string) bool
	// Endpoints lists the other live nodes' client endpoints, same region
	// first (the order DESIGN §3 promises clients), then by node id.
	Endpoints() []Endpoint
	// Peers lists the other live nodes that may hold replicas (not draining).
	Peers() []Peer
	// Solo reports whether this node is the only server of the cluster:
	// only then may a stream be acknowledged with a single copy.
	Solo() bool
}

// Config configures a Broker.
type Config struct {
	NodeID, Region, Zone string
	Stream               session.StreamConfig
	Heartbeat            time.Duration // advertised in welcome.heartbeat_ms
	CallTimeout          time.Duration // peer calls made on behalf of a request
	MaxRoutes            int           // re-routing attempts when ownership moves under a request
	ExpiryInterval       time.Duration // how often held streams are checked for expiry
	Logger               *slog.Logger
	// OnDeliver, when set, counts frames handed to local connections.
	OnDeliver func(n int)
	// Now is the clock; tests may replace it.
	Now func() time.Time
}

// DefaultConfig returns production defaults.
func DefaultConfig() Config {
	return Config{
		Stream:         session.DefaultStreamConfig(),
		Heartbeat:      5 * time.Second,
		CallTimeout:    3 * time.Second,
		MaxRoutes:      6,
		ExpiryInterval: 5 * time.Second,
		Now:            time.Now,
	}
}

// Validate reports the first bad field.
func (c Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("broker: NodeID is required")
	case c.Heartbeat <= 0:
		return errors.New("broker: Heartbeat must be > 0")
	case c.CallTimeout <= 0:
		return errors.New("broker: CallTimeout must be > 0")
	case c.MaxRoutes <= 0:
		return errors.New("broker: MaxRoutes must be > 0")
	case c.ExpiryInterval <= 0:
		return errors.New("broker: ExpiryInterval must be > 0")
	}
	return c.Stream.Validate()
}

// Errors the broker returns; the edges map them to HTTP status and close codes.
var (
	// ErrUnavailable means the registry (no quorum) or the owner could not
	// be reached in time: retry, possibly on another node.
	ErrUnavailable = errors.New("unavailable")
	// ErrRerouted means ownership moved while a request was in flight and
	// re-routing did not settle within MaxRoutes attempts.
	ErrRerouted = errors.New("ownership moved; retry")
	// ErrClosed means the broker is shutting down.
	ErrClosed = errors.New("broker closed")
)

// Broker is one node's message router. Create with New, stop with Close.
type Broker struct {
	cfg     Config
	reg     Registry
	peers   Peers
	cluster Cluster
	log     *slog.Logger

	mu   sync.Mutex
	held map[string]*held // streams this node owns
	// retired keeps streams sealed here (another node claimed them) for
	// the resume window: if that claimant fails to fetch one, a later
	// claimant can still recover it from here. Nothing is served from them.
	retired map[string]*held
	// claiming marks users whose takeover is in flight here: asked for
	// such a stream, this node says "retry", not "not held".
	claiming map[string]bool
	remote   map[string]*attached // users served here from another owner's stream
	tipsFrom map[string]bool      // owners that send tips (attached.go)
	tipBusy  map[string]bool      // nodes a tip send is still in flight to
	reps     replicas             // streams backed up here
	down     map[string]time.Time // nodes whose links failed recently, until when
	closed   bool
	// draining: streams are being handed away; none is taken over here.
	draining atomic.Bool

	flight singleflight.Group // one takeover per user at a time

	// Concurrent forwards to one owner, and concurrent replications to
	// one backup, share a peer call (combine.go).
	forwards   *combiner[publishItem, forwarded]
	replicates *combiner[replicateRequest, replicated]

	stateMu   sync.Mutex
	stateWant map[string]session.Kind // attach/detach to record, per user
	stateBusy map[string]bool         // users with a sender running
	applied   chan session.Entry
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// New returns a running Broker.
func New(cfg Config, reg Registry, peers Peers, cluster Cluster) (*Broker, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Stream.Frame == nil {
		cfg.Stream.Frame = func(m session.Message) []byte {
			return transport.AppendMessageFrame(nil, m.Seq, m.ID, m.TS, m.Data)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{
		cfg: cfg, reg: reg, peers: peers, cluster: cluster,
		log:       cfg.Logger.With("component", "broker"),
		held:      make(map[string]*held),
		retired:   make(map[string]*held),
		claiming:  make(map[string]bool),
		remote:    make(map[string]*attached),
		tipsFrom:  make(map[string]bool),
		tipBusy:   make(map[string]bool),
		reps:      replicas{m: make(map[string]*replica), fences: make(map[string]fence)},
		down:      make(map[string]time.Time),
		stateWant: make(map[string]session.Kind),
		stateBusy: make(map[string]bool),
		applied:   make(chan session.Entry, 4096),
		ctx:       ctx, cancel: cancel,
	}
	b.forwards = newCombiner(b.sendPublish, publishItemSize, func(err error) forwarded { return forwarded{err: err} })
	b.replicates = newCombiner(b.sendReplicate, replicateRequestSize, func(err error) replicated { return replicated{err: err} })
	b.wg.Add(3)
	go b.watchRegistry()
	// Expiry trims streams and retires idle users; tips tell attached
	// nodes how far their streams are acknowledged (attached.go).
	go b.every(b.cfg.ExpiryInterval, b.expire)
	go b.every(b.cfg.Heartbeat, func() {
		b.sendTips()
		b.checkSilentOwners()
	})
	return b, nil
}

// Close stops the broker's goroutines. Connections are closed by the
// gateway; streams die with the process (replicas survive elsewhere).
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
	return nil
}

// Applied is the registry's apply hook (session.Machine.OnApply): it
// hands ownership changes to the broker without blocking Raft's apply
// loop for long. It only queues; watchRegistry acts.
func (b *Broker) Applied(c session.Command, r session.Result) {
	if r.Err != nil || c.Kind != session.KindClaim {
		return
	}
	select {
	case b.applied <- r.Entry:
	case <-b.ctx.Done():
	}
}

// watchRegistry fences local streams whose ownership moved elsewhere,
// covering takeovers that could not reach this node (a partition).
func (b *Broker) watchRegistry() {
	defer b.wg.Done()
	for {
		select {
		case <-b.ctx.Done():
			return
		case e := <-b.applied:
			b.mu.Lock()
			h := b.held[e.User]
			b.mu.Unlock()
			if h != nil && e.Owner != b.cfg.NodeID && h.seal(e.Epoch, "ownership moved") {
				b.drop(h)
			}
			b.ownerChanged(e.User, e.Owner)
		}
	}
}

// Stats is what /v1/cluster and /metrics report about the broker.
type Stats struct {
	Streams  int // streams held here
	Attached int // users served here from another owner
	Replicas int // streams backed up here
}

// Stats returns current counts.
func (b *Broker) Stats() Stats {
	b.mu.Lock()
	st := Stats{Streams: len(b.held), Attached: len(b.remote)}
	b.mu.Unlock()
	b.reps.mu.Lock()
	st.Replicas = len(b.reps.m)
	b.reps.mu.Unlock()
	return st
}

func (b *Broker) now() int64 { return b.cfg.Now().UnixMilli() }

// downFor is how long a node whose link failed is avoided. Gossip takes
// seconds to declare a node dead; a refused or reset link says so at once.
const downFor = 3 * time.Second

// linkFailed records that a call to node failed at the link level (not a
// timeout or a remote error) and reports whether that was the case.
func (b *Broker) linkFailed(node string, err error) bool {
	if !errors.Is(err, transport.ErrPeerUnavailable) {
		return false
	}
	b.mu.Lock()
	b.down[node] = b.cfg.Now().Add(downFor)
	b.mu.Unlock()
	return true
}

// call is Peers.Call that keeps the link-failure marks true: a failed
// link marks the node down, a successful call clears the mark.
func (b *Broker) call(ctx context.Context, node string, method uint8, payload []byte) ([]byte, error) {
	p, err := b.peers.Call(ctx, node, method, payload)
	if err == nil {
		b.mu.Lock()
		delete(b.down, node)
		b.mu.Unlock()
	} else {
		b.linkFailed(node, err)
	}
	return p, err
}

// NodeUp clears the link-failure mark of a node gossip sees alive again.
func (b *Broker) NodeUp(node string) {
	b.mu.Lock()
	delete(b.down, node)
	b.mu.Unlock()
}

// isDown says whether node's links failed within downFor.
func (b *Broker) isDown(node string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	until, ok := b.down[node]
	if ok && b.cfg.Now().After(until) {
		delete(b.down, node)
		return false
	}
	return ok
}

// local returns the live (unsealed) stream held here for user, if any;
// a sealed one is forgotten on the way.
func (b *Broker) local(user string) *held {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.held[user]
	if h != nil && h.gone.Load() {
		b.retireLocked(h)
		return nil
	}
	return h
}

// drop retires a held stream once it is sealed.
func (b *Broker) drop(h *held) {
	b.mu.Lock()
	b.retireLocked(h)
	b.mu.Unlock()
}

func (b *Broker) retireLocked(h *held) {
	if b.held[h.user] == h {
		delete(b.held, h.user)
	}
	h.retiredAt.Store(b.cfg.Now().UnixMilli())
	b.retired[h.user] = h
}

// holder returns the stream held here for user, live or retired.
func (b *Broker) holder(user string) *held {
	if h := b.local(user); h != nil {
		return h
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.retired[user]
}

// forget drops a retired stream whose content went to a new owner.
func (b *Broker) forget(h *held) {
	b.mu.Lock()
	if b.retired[h.user] == h {
		delete(b.retired, h.user)
	}
	if b.held[h.user] == h {
		delete(b.held, h.user)
	}
	b.mu.Unlock()
}

// isClaiming says whether a takeover of user is in flight here.
func (b *Broker) isClaiming(user string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.claiming[user]
}

// errBusy answers a request about a stream whose takeover is in flight
// here: ask again shortly.
var errBusy = fmt.Errorf("%w: takeover in progress here", ErrUnavailable)

func (b *Broker) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.cfg.CallTimeout)
}

func newSessionID() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // the platform is broken
	}
	return hex.EncodeToString(b[:])
}

// Seq returns the highest seq of a stream held here.
func (b *Broker) Seq(user string) (uint64, bool) {
	h := b.local(user)
	if h == nil {
		return 0, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.acked, true
}

// heldStreams returns the streams this node owns now, for work that must
// not hold b.mu while it takes each stream's lock.
func (b *Broker) heldStreams() []*held {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.heldStreamsLocked()
}

func (b *Broker) heldStreamsLocked() []*held {
	helds := make([]*held, 0, len(b.held))
	for _, h := range b.held {
		helds = append(helds, h)
	}
	return helds
}

// every runs fn each interval d until the broker closes; the caller has
// counted it in b.wg.
func (b *Broker) every(d time.Duration, fn func()) {
	defer b.wg.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
