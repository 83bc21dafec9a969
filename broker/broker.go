// Package broker runs streams at run time: it holds the streams this node
// owns, appends publishes to them (or forwards publishes to their owners),
// replicates them to their backups, serves client hellos by attaching to a
// local stream, attaching to the owner's stream over the peer link, or
// taking the stream over, and reacts to registry changes by fencing what
// it no longer owns.
//
// What an owner decides about one stream is session.Owned, a pure state
// machine; the broker performs its effects — peer calls, deliveries,
// registry proposals — outside the stream's lock. It sees the registry
// and the cluster through the small interfaces below, which node/
// implements over consensus and membership, and other nodes through the
// method table of peerapi.
package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/switchboard/switchboard/internal/tracing"
	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/peer"
)

// Registry is the replicated session registry as the broker sees it.
type Registry interface {
	// Get reads the local replica: fast, possibly a little behind; every
	// decision taken on it is fenced by epochs.
	Get(name string) (session.Entry, bool)
	// Propose commits a command through Raft and returns its result. The
	// implementation stamps Command.Now.
	Propose(ctx context.Context, c session.Command) (session.Result, error)
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

// Config configures a Broker. Start from DefaultConfig.
type Config struct {
	NodeID, Region, Zone string
	Stream               session.StreamConfig
	// Heartbeat is the client heartbeat interval: welcome.heartbeat_ms,
	// and how often attached nodes are sent tips. The node sets it from
	// the gateway's.
	Heartbeat      time.Duration
	CallTimeout    time.Duration // peer calls made on behalf of a request
	MaxRoutes      int           // routing attempts when ownership moves under a request
	ExpiryInterval time.Duration // how often held streams are checked for expiry and repair
	Logger         *slog.Logger
	// OnDeliver, when set, counts frames handed to local connections.
	OnDeliver func(n int)
	// Observer, when set, times takeovers and replication (observer.go).
	Observer Observer
	// Tracer records the broker's spans (DESIGN.md §5a); nil: none.
	Tracer *tracing.Tracer
	// Now is the clock; tests may replace it.
	Now func() time.Time
}

// DefaultConfig returns production defaults; NodeID and Heartbeat must
// still be set.
func DefaultConfig() Config {
	return Config{
		Stream:         session.DefaultStreamConfig(),
		CallTimeout:    3 * time.Second,
		MaxRoutes:      6,
		ExpiryInterval: 5 * time.Second,
		Now:            time.Now,
	}
}

// ErrConfig reports an unusable Config; the message names the field.
var ErrConfig = errors.New("broker: invalid config")

// Validate reports the first bad field.
func (c Config) Validate() error {
	bad := func(field, why string) error { return fmt.Errorf("%w: %s %s", ErrConfig, field, why) }
	switch {
	case c.NodeID == "":
		return bad("NodeID", "is required")
	case c.Heartbeat <= 0:
		return bad("Heartbeat", "must be positive")
	case c.CallTimeout <= 0:
		return bad("CallTimeout", "must be positive")
	case c.MaxRoutes <= 0:
		return bad("MaxRoutes", "must be positive")
	case c.ExpiryInterval <= 0:
		return bad("ExpiryInterval", "must be positive")
	case c.Now == nil:
		return bad("Now", "is nil")
	}
	return c.Stream.Validate()
}

// Errors the broker returns, beyond those of protocol it wraps; the edges
// map them to HTTP statuses and close codes.
var (
	// ErrRerouted means ownership moved while a request was in flight and
	// routing did not settle within MaxRoutes attempts: retry.
	ErrRerouted = fmt.Errorf("%w: ownership moved; retry", protocol.ErrUnavailable)
	// ErrClosed means the broker is shutting down.
	ErrClosed = fmt.Errorf("%w: broker closed", protocol.ErrShuttingDown)
)

// Broker is one node's stream runtime. Create with New, stop with Close.
type Broker struct {
	cfg     Config
	reg     Registry
	peers   *marking // peer calls, keeping the link-failure marks true
	cluster Cluster
	log     *slog.Logger

	mu   sync.Mutex
	held map[session.Key]*held // streams this node owns
	// heldChannels counts the channel streams in held, so that Stats can
	// split users from channels without walking the map.
	heldChannels int
	// retired keeps streams sealed here (another node claimed them) for
	// the resume window: if that claimant fails to fetch one, a later
	// claimant can still recover it from here. Nothing is served from them.
	retired map[session.Key]*held
	// claiming marks streams whose takeover is in flight here: asked for
	// one, this node says "retry", not "not held".
	claiming map[session.Key]bool
	remote   map[session.Key]*attached // streams served here from another owner
	tipsFrom map[string]bool           // owners that send tips (attached.go)
	outboxes map[string]*outbox        // one-way frames per node, in order
	reps     replicas                  // streams backed up here
	down     map[string]time.Time      // nodes whose links failed recently, until when
	checking map[string]bool           // owners LinkDown is checking (peer.go)
	closed   bool
	// draining: streams are being handed away; none is taken over here.
	draining atomic.Bool
	// repairing: the periodic repair of streams without a backup runs.
	repairing atomic.Bool
	// attachSeq numbers this node's attachments to other owners' streams
	// (attached.nonce); it starts at the clock so that it grows across
	// restarts too.
	attachSeq atomic.Uint64

	flight singleflight.Group // one takeover per stream at a time

	// Concurrent forwards to one owner, and concurrent replications to
	// one backup, share a peer call (combine.go).
	forwards   *combiner[peerapi.PublishItem, forwarded]
	replicates *combiner[session.Replication, replicated]

	// subs are the channel subscriptions of this node's connections, by
	// connection id and channel (subscription.go); subSeq numbers their
	// registrations.
	subsMu sync.Mutex
	subs   map[uint64]map[string]*subscription
	subSeq atomic.Uint64
	pres   presence // presence.go
	// chanMsgs and chanSends count channel fan-out (Stats).
	chanMsgs, chanSends atomic.Int64

	states  *stateRecorder // attach/detach records (state.go)
	applied chan session.Entry
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// New returns a running Broker that reaches other nodes through peers, or
// the first problem with cfg.
func New(cfg Config, reg Registry, peers peer.Caller, cluster Cluster) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Stream.Frame == nil {
		cfg.Stream.Frame = func(m session.Message) []byte {
			return protocol.AppendMessage(nil, m.Seq, m.ID, m.TS, m.Data)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{
		cfg: cfg, reg: reg, cluster: cluster,
		log:      cfg.Logger.With("component", "broker"),
		held:     make(map[session.Key]*held),
		retired:  make(map[session.Key]*held),
		claiming: make(map[session.Key]bool),
		remote:   make(map[session.Key]*attached),
		tipsFrom: make(map[string]bool),
		outboxes: make(map[string]*outbox),
		reps:     replicas{m: make(map[session.Key]*replica), fences: make(map[session.Key]fence)},
		down:     make(map[string]time.Time),
		checking: make(map[string]bool),
		subs:     make(map[uint64]map[string]*subscription),
		pres:     newPresence(cfg.Now()),
		applied:  make(chan session.Entry, 4096),
		ctx:      ctx, cancel: cancel,
	}
	b.peers = &marking{b: b, next: peers}
	b.attachSeq.Store(uint64(time.Now().UnixNano()))
	b.states = newStateRecorder(b)
	b.forwards = newCombiner(b.sendPublish, publishItemSize, func(err error) forwarded { return forwarded{err: err} })
	b.replicates = newCombiner(b.sendReplicate, replicationSize, func(err error) replicated { return replicated{err: err} })
	b.wg.Add(5)
	go b.watchRegistry()
	go b.reportPresence()
	go b.every(b.presenceSweepEvery(), b.expirePresence)
	// Expiry trims streams, retires idle ones and repairs those left
	// without a backup; tips tell attached nodes how far their streams are
	// acknowledged (attached.go).
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
// covering takeovers that could not reach this node (a partition). A claim
// under a new session means the stream this node holds was given up for
// lost: its connections are told continuity was lost (4011), not sent to
// resume.
func (b *Broker) watchRegistry() {
	defer b.wg.Done()
	for {
		select {
		case <-b.ctx.Done():
			return
		case e := <-b.applied:
			key, err := session.ParseKey(e.User)
			if err != nil {
				continue
			}
			if h := b.local(key); h != nil && e.Owner != b.cfg.NodeID {
				if h.seal(e.Epoch, e.Session != h.session(), "ownership moved") {
					b.drop(h)
				}
			}
			b.ownerChanged(key, e)
		}
	}
}

// Stats is what /v1/cluster and /metrics report about the broker.
type Stats struct {
	Streams  int // streams held here, users' and channels'
	Channels int // of Streams, the channels' streams
	Attached int // streams served here from another owner
	Replicas int // streams backed up here
	// ChannelMessages counts the messages the channels held here
	// acknowledged; ChannelPeerDeliveries the times one went to another
	// node (once per message and node with subscribers).
	ChannelMessages, ChannelPeerDeliveries int64
}

// Stats returns current counts.
func (b *Broker) Stats() Stats {
	b.mu.Lock()
	st := Stats{Streams: len(b.held), Channels: b.heldChannels, Attached: len(b.remote),
		ChannelMessages: b.chanMsgs.Load(), ChannelPeerDeliveries: b.chanSends.Load()}
	b.mu.Unlock()
	b.reps.mu.Lock()
	st.Replicas = len(b.reps.m)
	b.reps.mu.Unlock()
	return st
}

func (b *Broker) now() int64 { return b.cfg.Now().UnixMilli() }

// streamConfig is the configuration of key's stream: a channel's messages
// are framed with the channel's name.
func (b *Broker) streamConfig(key session.Key) session.StreamConfig {
	cfg := b.cfg.Stream
	if key.Kind == session.ChannelStream {
		cfg.Frame = func(m session.Message) []byte {
			return protocol.AppendChannelMessage(nil, key.Name, m.Seq, m.ID, m.TS, m.Data)
		}
	}
	return cfg
}

// frames returns msgs, each with its client frame for key's stream: made
// once per message, and shared by every connection it goes to.
func (b *Broker) frames(key session.Key, msgs []session.Message) []session.Message {
	var frame func(session.Message) []byte
	for i := range msgs {
		if msgs[i].Frame != nil {
			continue
		}
		if frame == nil {
			frame = b.streamConfig(key).Frame
			msgs = slices.Clone(msgs)
		}
		msgs[i].Frame = frame(msgs[i])
	}
	return msgs
}

// local returns the live (unsealed) stream held here, if any; a sealed one
// is retired on the way.
func (b *Broker) local(key session.Key) *held {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.held[key]
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
	if b.held[h.key] == h {
		delete(b.held, h.key)
		if h.key.Kind == session.ChannelStream {
			b.heldChannels--
		}
	}
	h.retiredAt.Store(b.now())
	b.retired[h.key] = h
}

// holder returns the stream held here, live or retired.
func (b *Broker) holder(key session.Key) *held {
	if h := b.local(key); h != nil {
		return h
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.retired[key]
}

// isClaiming says whether a takeover of key is in flight here.
func (b *Broker) isClaiming(key session.Key) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.claiming[key]
}

// errBusy answers a request about a stream whose takeover is in flight
// here: ask again shortly.
var errBusy = fmt.Errorf("%w: takeover in progress here", protocol.ErrUnavailable)

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

// Seq returns the highest acknowledged seq of a stream held here.
func (b *Broker) Seq(key session.Key) (uint64, bool) {
	h := b.local(key)
	if h == nil {
		return 0, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.o.Acked(), true
}

// heldStreams returns the streams this node owns now, for work that must
// not hold b.mu while it takes each stream's lock.
func (b *Broker) heldStreams() []*held {
	b.mu.Lock()
	defer b.mu.Unlock()
	helds := make([]*held, 0, len(b.held))
	for _, h := range b.held {
		helds = append(helds, h)
	}
	return helds
}

// goSafe runs fn in a goroutine the broker waits for on Close; after Close
// it does nothing and reports false.
func (b *Broker) goSafe(fn func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		fn()
	}()
	return true
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
