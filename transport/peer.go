package transport

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
)

// Peer link errors.
var (
	// ErrPeerClosed: the local Peers was closed.
	ErrPeerClosed = errors.New("peer: closed")
	// ErrPeerUnavailable: no usable link to the peer (dial failed, in backoff,
	// or the link died with the call in flight; the call may or may not have run).
	ErrPeerUnavailable = errors.New("peer: unavailable")
	// ErrPeerNotSent accompanies ErrPeerUnavailable when no link could be
	// had at all: the request certainly never reached the peer, so any
	// request, even a non-idempotent one, may be retried.
	ErrPeerNotSent = errors.New("peer: not sent")
	// ErrPeerFrameTooLarge: a payload exceeds PeerConfig.MaxFrame.
	ErrPeerFrameTooLarge = errors.New("peer: frame too large")
	// ErrPeerUnknownMethod: no handler is registered for the method (server side;
	// it reaches the caller as a remote error with the code ErrorCode gives it).
	ErrPeerUnknownMethod = errors.New("peer: unknown method")
	// ErrPeerHandlerPanic: a handler panicked (server side, like ErrPeerUnknownMethod).
	ErrPeerHandlerPanic = errors.New("peer: handler panicked")
	// ErrPeerConfig: PeerConfig is invalid; the message names the field.
	ErrPeerConfig = errors.New("peer: invalid config")

	errPeerProtocol = errors.New("peer: protocol error")
)

// PeerRemoteError is the error a Call returns for a handler error when
// PeerConfig.CodeError is nil.
type PeerRemoteError struct {
	Code    uint16
	Message string
}

func (e *PeerRemoteError) Error() string {
	return fmt.Sprintf("peer: remote error %d: %s", e.Code, e.Message)
}

// PeerConfig configures Peers. Zero durations and sizes take the defaults of
// DefaultPeerConfig.
type PeerConfig struct {
	NodeID       string                                                   // sent in the handshake; the `from` of the remote's handlers
	Dial         func(ctx context.Context, addr string) (net.Conn, error) // node passes DialCluster(..., MuxPeer, ...)
	CallTimeout  time.Duration                                            // per Call/Send when ctx has no deadline; also bounds dial+handshake
	PingInterval time.Duration                                            // keepalive; no inbound bytes for 5*PingInterval kills a link
	MaxInFlight  int                                                      // per link: concurrently running non-inline handlers; beyond it the link stops reading
	MaxFrame     int                                                      // largest payload; larger inbound frames close the link
	Logger       *slog.Logger
	ErrorCode    func(error) uint16                  // handler error → wire code (nil: always 0)
	CodeError    func(code uint16, msg string) error // wire code → caller error (nil: *PeerRemoteError)
}

// DefaultPeerConfig returns production defaults; NodeID and Dial must still be set.
func DefaultPeerConfig() PeerConfig {
	return PeerConfig{
		CallTimeout:  5 * time.Second,
		PingInterval: time.Second,
		MaxInFlight:  1024,
		MaxFrame:     16 << 20,
	}
}

func (c PeerConfig) withDefaults() PeerConfig {
	d := DefaultPeerConfig()
	if c.CallTimeout == 0 {
		c.CallTimeout = d.CallTimeout
	}
	if c.PingInterval == 0 {
		c.PingInterval = d.PingInterval
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = d.MaxInFlight
	}
	if c.MaxFrame == 0 {
		c.MaxFrame = d.MaxFrame
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first invalid field. Dial is checked when a link is
// first needed, so a serve-only Peers may leave it nil.
func (c PeerConfig) Validate() error {
	switch {
	case c.NodeID == "":
		return fmt.Errorf("%w: NodeID is empty", ErrPeerConfig)
	case len(c.NodeID) > peerMaxNodeID:
		return fmt.Errorf("%w: NodeID longer than %d bytes", ErrPeerConfig, peerMaxNodeID)
	case c.CallTimeout < 0:
		return fmt.Errorf("%w: CallTimeout %v < 0", ErrPeerConfig, c.CallTimeout)
	case c.PingInterval < 0:
		return fmt.Errorf("%w: PingInterval %v < 0", ErrPeerConfig, c.PingInterval)
	case c.MaxInFlight < 0:
		return fmt.Errorf("%w: MaxInFlight %d < 0", ErrPeerConfig, c.MaxInFlight)
	case c.MaxFrame < 0 || c.MaxFrame > 1<<30:
		return fmt.Errorf("%w: MaxFrame %d outside [0, 1GiB]", ErrPeerConfig, c.MaxFrame)
	}
	return nil
}

// PeerHandler serves one method. from is the calling node's NodeID. payload is
// owned by the handler. For one-way frames the returned bytes are discarded
// and an error is only logged.
type PeerHandler func(ctx context.Context, from string, payload []byte) ([]byte, error)

const (
	peerSendQueue        = 1024 // frames waiting for a link's writer; callers block beyond it
	peerIOBuf            = 64 << 10
	peerHandshakeTimeout = 5 * time.Second
	peerMaxHandshakes    = 256 // inbound connections in the handshake at once
	peerBackoffMin       = 100 * time.Millisecond
	peerBackoffMax       = 2 * time.Second
	peerDeadIntervals    = 5 // link is dead after this many ping intervals without inbound bytes
)

type peerRoute struct {
	h      PeerHandler
	inline bool
}

// Peers holds persistent, multiplexed, pipelined links to other nodes and
// serves the links they open to us.
//
// Payload ownership: Call and Send copy the payload into the link's write
// buffer before they return, so the caller may reuse its slice at once.
// Response payloads and handler payloads are freshly allocated for the receiver.
type Peers struct {
	cfg    PeerConfig
	cfgErr error
	log    *slog.Logger

	routesMu sync.Mutex // serializes Handle's copy-on-write
	routes   atomic.Pointer[[256]peerRoute]

	ctx     context.Context // canceled by Close; parent of dials and handler contexts
	cancel  context.CancelFunc
	closing atomic.Bool
	once    sync.Once

	mu        sync.Mutex
	closed    bool
	clients   map[string]*peerClient // outgoing, by dialed address
	conns     map[*peerConn]struct{} // every live link, both directions
	listeners map[net.Listener]struct{}
	wg        sync.WaitGroup // every goroutine Peers starts

	handshakes chan struct{} // bounds inbound connections in the handshake
}

// NewPeers returns a Peers. An invalid cfg is reported by Serve, Call and Send.
func NewPeers(cfg PeerConfig) *Peers {
	cfgErr := cfg.Validate()
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	p := &Peers{
		cfg:        cfg,
		cfgErr:     cfgErr,
		log:        cfg.Logger.With("component", "peer", "node", cfg.NodeID),
		ctx:        ctx,
		cancel:     cancel,
		clients:    make(map[string]*peerClient),
		conns:      make(map[*peerConn]struct{}),
		listeners:  make(map[net.Listener]struct{}),
		handshakes: make(chan struct{}, peerMaxHandshakes),
	}
	p.routes.Store(new([256]peerRoute))
	return p
}

// Handle registers h for method, replacing any earlier handler. Register
// before Serve. inline=true runs h on the link's read goroutine in arrival
// order (for ordered one-way deliveries; h must not block long, since the
// link reads nothing else meanwhile). inline=false runs h in its own
// goroutine, at most MaxInFlight at once per link.
func (p *Peers) Handle(method uint8, h PeerHandler, inline bool) {
	p.routesMu.Lock()
	defer p.routesMu.Unlock()
	next := *p.routes.Load()
	next[method] = peerRoute{h: h, inline: inline}
	p.routes.Store(&next)
}

// Serve accepts links on l until Close, then returns nil. It closes l on return.
func (p *Peers) Serve(l net.Listener) error {
	defer l.Close()
	if p.cfgErr != nil {
		return p.cfgErr
	}
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
func (p *Peers) goOwned(f func()) bool {
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
func (p *Peers) accept(conn net.Conn) {
	stop := context.AfterFunc(p.ctx, func() { conn.Close() })
	br := bufio.NewReaderSize(conn, peerIOBuf)
	remote, err := func() (string, error) {
		if err := conn.SetDeadline(time.Now().Add(peerHandshakeTimeout)); err != nil {
			return "", err
		}
		remote, err := peerReadHello(br)
		if err != nil {
			return "", err
		}
		if err := peerWriteHello(conn, p.cfg.NodeID); err != nil {
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

// Call sends a request to the node at addr and waits for its response. If ctx
// has no deadline, CallTimeout applies; the remaining time travels with the
// request and bounds the remote handler's context.
func (p *Peers) Call(ctx context.Context, addr string, method uint8, payload []byte) ([]byte, error) {
	if len(payload) > p.cfg.MaxFrame {
		return nil, fmt.Errorf("%w: %d > %d bytes", ErrPeerFrameTooLarge, len(payload), p.cfg.MaxFrame)
	}
	ctx, cancel := p.callContext(ctx)
	defer cancel()
	c, err := p.link(ctx, addr)
	if err != nil {
		return nil, err
	}
	return c.call(ctx, method, payload)
}

// Send delivers a one-way frame to addr. Frames sent to the same addr arrive
// in the order Send was called while the link stays up; if the link dies,
// frames already queued are lost. It returns an error only if it could not
// hand the frame to a live link (dial failure, backoff, ctx, Close).
func (p *Peers) Send(ctx context.Context, addr string, method uint8, payload []byte) error {
	if len(payload) > p.cfg.MaxFrame {
		return fmt.Errorf("%w: %d > %d bytes", ErrPeerFrameTooLarge, len(payload), p.cfg.MaxFrame)
	}
	ctx, cancel := p.callContext(ctx)
	defer cancel()
	c, err := p.link(ctx, addr)
	if err != nil {
		return err
	}
	bp := peerEncodeOneway(method, payload)
	select {
	case c.sendq <- bp:
		return nil
	case <-c.done:
		peerPutBuf(bp)
		return c.deadErr()
	case <-ctx.Done():
		peerPutBuf(bp)
		return fmt.Errorf("peer send to %s: %w", addr, ctx.Err())
	}
}

func (p *Peers) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, p.cfg.CallTimeout)
}

// Close closes listeners and links, fails in-flight Calls with ErrPeerClosed,
// cancels handler contexts and waits for every goroutine Peers started
// (including handlers, so handlers must honour ctx). Frames still queued for
// sending are dropped. Idempotent.
func (p *Peers) Close() error {
	p.once.Do(func() {
		p.closing.Store(true)
		p.mu.Lock()
		p.closed = true
		ls := make([]net.Listener, 0, len(p.listeners))
		for l := range p.listeners {
			ls = append(ls, l)
		}
		cs := make([]*peerConn, 0, len(p.conns))
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
			c.fail(ErrPeerClosed)
		}
		p.cancel()
		p.wg.Wait()
	})
	return nil
}

// peerClient is the outgoing side towards one address: at most one live link
// and at most one dial in progress, shared by all callers.
type peerClient struct {
	addr    string
	mu      sync.Mutex
	link    *peerConn
	dialing chan struct{} // closed when the dial in progress ends
	lastErr error
	retryAt time.Time // no new dial before this after a failure
	backoff time.Duration
}

// Reset forgets addr's dial backoff, so the next call dials at once: the
// node learned by other means (gossip) that the peer is back.
func (p *Peers) Reset(addr string) {
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
func (p *Peers) link(ctx context.Context, addr string) (*peerConn, error) {
	if p.cfgErr != nil {
		return nil, p.cfgErr
	}
	if p.cfg.Dial == nil {
		return nil, fmt.Errorf("%w: Dial is nil", ErrPeerConfig)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrPeerClosed
	}
	pc := p.clients[addr]
	if pc == nil {
		pc = &peerClient{addr: addr}
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
				return nil, ErrPeerClosed
			}
			if wait := time.Until(pc.retryAt); wait > 0 {
				err := pc.lastErr
				pc.mu.Unlock()
				return nil, fmt.Errorf("%w: %w: %s: last dial failed, retry in %v: %v", ErrPeerUnavailable, ErrPeerNotSent, addr, wait.Round(time.Millisecond), err)
			}
			pc.dialing = make(chan struct{})
			if !p.goOwned(func() { p.dial(pc) }) {
				close(pc.dialing)
				pc.dialing = nil
				pc.mu.Unlock()
				return nil, ErrPeerClosed
			}
		}
		dialing := pc.dialing
		pc.mu.Unlock()
		select {
		case <-dialing:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: peer link to %s: %w", ErrPeerNotSent, addr, ctx.Err())
		}
	}
}

// dial establishes a link for pc in the background, so one caller's short
// ctx does not abort the dial other callers are waiting on.
func (p *Peers) dial(pc *peerClient) {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.CallTimeout)
	defer cancel()
	c, err := p.connect(ctx, pc)
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if err != nil {
		pc.lastErr = err
		pc.backoff = min(max(2*pc.backoff, peerBackoffMin), peerBackoffMax)
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

func (p *Peers) connect(ctx context.Context, pc *peerClient) (*peerConn, error) {
	conn, err := p.cfg.Dial(ctx, pc.addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", pc.addr, err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	br := bufio.NewReaderSize(conn, peerIOBuf)
	remote, err := func() (string, error) {
		dl, _ := ctx.Deadline()
		if err := conn.SetDeadline(dl); err != nil {
			return "", err
		}
		if err := peerWriteHello(conn, p.cfg.NodeID); err != nil {
			return "", err
		}
		remote, err := peerReadHello(br)
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

// peerResult is what a pending Call receives.
type peerResult struct {
	payload []byte
	err     error
}

// peerConn is one established link, in either direction. Its reader
// dispatches requests, one-way frames and responses; its writer drains sendq.
type peerConn struct {
	p      *Peers
	conn   net.Conn
	br     *bufio.Reader
	addr   string // dialed address, or the remote address for inbound links
	remote string // remote NodeID from the handshake
	client *peerClient

	sendq  chan *[]byte
	done   chan struct{} // closed when the link is dead
	once   sync.Once
	err    error // why the link died; set before done is closed
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	nextID  uint64
	pending map[uint64]chan peerResult

	sem      chan struct{}  // MaxInFlight slots for non-inline handlers
	handlers sync.WaitGroup // non-inline handlers; waited for by the reader
}

func (p *Peers) startConn(conn net.Conn, br *bufio.Reader, addr, remote string, pc *peerClient) (*peerConn, error) {
	ctx, cancel := context.WithCancel(p.ctx)
	c := &peerConn{
		p:       p,
		conn:    conn,
		br:      br,
		addr:    addr,
		remote:  remote,
		client:  pc,
		sendq:   make(chan *[]byte, peerSendQueue),
		done:    make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
		pending: make(map[uint64]chan peerResult),
		sem:     make(chan struct{}, p.cfg.MaxInFlight),
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		cancel()
		return nil, ErrPeerClosed
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

func (c *peerConn) isDead() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// fail kills the link once: every pending call fails at once instead of
// waiting for its timeout.
func (c *peerConn) fail(cause error) {
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
			ch <- peerResult{err: err} // buffered, one send per call
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
		} else {
			c.p.log.Warn("peer link down", "addr", c.addr, "remote", c.remote, "outbound", c.client != nil, "err", cause)
		}
	})
}

// deadErr is the error callers see for a dead link.
func (c *peerConn) deadErr() error {
	if c.p.closing.Load() {
		return ErrPeerClosed
	}
	return fmt.Errorf("%w: link to %s (%s): %v", ErrPeerUnavailable, c.addr, c.remote, c.err)
}

func (c *peerConn) call(ctx context.Context, method uint8, payload []byte) ([]byte, error) {
	ch := make(chan peerResult, 1)
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
	bp := peerEncodeRequest(method, id, timeoutMs, payload)
	select {
	case c.sendq <- bp:
	case res := <-ch: // link died before the frame was queued
		peerPutBuf(bp)
		return res.payload, res.err
	case <-ctx.Done():
		peerPutBuf(bp)
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
func (c *peerConn) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

func (c *peerConn) pendingLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

func (c *peerConn) readLoop() {
	err := c.readFrames()
	c.fail(err)
	c.handlers.Wait()
}

func (c *peerConn) readFrames() error {
	var hbuf [peerHeaderLen]byte
	dead := peerDeadIntervals * c.p.cfg.PingInterval
	maxBody := c.p.cfg.MaxFrame + peerBodyOverhead
	for {
		// Any frame, pings included, proves the link alive.
		if err := c.conn.SetReadDeadline(time.Now().Add(dead)); err != nil {
			return err
		}
		h, err := peerReadHeader(c.br, &hbuf, maxBody)
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
		case peerKindPing:
			pong := peerEncodeControl(peerKindPong, h.id)
			select {
			case c.sendq <- pong:
			default: // queue full: data is flowing, which keeps the peer's link alive anyway
				peerPutBuf(pong)
			}
		case peerKindPong:
		case peerKindResponse:
			if err := c.deliver(h.id, body); err != nil {
				return err
			}
		case peerKindRequest:
			if len(body) < 4 {
				return fmt.Errorf("%w: short request", errPeerProtocol)
			}
			timeoutMs := binary.BigEndian.Uint32(body[:4])
			if err := c.dispatch(h.method, h.id, true, timeoutMs, body[4:]); err != nil {
				return err
			}
		case peerKindOneway:
			if err := c.dispatch(h.method, 0, false, 0, body); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: frame kind %d", errPeerProtocol, h.kind)
		}
	}
}

func (c *peerConn) deliver(id uint64, body []byte) error {
	payload, isErr, code, msg, err := peerDecodeResponse(body)
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
		ch <- peerResult{err: c.p.remoteError(code, msg)}
	} else {
		ch <- peerResult{payload: payload}
	}
	return nil
}

func (p *Peers) remoteError(code uint16, msg string) error {
	if p.cfg.CodeError != nil {
		return p.cfg.CodeError(code, msg)
	}
	return &PeerRemoteError{Code: code, Message: msg}
}

// dispatch runs the handler for an inbound request or one-way frame. It
// blocks while MaxInFlight handlers run, which stops reading: TCP then pushes
// back on the sender.
func (c *peerConn) dispatch(method uint8, id uint64, isReq bool, timeoutMs uint32, payload []byte) error {
	r := c.p.routes.Load()[method]
	if r.h == nil {
		if isReq {
			c.respond(method, id, nil, fmt.Errorf("%w %d", ErrPeerUnknownMethod, method))
		} else {
			c.p.log.Debug("one-way frame for unknown method dropped", "method", method, "from", c.remote)
		}
		return nil
	}
	if r.inline {
		c.run(r.h, method, id, isReq, timeoutMs, payload)
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
		c.run(r.h, method, id, isReq, timeoutMs, payload)
	}()
	return nil
}

func (c *peerConn) run(h PeerHandler, method uint8, id uint64, isReq bool, timeoutMs uint32, payload []byte) {
	ctx := c.ctx
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
func (p *Peers) invoke(ctx context.Context, h PeerHandler, from string, method uint8, payload []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("peer handler panicked", "method", method, "from", from, "panic", r, "stack", string(debug.Stack()))
			out, err = nil, fmt.Errorf("%w: method %d: %v", ErrPeerHandlerPanic, method, r)
		}
	}()
	return h(ctx, from, payload)
}

func (c *peerConn) respond(method uint8, id uint64, out []byte, err error) {
	if err == nil && len(out) > c.p.cfg.MaxFrame {
		err = fmt.Errorf("%w: response %d > %d bytes", ErrPeerFrameTooLarge, len(out), c.p.cfg.MaxFrame)
	}
	var bp *[]byte
	if err != nil {
		var code uint16
		if c.p.cfg.ErrorCode != nil {
			code = c.p.cfg.ErrorCode(err)
		}
		bp = peerEncodeError(method, id, code, err.Error())
	} else {
		bp = peerEncodeResponse(method, id, out)
	}
	select {
	case <-c.done:
		peerPutBuf(bp)
		return
	default:
	}
	select {
	case c.sendq <- bp:
	case <-c.done:
		peerPutBuf(bp)
	}
}

// writeLoop is the link's only writer. It batches whatever is queued into one
// buffered write and flushes only when the queue is empty, so a burst of
// frames costs few syscalls; when idle it sends pings.
func (c *peerConn) writeLoop() {
	bw := bufio.NewWriterSize(c.conn, peerIOBuf)
	timeout := peerDeadIntervals * c.p.cfg.PingInterval
	ping := time.NewTicker(c.p.cfg.PingInterval)
	defer ping.Stop()
	ping0 := peerEncodeControl(peerKindPing, 0)
	defer peerPutBuf(ping0)

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
			err = write(*bp)
			peerPutBuf(bp)
		drain:
			for err == nil {
				select {
				case bp = <-c.sendq:
					err = write(*bp)
					peerPutBuf(bp)
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
