// Package consensus adapts a replicated state machine to hashicorp/raft:
// raft-boltdb stores, file snapshots, a NetworkTransport over the node's
// cluster port, a batching proposer (group commit, forwarding from
// followers), voter placement and status. It is generic over bytes; the
// session registry implements StateMachine.
package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// Contract errors; they travel wrapped with %w.
var (
	// ErrNoLeader: no leader was known before the context ended.
	ErrNoLeader = errors.New("consensus: no leader")
	// ErrNotLeader: the operation needs the leader and this node is not it.
	ErrNotLeader = errors.New("consensus: not the leader")
	// ErrClosed: the node is closed or closing.
	ErrClosed = errors.New("consensus: closed")
	// ErrNotCommitted: the command was submitted but its outcome is
	// unknown (leadership lost mid-apply, forward failed, or the caller gave
	// up waiting); it may or may not have been applied.
	ErrNotCommitted = errors.New("consensus: outcome unknown, command may not be committed")
	// ErrNotSent is for Config.Forward implementations: wrap it when the
	// payload certainly never left this node (no link to the leader), so
	// the proposer retries instead of reporting an unknown outcome.
	ErrNotSent = errors.New("consensus: forward not sent")
	// ErrAlreadyBootstrapped: Bootstrap found Raft state on this node.
	ErrAlreadyBootstrapped = errors.New("consensus: raft state exists, not bootstrapped")
)

const (
	// logCacheSize is how many recent entries stay in memory, which keeps
	// replication to followers that are slightly behind off the disk.
	logCacheSize = 512
	// snapshotsRetained is the number of snapshots kept on disk.
	snapshotsRetained = 2
	// transportMaxPool is the number of idle connections pooled per peer.
	transportMaxPool = 3
	// minTransportTimeout is the floor for Raft RPC I/O deadlines.
	minTransportTimeout = 2 * time.Second
	// enqueueTimeout bounds handing an entry to Raft's leader loop; past it
	// the entry was not appended and the proposer retries.
	enqueueTimeout = time.Second
	// shutdownApplyWait is how long a future in flight may still resolve
	// once Close has begun.
	shutdownApplyWait = 2 * time.Second
	// openTimeout bounds waiting for raft.db's file lock, so a second
	// process on the same DataDir fails instead of hanging.
	openTimeout = 5 * time.Second
	// readyPoll is how often the readiness monitor retries learning the
	// catch-up target.
	readyPoll = 100 * time.Millisecond
)

// Raft is one node's consensus: Raft itself, its stores and transport, the
// batching proposer and placement state.
type Raft struct {
	cfg     Config
	log     *slog.Logger
	raft    *raft.Raft
	fsm     *fsm
	store   *raftboltdb.BoltStore
	trans   *raft.NetworkTransport
	stream  *streamLayer
	prop    *proposer
	metrics *metrics

	obsCh    chan raft.Observation
	observer *raft.Observer

	leaderMu      sync.Mutex
	leaderChange  chan struct{} // closed and replaced at every leadership change
	callbacks     []func(isLeader bool)
	readyTarget   uint64 // catch-up target for Ready; guarded by leaderMu
	readyTargetOK bool

	placement placementState

	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup // watch and readiness goroutines
	closeOnce sync.Once
	closeErr  error
}

// New opens (or creates) the node's Raft state in cfg.DataDir, starts Raft
// and, if cfg.Bootstrap is set and there is no existing state, bootstraps a
// single-voter cluster. The node then waits for a leader to add it.
func New(cfg Config, sm StateMachine) (*Raft, error) {
	if sm == nil {
		return nil, fmt.Errorf("%w: state machine is nil", ErrInvalidConfig)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger.With("component", "consensus", "node", cfg.NodeID)
	hl := newHCLog(log, "component", "node")

	m, err := newMetrics()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("consensus: data dir: %w", err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(cfg.DataDir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: openTimeout},
		NoSync:      cfg.NoSync,
	})
	if err != nil {
		return nil, fmt.Errorf("consensus: open raft.db: %w", err)
	}
	cleanup := []func(){func() { _ = store.Close() }}
	fail := func(err error) (*Raft, error) {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
		return nil, err
	}
	logs, err := raft.NewLogCache(logCacheSize, store)
	if err != nil {
		return fail(fmt.Errorf("consensus: log cache: %w", err))
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, snapshotsRetained, hl.Named("snapshot"))
	if err != nil {
		return fail(fmt.Errorf("consensus: snapshot store: %w", err))
	}
	hasState, err := raft.HasExistingState(logs, store, snaps)
	if err != nil {
		return fail(fmt.Errorf("consensus: inspect existing state: %w", err))
	}

	stream := newStreamLayer(cfg.Listener, cfg.Dial, cfg.AdvertiseAddr)
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: transportMaxPool,
		Timeout: max(minTransportTimeout, 2*cfg.ElectionTimeout),
		Logger:  hl.Named("net"),
	})
	cleanup = append(cleanup, func() {
		trans.CloseStreams()
		_ = trans.Close()
		_ = stream.Close()
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.Logger = hl
	// A server removed while partitioned keeps running as a follower, so
	// that placement can add it back once gossip sees it alive again.
	rc.ShutdownOnRemove = false

	f := newFSM(sm, log)
	ra, err := raft.NewRaft(rc, f, logs, store, snaps, trans)
	if err != nil {
		return fail(fmt.Errorf("consensus: start raft: %w", err))
	}

	ctx, cancel := context.WithCancel(context.Background())
	r := &Raft{
		cfg:          cfg,
		log:          log,
		raft:         ra,
		fsm:          f,
		store:        store,
		trans:        trans,
		stream:       stream,
		metrics:      m,
		obsCh:        make(chan raft.Observation, 16),
		leaderChange: make(chan struct{}),
		placement:    placementState{deadSince: make(map[string]time.Time)},
		ctx:          ctx,
		cancel:       cancel,
	}

	switch {
	case cfg.Bootstrap && !hasState:
		err := ra.BootstrapCluster(r.selfConfiguration()).Error()
		if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			cancel()
			_ = ra.Shutdown().Error()
			return fail(fmt.Errorf("consensus: bootstrap: %w", err))
		}
		log.Info("bootstrapped single-voter cluster")
	case cfg.Bootstrap:
		log.Info("existing raft state found, bootstrap ignored")
	}

	// Observations only wake waiters; a dropped one is made up for by the
	// proposer's retry timer, so the observer must never block Raft.
	r.observer = raft.NewObserver(r.obsCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	ra.RegisterObserver(r.observer)
	r.prop = newProposer(r, m, log, cfg.BatchMaxCommands, cfg.BatchMaxBytes, cfg.MaxInFlightBatches)
	r.wg.Add(2)
	go r.watch()
	go r.monitorReady()
	return r, nil
}

// selfConfiguration is the configuration of a single-voter cluster of
// this node.
func (r *Raft) selfConfiguration() raft.Configuration {
	return raft.Configuration{Servers: []raft.Server{{
		Suffrage: raft.Voter,
		ID:       raft.ServerID(r.cfg.NodeID),
		Address:  raft.ServerAddress(r.cfg.AdvertiseAddr),
	}}}
}

// Bootstrap bootstraps a single-voter cluster of this running node, as
// Config.Bootstrap does at start, for a node that decided later (node's
// --bootstrap-expect). Raft checks for existing state inside its own loop,
// so a node that a leader reached first is never bootstrapped: that case
// returns ErrAlreadyBootstrapped.
func (r *Raft) Bootstrap() error {
	err := r.raft.BootstrapCluster(r.selfConfiguration()).Error()
	if errors.Is(err, raft.ErrCantBootstrap) {
		return ErrAlreadyBootstrapped
	}
	if err != nil {
		return fmt.Errorf("consensus: bootstrap: %w", err)
	}
	r.log.Info("bootstrapped single-voter cluster")
	return nil
}

// HasState reports whether this node holds Raft state: a log entry or a
// snapshot, because it bootstrapped or a leader replicated to it.
func (r *Raft) HasState() bool { return r.raft.LastIndex() > 0 }

// Close shuts Raft down and closes the transport and stores. Proposals
// still waiting fail with ErrClosed. It is idempotent and returns the first
// call's result.
func (r *Raft) Close() error {
	r.closeOnce.Do(func() {
		r.prop.close()
		r.cancel()
		var errs []error
		if err := r.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("consensus: raft shutdown: %w", err))
		}
		r.raft.DeregisterObserver(r.observer)
		// After Shutdown every apply future has resolved, so the proposer's
		// workers can finish their batches.
		r.prop.wait()
		r.wg.Wait()
		r.trans.CloseStreams()
		if err := r.trans.Close(); err != nil {
			errs = append(errs, fmt.Errorf("consensus: close transport: %w", err))
		}
		// NetworkTransport leaves inbound connections open; the stream
		// layer closes them so their reader goroutines exit.
		if err := r.stream.Close(); err != nil {
			errs = append(errs, fmt.Errorf("consensus: close stream layer: %w", err))
		}
		if err := r.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("consensus: close raft.db: %w", err))
		}
		r.closeErr = errors.Join(errs...)
		r.log.Info("consensus closed")
	})
	return r.closeErr
}

// watch turns Raft's leadership notifications into OnLeaderChange callbacks
// and wake-ups for proposals waiting for a leader.
func (r *Raft) watch() {
	defer r.wg.Done()
	leaderCh := r.raft.LeaderCh()
	for {
		select {
		case isLeader := <-leaderCh:
			r.signalLeaderChange()
			r.leaderMu.Lock()
			cbs := r.callbacks
			r.leaderMu.Unlock()
			for _, cb := range cbs {
				cb(isLeader)
			}
		case <-r.obsCh:
			r.signalLeaderChange()
		case <-r.ctx.Done():
			return
		}
	}
}

func (r *Raft) signalLeaderChange() {
	r.leaderMu.Lock()
	close(r.leaderChange)
	r.leaderChange = make(chan struct{})
	r.leaderMu.Unlock()
}

// OnLeaderChange registers fn to be called with true when this node gains
// leadership and false when it loses it. Calls come from one goroutine, in
// order; fn must not block.
func (r *Raft) OnLeaderChange(fn func(isLeader bool)) {
	r.leaderMu.Lock()
	defer r.leaderMu.Unlock()
	r.callbacks = append(r.callbacks[:len(r.callbacks):len(r.callbacks)], fn)
}

// TransferLeadership hands leadership to another voter and waits for it.
func (r *Raft) TransferLeadership() error {
	if !r.IsLeader() {
		return ErrNotLeader
	}
	if err := r.await(context.Background(), r.raft.LeadershipTransfer()); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return fmt.Errorf("%w: %w", ErrNotLeader, err)
		}
		if errors.Is(err, raft.ErrRaftShutdown) {
			return fmt.Errorf("%w: %w", ErrClosed, err)
		}
		return fmt.Errorf("consensus: transfer leadership: %w", err)
	}
	return nil
}

// Read runs fn while holding the state machine's read lock (Apply holds the
// write lock), for consistent reads of the local replica.
func (r *Raft) Read(fn func()) {
	r.fsm.read(fn)
}

// proposerBackend implementation.

func (r *Raft) leader() (string, bool) {
	addr, _ := r.raft.LeaderWithID()
	return string(addr), r.raft.State() == raft.Leader
}

func (r *Raft) noLeader() bool {
	addr, _ := r.raft.LeaderWithID()
	return addr == ""
}

func (r *Raft) leaderChanged() <-chan struct{} {
	r.leaderMu.Lock()
	defer r.leaderMu.Unlock()
	return r.leaderChange
}

func (r *Raft) apply(data []byte) ([]byte, error) {
	f := r.raft.Apply(data, enqueueTimeout)
	err := r.await(context.Background(), f)
	if errors.Is(err, errAbandoned) {
		return nil, fmt.Errorf("%w: %w", err, ErrNotCommitted)
	}
	if err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout):
			// Refused before it was appended: nothing to duplicate.
			return nil, fmt.Errorf("%w: %w", errRetry, err)
		case errors.Is(err, raft.ErrRaftShutdown):
			return nil, fmt.Errorf("%w: %w: %w", ErrClosed, ErrNotCommitted, err)
		default:
			return nil, fmt.Errorf("%w: %w", ErrNotCommitted, err)
		}
	}
	switch resp := f.Response().(type) {
	case []byte:
		return resp, nil
	case error:
		return nil, resp
	default:
		return nil, fmt.Errorf("%w: unexpected FSM response %T", ErrMalformed, resp)
	}
}

// errAbandoned is await's answer when it stopped waiting for a future
// because this node shut down: the outcome is unknown.
var errAbandoned = fmt.Errorf("%w: stopped waiting for raft", ErrClosed)

// await waits for a Raft future, but no longer than ctx allows and no
// longer than this node lives (plus a short grace for futures resolving as
// Raft shuts down). A future that races Shutdown may never resolve
// (hashicorp/raft#498), so no caller waits on one directly: the helper
// goroutine then ends when Raft resolves the future, or never in that rare
// race, which the tests' leak check knows about.
func (r *Raft) await(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-r.ctx.Done():
		select {
		case err := <-done:
			return err
		case <-time.After(shutdownApplyWait):
			return errAbandoned
		}
	}
}

func (r *Raft) forward(ctx context.Context, addr string, payload []byte) ([]byte, error) {
	return r.cfg.Forward(ctx, addr, payload)
}
