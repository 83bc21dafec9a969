// Package peer is Switchboard's node-to-node transport: persistent,
// multiplexed, pipelined links between nodes carrying requests with
// answers and one-way frames, with batched writes, keepalives, bounded
// queues and handler concurrency. Methods are numbered; their typed
// request and response codecs are declared once, with the table of
// errors that keep their identity across a link (Method, OneWay).
package peer

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Peer link errors.
var (
	// ErrClosed: the local Links was closed.
	ErrClosed = errors.New("peer: closed")
	// ErrUnavailable: no usable link to the peer (dial failed, in backoff,
	// or the link died with the call in flight; the call may or may not have run).
	ErrUnavailable = errors.New("peer: unavailable")
	// ErrNotSent accompanies ErrUnavailable when no link could be
	// had at all: the request certainly never reached the peer, so any
	// request, even a non-idempotent one, may be retried.
	ErrNotSent = errors.New("peer: not sent")
	// ErrFrameTooLarge: a payload exceeds Config.MaxFrame.
	ErrFrameTooLarge = errors.New("peer: frame too large")
	// ErrUnknownMethod: the remote node has no handler for the method (an
	// older version, in a rolling upgrade). It reaches the caller as a
	// RemoteError that matches it.
	ErrUnknownMethod = errors.New("peer: unknown method")
	// ErrHandlerPanic: the remote handler panicked; it reaches the caller
	// like ErrUnknownMethod.
	ErrHandlerPanic = errors.New("peer: handler panicked")
	// ErrConfig: Config is invalid; the message names the field.
	ErrConfig = errors.New("peer: invalid config")

	errProtocol = errors.New("peer: protocol error")
)

// RemoteError is the error a Call returns when the remote handler failed.
// It matches (errors.Is) the sentinel of Config.Errors, or the link's own
// ErrUnknownMethod or ErrHandlerPanic, that the remote error matched.
type RemoteError struct {
	Code     uint16
	Message  string
	sentinel error
}

func (e *RemoteError) Error() string { return "remote: " + e.Message }

// Unwrap returns the sentinel the remote error matched, if any.
func (e *RemoteError) Unwrap() error { return e.sentinel }

// Wire codes the link itself gives remote errors, above any Config.Errors
// table; 0 is an error no sentinel matched.
const (
	codeUnknownMethod uint16 = 0xFFFF
	codeHandlerPanic  uint16 = 0xFFFE
	maxErrorTable            = 0xFF00
)

// Config configures Links. Start from DefaultConfig.
type Config struct {
	NodeID       string                                                   // sent in the handshake; the `from` of the remote's handlers
	Dial         func(ctx context.Context, addr string) (net.Conn, error) // the node dials the cluster port's peer kind
	CallTimeout  time.Duration                                            // per Call/Send when ctx has no deadline; also bounds dial+handshake
	PingInterval time.Duration                                            // keepalive; no inbound bytes for 5*PingInterval kills a link
	MaxInFlight  int                                                      // per link: concurrently running non-inline handlers; beyond it the link stops reading
	MaxFrame     int                                                      // largest payload; larger inbound frames close the link
	Logger       *slog.Logger
	// Resolve maps a node id to the address of its cluster port. nil: the
	// id is the address.
	Resolve func(node string) (addr string, err error)
	// Errors is the table of sentinel errors that keep their identity
	// across a link: a handler error matching Errors[i] travels as code
	// i+1 and the caller's error matches Errors[i] again. Both ends must
	// agree on it: append only, never reorder.
	Errors []error
	// Delay, when set, is how long a link's writer holds what was queued
	// before it sends it: injected latency (fault injection's slow, for
	// drills). Frames keep their order; nil or 0 adds nothing.
	Delay func() time.Duration
	// OnDown, when set, is told the node at the other end of a link that
	// broke (not one this side closed): a peer whose process died closes
	// its links at once, long before gossip says so. It runs on the
	// failing link's goroutine and must not block.
	OnDown func(node string)
}

// DefaultConfig returns production defaults; NodeID and Dial must still be set.
func DefaultConfig() Config {
	return Config{
		CallTimeout:  5 * time.Second,
		PingInterval: time.Second,
		MaxInFlight:  1024,
		MaxFrame:     16 << 20,
	}
}

// Validate reports the first invalid field. Dial is checked when a link is
// first needed, so a serve-only Links may leave it nil.
func (c Config) Validate() error {
	switch {
	case c.NodeID == "":
		return fmt.Errorf("%w: NodeID is empty", ErrConfig)
	case len(c.NodeID) > maxNodeID:
		return fmt.Errorf("%w: NodeID longer than %d bytes", ErrConfig, maxNodeID)
	case c.CallTimeout <= 0:
		return fmt.Errorf("%w: CallTimeout %v must be positive", ErrConfig, c.CallTimeout)
	case c.PingInterval <= 0:
		return fmt.Errorf("%w: PingInterval %v must be positive", ErrConfig, c.PingInterval)
	case c.MaxInFlight <= 0:
		return fmt.Errorf("%w: MaxInFlight %d must be positive", ErrConfig, c.MaxInFlight)
	case c.MaxFrame <= 0 || c.MaxFrame > 1<<30:
		return fmt.Errorf("%w: MaxFrame %d outside (0, 1GiB]", ErrConfig, c.MaxFrame)
	case len(c.Errors) >= maxErrorTable:
		return fmt.Errorf("%w: %d Errors, more than %d", ErrConfig, len(c.Errors), maxErrorTable-1)
	}
	return nil
}

// Handler serves one method. from is the calling node's NodeID. payload is
// owned by the handler. For one-way frames the returned bytes are discarded
// and an error is only logged.
type Handler func(ctx context.Context, from string, payload []byte) ([]byte, error)

const (
	sendQueue        = 1024 // frames waiting for a link's writer; callers block beyond it
	ioBuf            = 64 << 10
	handshakeTimeout = 5 * time.Second
	maxHandshakes    = 256 // inbound connections in the handshake at once
	backoffMin       = 100 * time.Millisecond
	backoffMax       = 2 * time.Second
	deadIntervals    = 5 // link is dead after this many ping intervals without inbound bytes
)

type route struct {
	h      Handler
	inline bool
}

// Links holds persistent, multiplexed, pipelined links to other nodes and
// serves the links they open to us.
//
// Payload ownership: Call and Send copy the payload into the link's write
// buffer before they return, so the caller may reuse its slice at once.
// Response payloads and handler payloads are freshly allocated for the receiver.
type Links struct {
	cfg Config
	log *slog.Logger

	routesMu sync.Mutex // serializes Handle's copy-on-write
	routes   atomic.Pointer[[256]route]

	ctx     context.Context // canceled by Close; parent of dials and handler contexts
	cancel  context.CancelFunc
	closing atomic.Bool
	once    sync.Once

	mu        sync.Mutex
	closed    bool
	clients   map[string]*outbound // outgoing, by dialed address
	conns     map[*link]struct{}   // every live link, both directions
	listeners map[net.Listener]struct{}
	wg        sync.WaitGroup // every goroutine Links starts

	handshakes chan struct{} // bounds inbound connections in the handshake
}

// New returns a Links, or the first problem with cfg.
func New(cfg Config) (*Links, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Links{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "peer", "node", cfg.NodeID),
		ctx:        ctx,
		cancel:     cancel,
		clients:    make(map[string]*outbound),
		conns:      make(map[*link]struct{}),
		listeners:  make(map[net.Listener]struct{}),
		handshakes: make(chan struct{}, maxHandshakes),
	}
	p.routes.Store(new([256]route))
	return p, nil
}

// Handle registers h for method, replacing any earlier handler. Register
// before Serve. inline=true runs h on the link's read goroutine in arrival
// order (for ordered one-way deliveries; h must not block long, since the
// link reads nothing else meanwhile). inline=false runs h in its own
// goroutine, at most MaxInFlight at once per link.
func (p *Links) Handle(method uint8, h Handler, inline bool) {
	p.routesMu.Lock()
	defer p.routesMu.Unlock()
	next := *p.routes.Load()
	next[method] = route{h: h, inline: inline}
	p.routes.Store(&next)
}

// Serve accepts links on l until Close, then returns nil. It closes l on return.
func (p *Links) Serve(l net.Listener) error {
	defer l.Close()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.listeners[l] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.listeners, l)
		p.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			if p.closing.Load() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("peer serve: %w", err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Warn("peer accept failed; retrying", "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-p.ctx.Done():
				t.Stop()
				return nil
			}
			continue
		}
		backoff = 0
		select {
		case p.handshakes <- struct{}{}:
		default:
			p.log.Debug("too many peer handshakes; dropping", "remote", conn.RemoteAddr())
			conn.Close()
			continue
		}
		if !p.goOwned(func() {
			defer func() { <-p.handshakes }()
			p.accept(conn)
		}) {
			<-p.handshakes
			conn.Close()
			return nil
		}
	}
}

// goOwned starts f as a goroutine Close waits for, unless Close has begun.
func (p *Links) goOwned(f func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
	return true
}

// accept runs the acceptor's side of the handshake and starts the link.
func (p *Links) accept(conn net.Conn) {
	stop := context.AfterFunc(p.ctx, func() { conn.Close() })
	br := bufio.NewReaderSize(conn, ioBuf)
	remote, err := func() (string, error) {
		if err := conn.SetDeadline(time.Now().Add(handshakeTimeout)); err != nil {
			return "", err
		}
		remote, err := readHello(br)
		if err != nil {
			return "", err
		}
		if err := writeHello(conn, p.cfg.NodeID); err != nil {
			return "", err
		}
		return remote, conn.SetDeadline(time.Time{})
	}()
	if !stop() || err != nil {
		if err != nil {
			p.log.Debug("peer handshake failed", "remote", conn.RemoteAddr(), "err", err)
		}
		conn.Close()
		return
	}
	if _, err := p.startConn(conn, br, conn.RemoteAddr().String(), remote, nil); err != nil {
		conn.Close()
	}
}

// Call sends a request to node and waits for its response. If ctx has no
// deadline, CallTimeout applies; the remaining time travels with the
// request and bounds the remote handler's context.
func (p *Links) Call(ctx context.Context, node string, method uint8, payload []byte) ([]byte, error) {
	addr, err := p.resolve(node)
	if err != nil {
		return nil, err
	}
	return p.CallAddr(ctx, addr, method, payload)
}

// CallAddr is Call to the node at a cluster address rather than by id.
func (p *Links) CallAddr(ctx context.Context, addr string, method uint8, payload []byte) ([]byte, error) {
	if len(payload) > p.cfg.MaxFrame {
		return nil, fmt.Errorf("%w: %d > %d bytes", ErrFrameTooLarge, len(payload), p.cfg.MaxFrame)
	}
	ctx, cancel := p.callContext(ctx)
	defer cancel()
	c, err := p.link(ctx, addr)
	if err != nil {
		return nil, err
	}
	return c.call(ctx, method, payload)
}

// Send delivers a one-way frame to node. Frames sent to one node arrive in
// the order Send was called while the link stays up; if the link dies,
// frames already queued are lost. It returns an error only if it could not
// hand the frame to a live link (dial failure, backoff, ctx, Close).
func (p *Links) Send(ctx context.Context, node string, method uint8, payload []byte) error {
	addr, err := p.resolve(node)
	if err != nil {
		return err
	}
	return p.sendAddr(ctx, addr, method, payload)
}

func (p *Links) sendAddr(ctx context.Context, addr string, method uint8, payload []byte) error {
	if len(payload) > p.cfg.MaxFrame {
		return fmt.Errorf("%w: %d > %d bytes", ErrFrameTooLarge, len(payload), p.cfg.MaxFrame)
	}
	ctx, cancel := p.callContext(ctx)
	defer cancel()
	c, err := p.link(ctx, addr)
	if err != nil {
		return err
	}
	bp := encodeOneway(method, sampled(ctx), payload)
	select {
	case c.sendq <- bp:
		return nil
	case <-c.done:
		putBuf(bp)
		return c.deadErr()
	case <-ctx.Done():
		putBuf(bp)
		return fmt.Errorf("peer send to %s: %w", addr, ctx.Err())
	}
}

// sampled is the span context a frame carries: ctx's, when it is sampled.
// Unsampled calls send plain frames (an unsampled trace records nothing
// on the other side either).
func sampled(ctx context.Context) trace.SpanContext {
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		return sc
	}
	return trace.SpanContext{}
}

func (p *Links) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, p.cfg.CallTimeout)
}

// Close closes listeners and links, fails in-flight Calls with ErrClosed,
// cancels handler contexts and waits for every goroutine Links started
// (including handlers, so handlers must honour ctx). Frames still queued for
// sending are dropped. Idempotent.
func (p *Links) Close() error {
	p.once.Do(func() {
		p.closing.Store(true)
		p.mu.Lock()
		p.closed = true
		ls := make([]net.Listener, 0, len(p.listeners))
		for l := range p.listeners {
			ls = append(ls, l)
		}
		cs := make([]*link, 0, len(p.conns))
		for c := range p.conns {
			cs = append(cs, c)
		}
		p.mu.Unlock()
		for _, l := range ls {
			l.Close()
		}
		// Links die before handler contexts are canceled, so a handler's
		// ctx error never reaches a caller as if it were the handler's answer.
		for _, c := range cs {
			c.fail(ErrClosed)
		}
		p.cancel()
		p.wg.Wait()
	})
	return nil
}

// outbound is the outgoing side towards one address: at most one live link
// and at most one dial in progress, shared by all callers.
type outbound struct {
	addr    string
	mu      sync.Mutex
	link    *link
	dialing chan struct{} // closed when the dial in progress ends
	lastErr error
	retryAt time.Time // no new dial before this after a failure
	backoff time.Duration
}

// resolve is the cluster address of node.
func (p *Links) resolve(node string) (string, error) {
	if p.cfg.Resolve == nil {
		return node, nil
	}
	addr, err := p.cfg.Resolve(node)
	if err != nil {
		return "", fmt.Errorf("%w: %w: %v", ErrUnavailable, ErrNotSent, err)
	}
	return addr, nil
}

// Reset forgets the dial backoff towards node, so the next call dials at
// once: the node learned by other means (gossip) that the peer is back.
func (p *Links) Reset(node string) {
	addr, err := p.resolve(node)
	if err != nil {
		return
	}
	p.mu.Lock()
	pc := p.clients[addr]
	p.mu.Unlock()
	if pc == nil {
		return
	}
	pc.mu.Lock()
	pc.retryAt, pc.backoff = time.Time{}, 0
	pc.mu.Unlock()
}

// link returns a live link to addr, dialing if there is none.
func (p *Links) link(ctx context.Context, addr string) (*link, error) {
	if p.cfg.Dial == nil {
		return nil, fmt.Errorf("%w: Dial is nil", ErrConfig)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	pc := p.clients[addr]
	if pc == nil {
		pc = &outbound{addr: addr}
		p.clients[addr] = pc
	}
	p.mu.Unlock()

	for {
		pc.mu.Lock()
		if c := pc.link; c != nil && !c.isDead() {
			pc.mu.Unlock()
			return c, nil
		}
		if pc.dialing == nil {
			if p.closing.Load() {
				pc.mu.Unlock()
				return nil, ErrClosed
			}
			if wait := time.Until(pc.retryAt); wait > 0 {
				err := pc.lastErr
				pc.mu.Unlock()
				return nil, fmt.Errorf("%w: %w: %s: last dial failed, retry in %v: %v", ErrUnavailable, ErrNotSent, addr, wait.Round(time.Millisecond), err)
			}
			pc.dialing = make(chan struct{})
			if !p.goOwned(func() { p.dial(pc) }) {
				close(pc.dialing)
				pc.dialing = nil
				pc.mu.Unlock()
				return nil, ErrClosed
			}
		}
		dialing := pc.dialing
		pc.mu.Unlock()
		select {
		case <-dialing:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: peer link to %s: %w", ErrNotSent, addr, ctx.Err())
		}
	}
}

// dial establishes a link for pc in the background, so one caller's short
// ctx does not abort the dial other callers are waiting on.
func (p *Links) dial(pc *outbound) {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.CallTimeout)
	defer cancel()
	c, err := p.connect(ctx, pc)
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if err != nil {
		pc.lastErr = err
		pc.backoff = min(max(2*pc.backoff, backoffMin), backoffMax)
		pc.retryAt = time.Now().Add(pc.backoff)
		p.log.Debug("peer dial failed", "addr", pc.addr, "err", err, "backoff", pc.backoff)
	} else {
		pc.link = c
		pc.lastErr = nil
		pc.backoff = 0
	}
	close(pc.dialing)
	pc.dialing = nil
}

func (p *Links) connect(ctx context.Context, pc *outbound) (*link, error) {
	conn, err := p.cfg.Dial(ctx, pc.addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", pc.addr, err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	br := bufio.NewReaderSize(conn, ioBuf)
	remote, err := func() (string, error) {
		dl, _ := ctx.Deadline()
		if err := conn.SetDeadline(dl); err != nil {
			return "", err
		}
		if err := writeHello(conn, p.cfg.NodeID); err != nil {
			return "", err
		}
		remote, err := readHello(br)
		if err != nil {
			return "", err
		}
		return remote, conn.SetDeadline(time.Time{})
	}()
	if !stop() {
		conn.Close()
		return nil, fmt.Errorf("handshake with %s: %w", pc.addr, context.Cause(ctx))
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("handshake with %s: %w", pc.addr, err)
	}
	c, err := p.startConn(conn, br, pc.addr, remote, pc)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// result is what a pending Call receives.
type result struct {
	payload []byte
	err     error
}

// link is one established link, in either direction. Its reader
// dispatches requests, one-way frames and responses; its writer drains sendq.
type link struct {
	p      *Links
	conn   net.Conn
	br     *bufio.Reader
	addr   string // dialed address, or the remote address for inbound links
	remote string // remote NodeID from the handshake
	client *outbound

	sendq  chan *[]byte
	done   chan struct{} // closed when the link is dead
	once   sync.Once
	err    error // why the link died; set before done is closed
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	nextID  uint64
	pending map[uint64]chan result

	sem      chan struct{}  // MaxInFlight slots for non-inline handlers
	handlers sync.WaitGroup // non-inline handlers; waited for by the reader
}

func (p *Links) startConn(conn net.Conn, br *bufio.Reader, addr, remote string, pc *outbound) (*link, error) {
	ctx, cancel := context.WithCancel(p.ctx)
	c := &link{
		p:       p,
		conn:    conn,
		br:      br,
		addr:    addr,
		remote:  remote,
		client:  pc,
		sendq:   make(chan *[]byte, sendQueue),
		done:    make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
		pending: make(map[uint64]chan result),
		sem:     make(chan struct{}, p.cfg.MaxInFlight),
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		cancel()
		return nil, ErrClosed
	}
	p.conns[c] = struct{}{}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		c.readLoop()
	}()
	go func() {
		defer p.wg.Done()
		c.writeLoop()
	}()
	p.log.Debug("peer link up", "addr", addr, "remote", remote, "outbound", pc != nil)
	return c, nil
}

func (c *link) isDead() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// fail kills the link once: every pending call fails at once instead of
// waiting for its timeout.
func (c *link) fail(cause error) {
	c.once.Do(func() {
		c.err = cause
		c.mu.Lock()
		c.closed = true
		pending := c.pending
		c.pending = nil
		c.mu.Unlock()
		// Close the socket first so nothing more is written once callers
		// and handlers see the link dead.
		c.conn.Close()
		close(c.done)
		c.cancel()
		err := c.deadErr()
		for _, ch := range pending {
			ch <- result{err: err} // buffered, one send per call
		}
		c.p.mu.Lock()
		delete(c.p.conns, c)
		c.p.mu.Unlock()
		if pc := c.client; pc != nil {
			pc.mu.Lock()
			if pc.link == c {
				pc.link = nil
			}
			pc.mu.Unlock()
		}
		if c.p.closing.Load() {
			c.p.log.Debug("peer link closed", "addr", c.addr, "remote", c.remote)
			return
		}
		c.p.log.Warn("peer link down", "addr", c.addr, "remote", c.remote, "outbound", c.client != nil, "err", cause)
		if c.p.cfg.OnDown != nil && c.remote != "" {
			c.p.cfg.OnDown(c.remote)
		}
	})
}

// deadErr is the error callers see for a dead link.
func (c *link) deadErr() error {
	if c.p.closing.Load() {
		return ErrClosed
	}
	return fmt.Errorf("%w: link to %s (%s): %v", ErrUnavailable, c.addr, c.remote, c.err)
}

func (c *link) call(ctx context.Context, method uint8, payload []byte) ([]byte, error) {
	ch := make(chan result, 1)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, c.deadErr()
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()

	var timeoutMs uint32
	if dl, ok := ctx.Deadline(); ok {
		timeoutMs = uint32(min(max(time.Until(dl).Milliseconds(), 1), math.MaxUint32))
	}
	bp := encodeRequest(method, id, timeoutMs, sampled(ctx), payload)
	select {
	case c.sendq <- bp:
	case res := <-ch: // link died before the frame was queued
		putBuf(bp)
		return res.payload, res.err
	case <-ctx.Done():
		putBuf(bp)
		c.forget(id)
		return nil, fmt.Errorf("peer call %s method %d: %w", c.addr, method, ctx.Err())
	}
	select {
	case res := <-ch:
		return res.payload, res.err
	case <-ctx.Done():
		c.forget(id)
		return nil, fmt.Errorf("peer call %s method %d: %w", c.addr, method, ctx.Err())
	}
}

// forget frees the pending slot of a call its caller gave up on; a late
// response is then dropped by the reader.
func (c *link) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

func (c *link) pendingLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

func (c *link) readLoop() {
	err := c.readFrames()
	c.fail(err)
	c.handlers.Wait()
}

func (c *link) readFrames() error {
	var hbuf [headerLen]byte
	dead := deadIntervals * c.p.cfg.PingInterval
	maxBody := c.p.cfg.MaxFrame + bodyOverhead
	for {
		// Any frame, pings included, proves the link alive.
		if err := c.conn.SetReadDeadline(time.Now().Add(dead)); err != nil {
			return err
		}
		h, err := readHeader(c.br, &hbuf, maxBody)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		var body []byte
		if h.bodyLen > 0 {
			body = make([]byte, h.bodyLen)
			if _, err := io.ReadFull(c.br, body); err != nil {
				return fmt.Errorf("read: %w", err)
			}
		}
		switch h.kind {
		case kindPing:
			pong := encodeControl(kindPong, h.id)
			select {
			case c.sendq <- pong:
			default: // queue full: data is flowing, which keeps the peer's link alive anyway
				putBuf(pong)
			}
		case kindPong:
		case kindResponse:
			if err := c.deliver(h.id, body); err != nil {
				return err
			}
		case kindRequest, kindRequestTraced:
			var sc trace.SpanContext
			if h.kind == kindRequestTraced {
				if sc, body, err = decodeTraceContext(body); err != nil {
					return err
				}
			}
			if len(body) < 4 {
				return fmt.Errorf("%w: short request", errProtocol)
			}
			timeoutMs := binary.BigEndian.Uint32(body[:4])
			if err := c.dispatch(h.method, h.id, true, timeoutMs, sc, body[4:]); err != nil {
				return err
			}
		case kindOneway, kindOnewayTraced:
			var sc trace.SpanContext
			if h.kind == kindOnewayTraced {
				if sc, body, err = decodeTraceContext(body); err != nil {
					return err
				}
			}
			if err := c.dispatch(h.method, 0, false, 0, sc, body); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: frame kind %d", errProtocol, h.kind)
		}
	}
}

func (c *link) deliver(id uint64, body []byte) error {
	payload, isErr, code, msg, err := decodeResponse(body)
	if err != nil {
		return err
	}
	c.mu.Lock()
	ch, ok := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if !ok {
		return nil // the caller gave up
	}
	if isErr {
		ch <- result{err: c.p.remoteError(code, msg)}
	} else {
		ch <- result{payload: payload}
	}
	return nil
}

func (p *Links) remoteError(code uint16, msg string) error {
	e := &RemoteError{Code: code, Message: msg}
	switch {
	case code == codeUnknownMethod:
		e.sentinel = ErrUnknownMethod
	case code == codeHandlerPanic:
		e.sentinel = ErrHandlerPanic
	case code > 0 && int(code) <= len(p.cfg.Errors):
		e.sentinel = p.cfg.Errors[code-1]
	}
	return e
}

// errorCode is the wire code of a handler's error.
func (p *Links) errorCode(err error) uint16 {
	switch {
	case errors.Is(err, ErrUnknownMethod):
		return codeUnknownMethod
	case errors.Is(err, ErrHandlerPanic):
		return codeHandlerPanic
	}
	for i, sentinel := range p.cfg.Errors {
		if errors.Is(err, sentinel) {
			return uint16(i + 1)
		}
	}
	return 0
}

// dispatch runs the handler for an inbound request or one-way frame. It
// blocks while MaxInFlight handlers run, which stops reading: TCP then pushes
// back on the sender.
func (c *link) dispatch(method uint8, id uint64, isReq bool, timeoutMs uint32, sc trace.SpanContext, payload []byte) error {
	r := c.p.routes.Load()[method]
	if r.h == nil {
		if isReq {
			c.respond(method, id, nil, fmt.Errorf("%w %d", ErrUnknownMethod, method))
		} else {
			c.p.log.Debug("one-way frame for unknown method dropped", "method", method, "from", c.remote)
		}
		return nil
	}
	if r.inline {
		c.run(r.h, method, id, isReq, timeoutMs, sc, payload)
		return nil
	}
	select {
	case c.sem <- struct{}{}:
	case <-c.done:
		return c.err
	}
	c.handlers.Add(1)
	go func() {
		defer c.handlers.Done()
		defer func() { <-c.sem }()
		c.run(r.h, method, id, isReq, timeoutMs, sc, payload)
	}()
	return nil
}

func (c *link) run(h Handler, method uint8, id uint64, isReq bool, timeoutMs uint32, sc trace.SpanContext, payload []byte) {
	ctx := c.ctx
	if sc.IsValid() {
		// The handler's spans join the caller's trace.
		ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
	}
	if timeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(timeoutMs)*time.Millisecond)
		defer cancel()
	}
	out, err := c.p.invoke(ctx, h, c.remote, method, payload)
	if !isReq {
		if err != nil {
			c.p.log.Warn("one-way handler failed", "method", method, "from", c.remote, "err", err)
		}
		return
	}
	c.respond(method, id, out, err)
}

// invoke calls h, turning a panic into an error so a bad frame cannot crash the node.
func (p *Links) invoke(ctx context.Context, h Handler, from string, method uint8, payload []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("peer handler panicked", "method", method, "from", from, "panic", r, "stack", string(debug.Stack()))
			out, err = nil, fmt.Errorf("%w: method %d: %v", ErrHandlerPanic, method, r)
		}
	}()
	return h(ctx, from, payload)
}

func (c *link) respond(method uint8, id uint64, out []byte, err error) {
	if err == nil && len(out) > c.p.cfg.MaxFrame {
		err = fmt.Errorf("%w: response %d > %d bytes", ErrFrameTooLarge, len(out), c.p.cfg.MaxFrame)
	}
	var bp *[]byte
	if err != nil {
		bp = encodeError(method, id, c.p.errorCode(err), err.Error())
	} else {
		bp = encodeResponse(method, id, out)
	}
	select {
	case <-c.done:
		putBuf(bp)
		return
	default:
	}
	select {
	case c.sendq <- bp:
	case <-c.done:
		putBuf(bp)
	}
}

// writeLoop is the link's only writer. It batches whatever is queued into one
// buffered write and flushes only when the queue is empty, so a burst of
// frames costs few syscalls; when idle it sends pings.
// hold waits out Config.Delay before the writer sends; false if the link
// died meanwhile.
func (c *link) hold() bool {
	if c.p.cfg.Delay == nil {
		return true
	}
	d := c.p.cfg.Delay()
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.done:
		return false
	}
}

func (c *link) writeLoop() {
	bw := bufio.NewWriterSize(c.conn, ioBuf)
	timeout := deadIntervals * c.p.cfg.PingInterval
	ping := time.NewTicker(c.p.cfg.PingInterval)
	defer ping.Stop()
	ping0 := encodeControl(kindPing, 0)
	defer putBuf(ping0)

	write := func(b []byte) error {
		if bw.Available() < len(b) { // this write reaches the socket
			if err := c.conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
				return err
			}
		}
		_, err := bw.Write(b)
		return err
	}
	flush := func() error {
		if err := c.conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
			return err
		}
		return bw.Flush()
	}

	wrote := false // since the last tick
	for {
		var err error
		select {
		case <-c.done:
			return
		case bp := <-c.sendq:
			if !c.hold() {
				putBuf(bp)
				return
			}
			err = write(*bp)
			putBuf(bp)
		drain:
			for err == nil {
				select {
				case bp = <-c.sendq:
					err = write(*bp)
					putBuf(bp)
				default:
					break drain
				}
			}
			if err == nil {
				err = flush()
			}
			wrote = true
		case <-ping.C:
			if wrote {
				wrote = false
				continue
			}
			if err = write(*ping0); err == nil {
				err = flush()
			}
		}
		if err != nil {
			c.fail(fmt.Errorf("write: %w", err))
			return
		}
	}
}
