package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard/switchboard/auth"
	"github.com/switchboard/switchboard/broker"
	"github.com/switchboard/switchboard/consensus"
	"github.com/switchboard/switchboard/internal/certs"
	"github.com/switchboard/switchboard/internal/tracing"
	"github.com/switchboard/switchboard/membership"
	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/clusterport"
	"github.com/switchboard/switchboard/transport/gateway"
	"github.com/switchboard/switchboard/transport/netfault"
	"github.com/switchboard/switchboard/transport/peer"
)

// Node is one running Switchboard node.
type Node struct {
	cfg Config
	log *slog.Logger

	publicLn  net.Listener
	adminLn   net.Listener
	mux       *clusterport.Mux
	peers     *peer.Links
	machine   *session.Machine
	raft      *consensus.Raft
	pool      *membership.Pool
	broker    *broker.Broker
	gateway   *gateway.Gateway
	tokens    *auth.Verifier
	apiKeys   keySource
	adminKeys keySource
	http      *http.Server
	admin     *http.Server
	metrics   *metrics
	gate      *netfault.Gate  // injected network faults; nil without fault injection
	drills    drills          // the drill runner (POST /v1/drills)
	tracer    *tracing.Tracer // nil: tracing off

	// applyTo is the broker as the Raft apply loop sees it: set once the
	// broker exists, after Raft may already be replaying its log.
	applyTo atomic.Pointer[broker.Broker]

	publicURL  string
	scheme     string      // of the public and admin URLs: http, or https with TLS
	clusterTLS *tls.Config // the dialers' side of cluster TLS; nil without it
	proofs     *proofs
	proofDone  chan struct{} // a peer proved itself: the control loop looks again
	joined     atomic.Bool
	rates      rates // recent samples of the metrics' counters, for /v1/stats (stats.go)
	draining   atomic.Bool
	inflight   atomic.Int64 // messages of publish requests being served: API.MaxInflight bounds it

	// publicCerts and clusterCerts are the certificates in use, nil
	// without TLS (their expiry is a metric).
	publicCerts, clusterCerts *certs.Source

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
	done     chan struct{}
}

// New starts a node: it listens, starts Raft, joins the gossip pool in the
// background, and serves clients. Stop it with Shutdown (graceful) or
// Kill (abrupt, for failure tests).
func New(cfg Config) (n *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n = &Node{
		cfg: cfg, log: cfg.Logger.With("component", "node", "node", cfg.NodeID),
		scheme: "http", proofs: newProofs(), proofDone: make(chan struct{}, 1),
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
		gate: newGate(cfg),
	}
	// Whatever started is stopped again if a later step fails. The
	// closure keeps its own reference: a failing `return nil, err` has
	// already set n to nil when it runs.
	started := n
	defer func() {
		if err != nil {
			started.stop(context.Background(), false)
		}
	}()

	// Token keys are read (and a JWKS fetch starts) before anything
	// listens: a bad key file stops the node before it takes a port.
	tc := cfg.Tokens
	tc.Logger = cfg.Logger
	if n.tokens, err = auth.New(tc); err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	if n.apiKeys, err = newKeySource(cfg.APIKey, cfg.APIKeyFile, "API key file", n.log); err != nil {
		return nil, fmt.Errorf("api key file: %w", err)
	}
	if n.adminKeys, err = newKeySource(cfg.AdminKey, cfg.AdminKeyFile, "admin key file", n.log); err != nil {
		return nil, fmt.Errorf("admin key file: %w", err)
	}
	publicTLS, clusterTLS, err := n.loadTLS()
	if err != nil {
		return nil, err
	}
	if n.publicLn, err = net.Listen("tcp", cfg.PublicAddr); err != nil {
		return nil, fmt.Errorf("public listener: %w", err)
	}
	if cfg.AdminAddr != "" {
		if n.adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			return nil, fmt.Errorf("admin listener: %w", err)
		}
	}
	if publicTLS != nil {
		n.scheme = "https"
		// The gateway's poller watches WebSockets upgraded from TLS
		// connections of this listener, as it does plain ones.
		n.publicLn = tls.NewListener(gateway.PollableListener(n.publicLn), publicTLS)
		if n.adminLn != nil {
			n.adminLn = tls.NewListener(n.adminLn, publicTLS)
		}
	}
	var muxTLS *tls.Config
	if clusterTLS != nil {
		muxTLS, n.clusterTLS = clusterTLS.MutualServerConfig(), clusterTLS.MutualClientConfig()
	}
	if n.mux, err = clusterport.Listen(cfg.ClusterAddr, muxTLS); err != nil {
		return nil, fmt.Errorf("cluster listener: %w", err)
	}
	publicAddr := advertised(n.publicLn.Addr().String(), cfg.AdvertisePublic)
	clusterAddr := advertised(n.mux.Addr().String(), cfg.AdvertiseCluster)
	n.publicURL = n.scheme + "://" + publicAddr

	if n.metrics, err = newMetrics(cfg.GlobalMetrics); err != nil {
		return nil, err
	}
	tr := cfg.Tracing
	tr.NodeID = cfg.NodeID
	if n.tracer, err = tracing.New(tr); err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}

	pc := cfg.Peer
	pc.NodeID, pc.Logger, pc.Errors = cfg.NodeID, cfg.Logger, peerapi.Errors
	pc.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
		return clusterport.DialWith(ctx, n.dialer(), n.clusterTLS, addr, clusterport.Peer, 2*time.Second)
	}
	pc.Resolve = n.clusterAddr
	pc.OnDown = func(node string) {
		if b := n.applyTo.Load(); b != nil {
			b.LinkDown(node)
		}
	}
	if n.gate != nil {
		pc.Delay = n.gate.Delay
	}
	if n.peers, err = peer.New(pc); err != nil {
		return nil, fmt.Errorf("peer links: %w", err)
	}

	n.machine = session.NewMachine()
	n.machine.OnApply = n.applied
	rc := cfg.Raft
	rc.NodeID, rc.DataDir, rc.Bootstrap = cfg.NodeID, filepath.Join(cfg.DataDir, "raft"), cfg.Bootstrap
	rc.AdvertiseAddr = clusterAddr
	rc.Listener = n.gate.Listener(n.mux.Listener(clusterport.Raft))
	rc.Dial = func(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
		return clusterport.DialWith(ctx, n.dialer(), n.clusterTLS, addr, clusterport.Raft, timeout)
	}
	rc.Forward = func(ctx context.Context, leaderAddr string, payload []byte) ([]byte, error) {
		out, err := peerapi.Forward.Call(ctx, n.peers.ByAddress(), leaderAddr, payload)
		if errors.Is(err, peer.ErrNotSent) {
			err = fmt.Errorf("%w: %w", consensus.ErrNotSent, err)
		}
		return out, err
	}
	rc.Logger = cfg.Logger
	if cfg.Profile == membership.ProfileWAN {
		rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 2*time.Second, 2*time.Second, time.Second
	}
	if n.raft, err = consensus.New(rc, n.machine); err != nil {
		return nil, fmt.Errorf("raft: %w", err)
	}

	mc := cfg.Gossip
	mc.NodeID, mc.Region, mc.Zone = cfg.NodeID, cfg.Region, cfg.Zone
	mc.BindAddr, mc.AdvertiseAddr = cfg.GossipAddr, cfg.AdvertiseGossip
	mc.PublicURL, mc.ClusterAddr = n.publicURL, clusterAddr
	mc.Profile = cfg.Profile
	mc.Clustered = n.raft.HasState()
	mc.KeyringFile = filepath.Join(cfg.DataDir, gossipKeyringFile) // cfg.Gossip.Keys only seed it
	mc.Logger = cfg.Logger
	mc.Gate = n.gate
	if n.pool, err = membership.New(mc); err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}

	bc := cfg.Broker
	bc.NodeID, bc.Region, bc.Zone = cfg.NodeID, cfg.Region, cfg.Zone
	bc.Heartbeat = cfg.Gateway.Heartbeat // the welcome's heartbeat_ms, and the tips' pace
	bc.Logger = cfg.Logger
	bc.OnDeliver = n.metrics.delivered
	bc.Observer = n.metrics
	bc.Tracer = n.tracer
	if n.broker, err = broker.New(bc, registry{n}, n.peers, cluster{n}); err != nil {
		return nil, err
	}
	n.applyTo.Store(n.broker)

	gc := cfg.Gateway
	gc.PingInterval = gc.Heartbeat // one liveness pace for both directions
	gc.Logger = cfg.Logger
	if gc.CheckOrigin, err = gateway.OriginPolicy(cfg.AllowedOrigins); err != nil {
		return nil, fmt.Errorf("allowed origins: %w", err)
	}
	if n.gateway, err = gateway.New(gc, n.authenticate, n.broker); err != nil {
		return nil, err
	}
	n.metrics.observe(n)
	n.goOwned(n.sampleRates)

	n.serve(n.peers)
	n.broker.Serve(n.peers)
	n.goOwned(func() {
		if err := n.peers.Serve(n.gate.Listener(n.mux.Listener(clusterport.Peer))); err != nil {
			n.log.Error("peer links stopped", "err", err)
		}
	})
	n.http = &http.Server{Handler: n.publicHandler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second, ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)}
	n.goOwned(func() { n.serveHTTP(n.http, n.publicLn) })
	if n.adminLn != nil {
		n.admin = &http.Server{Handler: n.adminHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)}
		n.goOwned(func() { n.serveHTTP(n.admin, n.adminLn) })
	}
	n.goOwned(n.join)
	n.goOwned(n.control)
	n.goOwned(n.formCluster)
	n.log.Info("node started", "public", n.publicURL, "cluster", clusterAddr, "cluster_tls", clusterTLS != nil, "gossip", n.pool.Local().GossipAddr, "region", cfg.Region, "zone", cfg.Zone)
	return n, nil
}

// loadTLS reads the certificates of the public listeners and of the
// cluster port, if configured, and keeps watching their files for the
// node's life. It warns when the cluster port has no TLS.
func (n *Node) loadTLS() (public *tls.Config, cluster *certs.Source, err error) {
	cfg := n.cfg
	if cfg.TLS.Enabled() {
		src, err := certs.Open(cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.Logger)
		if err != nil {
			return nil, nil, fmt.Errorf("tls-cert-file, tls-key-file: %w", err)
		}
		n.goOwned(func() { src.Run(n.ctx) })
		public, n.publicCerts = src.ServerConfig(), src
	}
	if !cfg.ClusterTLS.Enabled() {
		n.log.Warn("cluster TLS is off: anyone who reaches the cluster port can speak Raft and peer links; cluster ports must be on a private network (--cluster-ca-file, --cluster-cert-file, --cluster-key-file)")
		return public, nil, nil
	}
	if cluster, err = certs.OpenMutual(cfg.ClusterTLS.CAFile, cfg.ClusterTLS.CertFile, cfg.ClusterTLS.KeyFile, cfg.Logger); err != nil {
		return nil, nil, fmt.Errorf("cluster-ca-file, cluster-cert-file, cluster-key-file: %w", err)
	}
	n.goOwned(func() { cluster.Run(n.ctx) })
	n.clusterCerts = cluster
	return public, cluster, nil
}

// dialer opens the node's cluster connections, through the fault gate.
func (n *Node) dialer() clusterport.Dialer {
	if n.cfg.Dial != nil {
		return n.gate.Dial(n.cfg.Dial)
	}
	var d net.Dialer
	return n.gate.Dial(d.DialContext)
}

// applied is the registry's apply hook.
func (n *Node) applied(c session.Command, r session.Result) {
	if b := n.applyTo.Load(); b != nil {
		b.Applied(c, r)
	}
}

// ID returns the node id.
func (n *Node) ID() string { return n.cfg.NodeID }

// PublicURL returns the base URL of the public listener (http://host:port,
// or https:// with TLS).
func (n *Node) PublicURL() string { return n.publicURL }

// ConnectURL returns the client WebSocket URL.
func (n *Node) ConnectURL() string { return wsURL(n.publicURL) }

// AdminURL returns the base URL of the admin API.
func (n *Node) AdminURL() string {
	if n.adminLn != nil {
		return n.scheme + "://" + n.adminLn.Addr().String()
	}
	return n.publicURL
}

// GossipAddr returns the address other nodes --join.
func (n *Node) GossipAddr() string { return n.pool.Local().GossipAddr }

// Done is closed once the node has stopped (Shutdown, Kill or a drain
// requested through the admin API).
func (n *Node) Done() <-chan struct{} { return n.done }

// join keeps trying the seed nodes until the pool has been joined: the
// --join addresses, and the peers this node last saw alive. A node with
// no --join counts as joined at once (it may be the first of a cluster);
// it still looks for its remembered peers in the background.
func (n *Node) join() {
	seeds := append(slices.Clone(n.cfg.Join), n.loadSeeds()...)
	if len(n.cfg.Join) == 0 {
		n.joined.Store(true)
	}
	if len(seeds) == 0 {
		return
	}
	wait := time.Second
	for n.ctx.Err() == nil {
		if err := n.pool.Join(n.ctx, seeds); err == nil {
			n.joined.Store(true)
			return
		} else if n.ctx.Err() == nil && len(n.cfg.Join) > 0 {
			n.log.Warn("join failed; retrying", "seeds", seeds, "err", err)
		}
		select {
		case <-n.ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

func (n *Node) serveHTTP(s *http.Server, l net.Listener) {
	if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		n.log.Error("http server stopped", "err", err)
	}
}

func (n *Node) goOwned(fn func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn()
	}()
}

// Shutdown drains the node and stops it: the graceful path (SIGTERM).
func (n *Node) Shutdown(ctx context.Context) error {
	n.stop(ctx, true)
	return n.stopErr
}

// Kill stops the node abruptly, as a crash would look to the others: no
// drain, no leave, connections cut. For failure tests.
func (n *Node) Kill() { n.stop(context.Background(), false) }

// stop is the node's whole shutdown order, top to bottom.
func (n *Node) stop(ctx context.Context, graceful bool) {
	n.stopOnce.Do(func() {
		defer close(n.done)
		if graceful {
			n.stopErr = n.drain(ctx)
		}
		// Clients first: nothing new arrives while the rest stops.
		if n.http != nil {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			_ = n.http.Shutdown(cctx) // hijacked WebSockets are the gateway's
			cancel()
			// Shutdown leaves what outlived its grace: requests still
			// running, and connections that never sent one (it counts
			// those idle only after 5 s). Close cuts them, with their
			// goroutines.
			_ = n.http.Close()
		}
		if n.gateway != nil {
			why := protocol.Errorf(protocol.ErrShuttingDown, "node stopping: reconnect to another endpoint")
			if graceful {
				why = protocol.Errorf(protocol.ErrMoved, "node stopping: reconnect to another endpoint")
			}
			n.gateway.CloseAll(why, n.endpoints())
			gctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = n.gateway.Shutdown(gctx)
			cancel()
		}
		if n.admin != nil {
			_ = n.admin.Close()
		}
		if n.pool != nil {
			if graceful {
				if err := n.pool.Leave(2 * time.Second); err != nil {
					n.log.Warn("gossip leave failed", "err", err)
				}
			}
		}
		n.cancel()
		if n.broker != nil {
			_ = n.broker.Close()
		}
		if n.raft != nil {
			if err := n.raft.Close(); err != nil {
				n.log.Warn("raft close", "err", err)
			}
		}
		if n.peers != nil {
			_ = n.peers.Close()
		}
		if n.mux != nil {
			_ = n.mux.Close()
		}
		if n.pool != nil {
			_ = n.pool.Close()
		}
		for _, l := range []net.Listener{n.publicLn, n.adminLn} {
			if l != nil {
				_ = l.Close()
			}
		}
		n.wg.Wait()
		if n.tokens != nil {
			_ = n.tokens.Close()
		}
		if n.metrics != nil {
			n.metrics.close()
		}
		// Last: every span has ended once the components above stopped;
		// the flush is bounded (tracing.Config.ShutdownTimeout).
		if err := n.tracer.Shutdown(); err != nil {
			n.log.Warn("trace export at shutdown", "err", err)
		}
		n.log.Info("node stopped", "graceful", graceful)
	})
}

// drain stops taking clients, moves every connection elsewhere, and hands
// leadership over, so the node can leave without anyone noticing more
// than a reconnect.
func (n *Node) drain(ctx context.Context) error {
	if !n.draining.CompareAndSwap(false, true) {
		return nil
	}
	n.log.Info("draining")
	if err := n.pool.SetDraining(ctx, true); err != nil {
		n.log.Warn("gossip draining state", "err", err)
	}
	// New connections are turned away first, then every stream goes to
	// another node, and only then are clients told to reconnect: they
	// resume at the streams' new owners, with replay.
	n.gateway.SetDraining(n.endpoints())
	err := n.broker.Drain(ctx)
	if err != nil {
		n.log.Warn("drain incomplete", "err", err)
	}
	n.gateway.CloseAll(protocol.Errorf(protocol.ErrMoved, "node draining: reconnect to another endpoint"), n.endpoints())
	if n.raft.IsLeader() {
		if err := n.raft.TransferLeadership(); err != nil {
			n.log.Warn("leadership transfer failed", "err", err)
		}
	}
	return err
}
