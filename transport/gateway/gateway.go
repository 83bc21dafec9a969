// Package gateway serves the client WebSocket protocol (DESIGN.md §3) on
// GET /v1/connect: the upgrade, the hello handshake, per-connection send
// queues with write deadlines, pings and heartbeats, close codes, and a
// drain that tells clients where to go. It speaks RFC 6455 framing on the
// raw socket itself, so that an idle connection costs no goroutine.
//
// The session layer behind it is a Hub; the gateway knows nothing of
// streams, owners or Raft.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard/switchboard/protocol"
)

// Config configures the client WebSocket gateway (DESIGN.md §3). Start
// from DefaultConfig.
type Config struct {
	// MaxFrameBytes is the largest client text frame accepted; a larger one
	// is answered with frame_too_large and close 1009.
	MaxFrameBytes int
	// HelloTimeout bounds the wait for the first frame (hello) and the
	// Hub.Hello call that answers it; it also bounds a subscribe and a
	// presence question.
	HelloTimeout time.Duration
	// Heartbeat is the idle time after which an application heartbeat frame
	// is written; the hub reports it to clients as welcome.heartbeat_ms.
	Heartbeat time.Duration
	// PingInterval is the WebSocket ping period. The read deadline is
	// 2.5*PingInterval, refreshed by any frame or pong.
	PingInterval time.Duration
	// WriteTimeout bounds every write to the socket.
	WriteTimeout time.Duration
	// SendQueue bounds the frames waiting to be written to one connection;
	// overflow closes it with slow_consumer and 4008.
	SendQueue int
	// CheckOrigin vets the upgrade request's Origin; a refusal is answered
	// 403 before any WebSocket exists. Requests without Origin are not
	// asked about. nil: OriginPolicy(nil), only an Origin whose host:port
	// is the request's Host.
	CheckOrigin func(*http.Request) bool

	// Limits (DESIGN.md §7); 0 means no limit.

	// MaxConnections bounds the open connections; an upgrade over it is
	// answered 503 with Retry-After before any WebSocket exists.
	MaxConnections int
	// MaxConnectionsPerUser bounds one user's open connections; the hello
	// over it is answered too_many_connections and close 4029.
	MaxConnectionsPerUser int
	// ConnectRate bounds the new connections per client IP per second,
	// with a burst of one second's worth; an upgrade over it is answered
	// 429 with Retry-After before any WebSocket exists.
	ConnectRate float64
	// FrameRate bounds the frames a connection sends per second,
	// WebSocket control frames included, with a burst of one second's
	// worth; over it: rate_limited and close 4029.
	FrameRate float64
	// MaxChannelsPerConn bounds a connection's channel subscriptions; a
	// subscribe over it is answered too_many_channels.
	MaxChannelsPerConn int

	// Logger receives the gateway's logs; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns a configuration safe for production.
func DefaultConfig() Config {
	return Config{
		MaxFrameBytes: 64 << 10,
		HelloTimeout:  5 * time.Second,
		Heartbeat:     5 * time.Second,
		PingInterval:  5 * time.Second,
		WriteTimeout:  10 * time.Second,
		SendQueue:     4096,

		MaxChannelsPerConn: 128,
	}
}

// ErrConfig is returned by Config.Validate.
var ErrConfig = errors.New("gateway: invalid config")

// The gateway's own reasons to close a connection.
var (
	errShutdown = protocol.Errorf(protocol.ErrShuttingDown, "node shutting down")
	errDraining = protocol.Errorf(protocol.ErrMoved, "node draining; reconnect to another endpoint")
	errInternal = protocol.Errorf(protocol.ErrInternal, "internal error")
)

// ErrShutdownForced is wrapped in Shutdown's error when its context ended
// before every connection had finished and connections were cut.
var ErrShutdownForced = errors.New("gateway: shutdown forced")

// Validate reports the first field that cannot be used.
func (c Config) Validate() error {
	check := func(ok bool, field, must string, v any) error {
		if ok {
			return nil
		}
		return fmt.Errorf("%w: %s must be %s, is %v", ErrConfig, field, must, v)
	}
	pos := func(ok bool, field string, v any) error { return check(ok, field, "positive", v) }
	limit := func(ok bool, field string, v any) error { return check(ok, field, "0 (no limit) or positive", v) }
	rateOK := func(r float64) bool { return r >= 0 && !math.IsInf(r, 0) }
	return errors.Join(
		pos(c.MaxFrameBytes > 0, "MaxFrameBytes", c.MaxFrameBytes),
		pos(c.HelloTimeout > 0, "HelloTimeout", c.HelloTimeout),
		pos(c.Heartbeat > 0, "Heartbeat", c.Heartbeat),
		pos(c.PingInterval > 0, "PingInterval", c.PingInterval),
		pos(c.WriteTimeout > 0, "WriteTimeout", c.WriteTimeout),
		pos(c.SendQueue > 0, "SendQueue", c.SendQueue),
		limit(c.MaxConnections >= 0, "MaxConnections", c.MaxConnections),
		limit(c.MaxConnectionsPerUser >= 0, "MaxConnectionsPerUser", c.MaxConnectionsPerUser),
		limit(rateOK(c.ConnectRate), "ConnectRate", c.ConnectRate),
		limit(rateOK(c.FrameRate), "FrameRate", c.FrameRate),
		limit(c.MaxChannelsPerConn >= 0, "MaxChannelsPerConn", c.MaxChannelsPerConn),
	)
}

// Identity is what a valid token says: the user and when the token
// expires (the zero time: never).
type Identity struct {
	User    string
	Expires time.Time
	// Channels are the token's channel patterns (DESIGN.md §3a): exact
	// names, or prefixes ending in `*`. None: no channels.
	Channels []string
}

// Authenticator verifies a token. The gateway calls it for a hello and for
// each refresh, off the poller: it may block (a key fetch), though every
// call holds up that connection's reads.
type Authenticator func(token string) (Identity, error)

// Notifier is a Sink that tells when a frame was written to the socket:
// the connections of this gateway are. When SendThen returns true (the
// frame was queued), written is called once: with nil once the frame was
// written, or with why it never will be; it must not block. When it
// returns false, written is never called. Traced deliveries use it to end
// their span at the write.
type Notifier interface {
	SendThen(seq uint64, frame []byte, written func(error)) bool
}

// Sink is the gateway's handle on one connection, given to the Hub. All
// methods are safe for concurrent use and never block.
type Sink interface {
	// ID identifies the connection within this gateway.
	ID() uint64
	// User is the authenticated user id.
	User() string
	// Send enqueues a pre-encoded text frame that carries stream position
	// seq (0 if none). Heartbeats report the highest seq written so far.
	// It returns false if the connection is closed or its queue overflowed
	// (the gateway then closes it with 4008 itself).
	Send(seq uint64, frame []byte) bool
	// Close ends the connection because of err: an error frame with the
	// slug of protocol.SlugOf(err), err's text and endpoints (where to
	// reconnect, if any), then the close frame with protocol.CloseOf(err),
	// then the TCP close. Frames queued before Close are written first;
	// the whole close is bounded by WriteTimeout plus one second. Only the
	// first Close counts. (A code that fails the connection at the
	// WebSocket layer, protocol.CloseCode.Failed, drops the queue and
	// sends no error frame.)
	Close(err error, endpoints []string)
}

// Hub is the session layer the gateway calls.
type Hub interface {
	// Hello is called once after a valid hello. It must enqueue the welcome
	// (and any replay) on sink itself, in order, or return an error, which
	// closes the connection as Sink.Close does. ctx ends when the
	// connection closes or HelloTimeout passes. The hub keeps sink
	// registered until Gone.
	Hello(ctx context.Context, sink Sink, user string, resume *protocol.Resume) error
	// Ack delivers a client's cumulative acknowledgement. It runs on the
	// connection's reader, so it must not block.
	Ack(sink Sink, seq uint64)
	// Gone is called exactly once per sink that Hello accepted, after the
	// connection closed for any reason. It must not block: Shutdown waits
	// for it.
	Gone(sink Sink)

	// Channels (DESIGN.md §3a). The gateway has checked the channel's
	// name, the token's channels and the connection's limit; errors are
	// answered with an error frame naming the channel
	// (protocol.ChannelSlugOf) and the connection goes on.

	// Subscribe subscribes sink's connection to sub.Channel, replacing a
	// subscription it has there: it queues `subscribed` and any replay on
	// sink, or returns why not. It may block (a takeover); ctx bounds it.
	Subscribe(ctx context.Context, sink Sink, sub protocol.Subscription) error
	// Unsubscribe ends the connection's subscription to channel. It must
	// not block.
	Unsubscribe(sink Sink, channel string) error
	// Presence answers a presence frame about channel. It may block (a
	// call to the channel's owner); ctx bounds it.
	Presence(ctx context.Context, sink Sink, channel string) (protocol.Presence, error)
}

// closeWait is how long a connection waits, after sending its close frame
// and half-closing TCP, for the client's close frame or EOF before it
// closes the socket: closing with input unread sends a reset, which may
// discard the close still in flight.
const closeWait = time.Second

// Gateway serves GET /v1/connect: it upgrades clients to WebSocket, runs the
// hello handshake and moves frames between each connection and the Hub.
//
// gorilla/websocket does the upgrade handshake; after it the gateway speaks
// RFC 6455 framing on the raw socket itself (wsframe.go), so that an idle
// connection needs no goroutine: one poller reads every socket that has
// bytes (poller_linux.go), one sweeper runs every connection's timers
// (sweep.go), and a connection's writer goroutine exists only while it has
// something to write, writing all of it in one syscall.
type Gateway struct {
	cfg      Config
	auth     Authenticator
	hub      Hub
	log      *slog.Logger
	upgrader websocket.Upgrader
	nextID   atomic.Uint64
	noPoller bool // tests: every connection gets a reader goroutine
	// closeWait is the constant closeWait; tests raise it to show that a
	// close does not wait for it.
	closeWait time.Duration

	// wg counts open connections (each until it finished, including its
	// reader and writer); Add happens under mu while !closed, so Shutdown's
	// Wait never races an Add from zero.
	wg sync.WaitGroup

	ips      *ipLimiter // nil: no ConnectRate
	refusals [numLimits]atomic.Int64
	// slowConsumers counts connections closed as slow consumers (4008).
	slowConsumers atomic.Int64

	mu             sync.Mutex
	conns          map[*conn]struct{}
	slots          int            // connections open or being upgraded: MaxConnections bounds it
	perUser        map[string]int // counted connections per user: MaxConnectionsPerUser bounds it
	closed         bool
	draining       bool
	drainEndpoints []string
	started        bool
	poll           *poller // nil: reader goroutines (not Linux, or epoll failed)
	// writers write the sockets the poller watches (writer.go); set once by
	// New, its workers run from the first connection until stop.
	writers   *writerPool
	sweepStop chan struct{}
	sweepDone chan struct{}
}

// New returns a gateway that authenticates with auth and hands accepted
// connections to hub, or the first problem with cfg. Its goroutines start
// with the first connection and end with Shutdown.
func New(cfg Config, auth Authenticator, hub Hub) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if auth == nil || hub == nil {
		return nil, fmt.Errorf("%w: an Authenticator and a Hub are required", ErrConfig)
	}
	if cfg.CheckOrigin == nil {
		cfg.CheckOrigin, _ = OriginPolicy(nil)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	g := &Gateway{
		cfg:     cfg,
		auth:    auth,
		hub:     hub,
		log:     cfg.Logger.With("component", "gateway"),
		conns:   make(map[*conn]struct{}),
		perUser: make(map[string]int),
		writers: newWriterPool(),
		ips:     newIPLimiter(cfg.ConnectRate),

		closeWait: closeWait,
	}
	g.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.WriteTimeout,
		// The upgrader's connection is dropped after the handshake; only a
		// refusal (refuse) writes through it.
		WriteBufferPool: &sync.Pool{},
		// ServeHTTP asked CheckOrigin already, to answer with JSON.
		CheckOrigin:       func(*http.Request) bool { return true },
		EnableCompression: false,
	}
	return g, nil
}

// ServeHTTP upgrades the request and hands the connection to the poller;
// the handler goroutine returns at once. An upgrade the gateway refuses
// (Origin, connect rate, connection limit) is answered with an HTTP error
// and a JSON body before any WebSocket exists.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		_, err := g.upgrader.Upgrade(w, r, nil) // answers 400
		g.log.Debug("not a WebSocket upgrade", "remote", r.RemoteAddr, "err", err)
		return
	}
	if retryAfter, err := g.admit(r); err != nil {
		g.log.Debug("upgrade refused", "remote", r.RemoteAddr, "err", err)
		writeRefusal(w, err, retryAfter)
		return
	}
	headerToken := bearerToken(r.Header.Get("Authorization"))
	ws, err := g.upgrader.Upgrade(w, r, nil)
	if err != nil {
		// The upgrader has already answered with an HTTP error.
		g.log.Debug("upgrade failed", "remote", r.RemoteAddr, "err", err)
		g.releaseSlot()
		return
	}

	g.mu.Lock()
	if g.closed {
		g.slots--
		g.mu.Unlock()
		refuse(ws, errShutdown, g.cfg.WriteTimeout)
		return
	}
	g.startLocked()
	c := newConn(g, ws.NetConn(), headerToken)
	g.conns[c] = struct{}{}
	g.wg.Add(1)
	draining, endpoints, p := g.draining, g.drainEndpoints, g.poll
	g.mu.Unlock()

	g.log.Debug("connected", "conn", c.id, "remote", r.RemoteAddr)
	if draining {
		c.Close(errDraining, endpoints)
	}
	g.watch(c, p)
}

// startLocked starts the poller and the sweeper with the first connection.
func (g *Gateway) startLocked() {
	if g.started {
		return
	}
	g.started = true
	p, err := newPoller(g)
	if err != nil {
		g.log.Warn("no epoll poller; every connection gets a reader goroutine", "err", err)
	}
	g.poll = p
	if p != nil {
		g.writers.start()
	}
	g.sweepStop, g.sweepDone = make(chan struct{}), make(chan struct{})
	go g.sweep(g.sweepStop, g.sweepDone)
}

// Connections returns the number of open connections.
func (g *Gateway) Connections() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// SetDraining makes the gateway accept each new upgrade only to close it at
// once with 4010 and endpoints, so clients learn where to reconnect.
// Existing connections are untouched; CloseAll moves them.
func (g *Gateway) SetDraining(endpoints []string) {
	eps := append([]string(nil), endpoints...)
	g.mu.Lock()
	g.draining = true
	g.drainEndpoints = eps
	g.mu.Unlock()
}

// CloseAll closes every open connection as Sink.Close does, e.g. drain:
// a protocol.ErrMoved with endpoints; shutdown: protocol.ErrShuttingDown.
// It does not wait.
func (g *Gateway) CloseAll(err error, endpoints []string) {
	for _, c := range g.snapshot() {
		c.Close(err, endpoints)
	}
}

// Shutdown closes every connection with 1001, refuses new ones the same way,
// and waits until all connections have finished. If ctx ends first it cuts
// the remaining sockets, still waits for the connections (which then finish
// promptly), and returns an error wrapping ErrShutdownForced and
// ctx.Err(). It is idempotent.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.CloseAll(errShutdown, nil)

	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		for _, c := range g.snapshot() {
			c.teardown()
		}
		<-done
		err = fmt.Errorf("%w: %w", ErrShutdownForced, ctx.Err())
	}
	g.stop()
	return err
}

// stop ends the poller and the sweeper once no connection is left.
func (g *Gateway) stop() {
	g.mu.Lock()
	started, p, stopCh, doneCh := g.started, g.poll, g.sweepStop, g.sweepDone
	g.started, g.poll, g.sweepStop = false, nil, nil
	g.mu.Unlock()
	if !started || stopCh == nil {
		return
	}
	close(stopCh)
	<-doneCh
	if p != nil {
		p.close()
	}
	g.writers.stop()
}

func (g *Gateway) snapshot() []*conn {
	g.mu.Lock()
	defer g.mu.Unlock()
	cs := make([]*conn, 0, len(g.conns))
	for c := range g.conns {
		cs = append(cs, c)
	}
	return cs
}

// unregister forgets a finished connection and frees what it counted
// against the limits.
func (g *Gateway) unregister(c *conn) {
	g.mu.Lock()
	delete(g.conns, c)
	g.slots--
	if c.userCounted {
		if g.perUser[c.user]--; g.perUser[c.user] <= 0 {
			delete(g.perUser, c.user)
		}
	}
	g.mu.Unlock()
}

// bearerToken extracts the token of an "Authorization: Bearer" header.
func bearerToken(h string) string {
	const prefix = "bearer "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return ""
	}
	return strings.TrimSpace(h[len(prefix):])
}

// refuse closes a just-upgraded connection that the gateway will not
// serve, synchronously on the handler goroutine: error frame, close frame,
// a brief wait for the client's close, then TCP close.
func refuse(ws *websocket.Conn, why error, writeTimeout time.Duration) {
	defer ws.Close()
	code, slug := protocol.CloseOf(why), protocol.SlugOf(why)
	deadline := time.Now().Add(writeTimeout)
	_ = ws.SetWriteDeadline(deadline)
	if err := ws.WriteMessage(websocket.TextMessage, protocol.EncodeError(slug, why.Error(), nil)); err != nil {
		return
	}
	if err := ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(code), slug), deadline); err != nil {
		return
	}
	_ = ws.SetReadDeadline(time.Now().Add(closeWait))
	for {
		if _, _, err := ws.NextReader(); err != nil {
			return
		}
	}
}
