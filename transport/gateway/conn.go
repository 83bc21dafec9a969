package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"

	"github.com/switchboard/switchboard/protocol"
)

// item is one queued outgoing message frame.
type item struct {
	seq   uint64
	frame []byte
	// written, when set, is told once the frame was written (nil) or
	// will never be (why): a traced delivery's span ends there.
	written func(error)
}

// errNotWritten tells a traced frame's written that the connection
// dropped it: closed or failed before the writer got to it.
var errNotWritten = errors.New("connection closed before the frame was written")

// notify tells the traced items of q what became of them.
func notify(q []item, err error) {
	for _, it := range q {
		if it.written != nil {
			it.written(err)
		}
	}
}

// conn is one client connection. It implements Sink.
//
// An idle connection has no goroutine of its own: the gateway's poller
// calls onReadable when the socket has bytes (poller_linux.go), the
// gateway's sweeper drives its timers (hello timeout, pings, heartbeats,
// the read deadline), and a writer goroutine exists only while there is
// something to write. What an idle connection costs is this struct, the
// socket and, between frames, nothing else.
//
// Three kinds of goroutine touch a connection, each at most one at a time:
// the reader (the poller, a hello goroutine continuing the reads, or the
// fallback reader goroutine) owns rd; the writer owns the socket's write
// side; the sweeper only sets flags. The connection is finished (Hub.Gone,
// the gateway's WaitGroup) once it is dead and neither reader nor writer is
// running.
type conn struct {
	g           *Gateway
	id          uint64
	nc          net.Conn
	headerToken string // from the upgrade request, kept until the hello

	// user is written by the reader before the sink is handed to Hub.Hello
	// and never again, so the hub's reads need no lock.
	user string
	// expires is when the connection's token expires (unix ns; 0: never):
	// set by the hello, moved later by each valid refresh, read by the
	// sweeper.
	expires atomic.Int64
	// chans are the connection's channel subscriptions and what its token
	// allows (channels.go); only the reader's turn touches them.
	chans channelState

	born      int64        // monoNow() at accept: the hello deadline counts from it
	lastRead  atomic.Int64 // monoNow() when bytes last arrived
	helloSeen atomic.Bool  // first frame arrived: the hello timer is moot
	welcomed  atomic.Bool  // Hub.Hello accepted: heartbeats may flow

	rd        wsReader        // owned by the running reader
	frameRate *rate.Limiter   // owned by the running reader; nil: no limit
	poll      *poller         // the poller watching this socket; nil for a fallback reader
	rc        syscall.RawConn // the socket's descriptor, for the poller
	// tls: the poller reads this connection through tls.Conn, which may
	// hold records already taken from the socket; unread is set (by the
	// running reader) while a turn has not ended on an empty read.
	tls, unread bool
	armCh       chan struct{} // fallback reader only: one more read (reader.go)

	mu          sync.Mutex
	q           []item // message frames not yet taken by the writer
	pending     int    // frames queued or being written; bounded by SendQueue
	ctl         []byte // encoded pongs, one per ping, for the writer
	pongs       int    // pongs in ctl; bounded by maxQueuedPongs
	pingDue     bool
	beatDue     bool
	lastPing    int64 // monoNow() of the last ping
	lastData    int64 // monoNow() of the last text frame written: heartbeats fill silences
	highest     uint64
	closing     bool // close requested: no more frames accepted
	req         closeReq
	closeBy     int64 // monoNow() deadline for writes once closing
	abandon     bool  // drop queued frames (slow consumer, client closed)
	peerClosed  bool  // the client sent its close frame
	closeSent   bool
	writing     bool          // a writer goroutine runs
	wake        chan struct{} // the running writer lingers on it; nil otherwise
	reading     bool          // a reader (poller callback or offReader goroutine) runs
	busy        bool          // an offReader goroutine holds the reader's turn: the socket is not read
	userCounted bool          // counted in the gateway's per-user connections (under g.mu)
	accepted    bool          // Hub.Hello accepted the sink: Gone is owed
	dead        bool          // the socket is closed or closing
	finished    bool
	helloCancel context.CancelFunc
	deadCh      chan struct{} // made on demand; closed when dead
}

// closeReq is the close a connection was asked for; the first one wins.
type closeReq struct {
	code      protocol.CloseCode
	slug, msg string // slug "": no error frame (an echo of the client's close)
	endpoints []string
}

// closeReqFor is the close that err calls for: the code and slug the
// contract maps err to, err's text as the message.
func closeReqFor(err error, endpoints []string) closeReq {
	return closeReq{code: protocol.CloseOf(err), slug: protocol.SlugOf(err), msg: err.Error(), endpoints: endpoints}
}

// errorFrame reports whether an error frame precedes the close frame: not
// for an echo of the client's close, 1000, nor a connection that failed at
// the WebSocket layer, whose close reason is the only explanation.
func (r closeReq) errorFrame() bool {
	return r.code != protocol.CloseNormal && r.slug != "" && !r.code.Failed()
}

// errSlowConsumer closes a connection whose send queue overflowed.
var errSlowConsumer = protocol.Errorf(protocol.ErrSlowConsumer, "send queue overflow")

// monoEpoch anchors monoNow, so connection times fit an int64 and stay
// monotonic.
var monoEpoch = time.Now()

// monoNow is the monotonic time since monoEpoch in nanoseconds.
func monoNow() int64 { return int64(time.Since(monoEpoch)) }

func newConn(g *Gateway, nc net.Conn, headerToken string) *conn {
	now := monoNow()
	c := &conn{
		g:           g,
		id:          g.nextID.Add(1),
		nc:          nc,
		headerToken: headerToken,
		born:        now,
		lastPing:    now,
		lastData:    now,
	}
	c.lastRead.Store(now)
	c.rd.limit = g.cfg.MaxFrameBytes
	if r := g.cfg.FrameRate; r > 0 {
		c.frameRate = rate.NewLimiter(rate.Limit(r), burstOf(r))
	}
	return c
}

// ID implements Sink.
func (c *conn) ID() uint64 { return c.id }

// User implements Sink.
func (c *conn) User() string { return c.user }

// Send implements Sink.
func (c *conn) Send(seq uint64, frame []byte) bool {
	return c.SendThen(seq, frame, nil)
}

// SendThen implements Notifier.
func (c *conn) SendThen(seq uint64, frame []byte, written func(error)) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	if c.pending >= c.g.cfg.SendQueue {
		c.beginCloseLocked(closeReqFor(errSlowConsumer, nil))
		// The client is the problem: what it has not taken is dropped (it
		// resumes from its last seq) and only the error and close follow.
		c.dropQueueLocked()
		c.kickLocked()
		c.mu.Unlock()
		c.g.log.Info("slow consumer", "conn", c.id, "queue", c.g.cfg.SendQueue)
		return false
	}
	c.q = append(c.q, item{seq: seq, frame: frame, written: written})
	c.pending++
	c.kickLocked()
	c.mu.Unlock()
	return true
}

// Close implements Sink.
func (c *conn) Close(err error, endpoints []string) {
	c.mu.Lock()
	if c.beginCloseLocked(closeReqFor(err, endpoints)) {
		c.kickLocked()
	}
	c.mu.Unlock()
}

// beginCloseLocked records the close request unless one exists already,
// and stops a hello in progress. A connection that failed at the WebSocket
// layer closes at once: what was queued is dropped.
func (c *conn) beginCloseLocked(r closeReq) bool {
	if c.closing {
		return false
	}
	c.closing = true
	c.req = r
	if r.code == protocol.CloseSlowConsumer {
		// Its own queue here, or a stream it could not keep up with.
		c.g.slowConsumers.Add(1)
	}
	c.closeBy = monoNow() + int64(c.g.cfg.WriteTimeout)
	if c.helloCancel != nil {
		c.helloCancel()
	}
	if r.code.Failed() {
		c.dropQueueLocked()
	}
	return true
}

func (c *conn) dropQueueLocked() {
	c.abandon = true
	notify(c.q, errNotWritten)
	c.pending -= len(c.q)
	clear(c.q)
	c.q = nil
}

// kickLocked starts the writer if there is something to write and none
// runs: a turn of the gateway's writer pool, or a writer goroutine
// (writer.go). The writer is counted by the reading/writing flags, not the
// gateway's WaitGroup: the connection's own count outlives it.
func (c *conn) kickLocked() {
	if c.dead {
		return // teardown woke a lingering writer itself
	}
	if len(c.q) == 0 && len(c.ctl) == 0 && !c.pingDue && !c.beatDue && !(c.closing && !c.closeSent) {
		// Nothing to write (the sweeper kicks on every visit): a
		// lingering writer is not woken, or it would never return.
		return
	}
	if c.writing {
		if c.wake != nil {
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
		return
	}
	c.writing = true
	if c.pooledLocked() {
		c.g.writers.push(c)
		return
	}
	go c.writeLoop(nil)
}

// tick runs the connection's timers; the sweeper calls it periodically
// with the monotonic (monoNow) and the wall clock (unix ns) times.
func (c *conn) tick(now, wall int64) {
	cfg := &c.g.cfg
	var expired string
	c.mu.Lock()
	helloSeen := c.helloSeen.Load()
	switch {
	case c.dead:
	case !helloSeen && now-c.born > int64(cfg.HelloTimeout+c.g.closeWait+cfg.WriteTimeout):
		expired = "no hello, and the hello timeout's close was not taken" // backstop
	case !helloSeen && now-c.born > int64(cfg.HelloTimeout):
		if c.beginCloseLocked(closeReqFor(protocol.Errorf(protocol.ErrHelloTimeout, "no hello within %v", cfg.HelloTimeout), nil)) {
			c.kickLocked()
		}
	case helloSeen && !c.busy && now-c.lastRead.Load() > int64(cfg.PingInterval)*5/2:
		// Before the first frame the hello timeout decides instead, and
		// while a hello or refresh runs the socket is not read.
		expired = "read timeout: no frame or pong within 2.5 ping intervals"
	case c.closing:
		if now > c.closeBy+int64(c.g.closeWait) {
			expired = "close not completed in time"
		}
	case c.welcomed.Load() && c.tokenExpired(wall):
		c.beginCloseLocked(closeReqFor(errTokenExpired, nil))
		c.kickLocked()
	default:
		if now-c.lastPing >= int64(cfg.PingInterval) {
			c.pingDue = true
		}
		if c.welcomed.Load() && now-c.lastData >= int64(cfg.Heartbeat) {
			c.beatDue = true
			if !c.writing && len(c.q) == 0 {
				c.q = nil // a heartbeat's worth of quiet: the kept queue array goes
			}
		}
		c.kickLocked()
	}
	c.mu.Unlock()
	if expired != "" {
		c.g.log.Debug("connection expired", "conn", c.id, "why", expired)
		c.teardown()
	}
}

// onReadable reads what the socket has and acts on every complete frame.
// read returns errWouldBlock once the socket is drained. The reader stops
// (without re-arming) while a hello is being served: the hello goroutine
// continues from there.
func (c *conn) onReadable(buf []byte, read func([]byte) (int, error)) {
	c.mu.Lock()
	if c.dead || c.reading {
		c.mu.Unlock()
		return
	}
	c.reading = true
	c.mu.Unlock()

	paused, failed := false, error(nil)
	c.unread = true
	func() {
		defer c.recoverReader()
		for i := 0; i < readsPerWake; i++ {
			n, err := read(buf)
			if errors.Is(err, errWouldBlock) {
				c.unread = false
			}
			if n > 0 {
				c.lastRead.Store(monoNow())
				c.rd.feed(buf[:n])
				if paused = c.process(); paused {
					return // the hello goroutine owns rd now
				}
				c.rd.keep()
			}
			if err != nil {
				if !errors.Is(err, errWouldBlock) {
					failed = err
				}
				return
			}
		}
	}()
	if failed != nil {
		c.logReadEnd(failed)
		c.teardown()
	}
	if !paused {
		c.doneReading()
	}
}

// readsPerWake bounds the reads per readiness event, so one busy client
// cannot hold a poller.
const readsPerWake = 4

// doneReading ends a reader's turn: the socket is watched again, or, if
// the connection died meanwhile, it may finish now.
func (c *conn) doneReading() {
	c.mu.Lock()
	c.reading = false
	if !c.dead {
		c.armLocked()
		c.mu.Unlock()
		return
	}
	c.finishLocked()
}

// armLocked asks for the next readiness event; for a TLS connection that
// may hold unread records, it starts another turn instead.
func (c *conn) armLocked() {
	if c.tls && c.unread {
		go c.tlsTurn()
		return
	}
	if c.poll != nil {
		if err := c.poll.arm(c); err != nil {
			c.g.log.Debug("poller arm failed", "conn", c.id, "err", err)
			go c.teardown()
		}
		return
	}
	select {
	case c.armCh <- struct{}{}:
	default:
	}
}

// recoverReader turns a panic while reading into a 1011 close.
func (c *conn) recoverReader() {
	if r := recover(); r != nil {
		c.g.log.Error("panic in connection reader", "conn", c.id, "panic", r, "stack", string(debug.Stack()))
		c.Close(errInternal, nil)
	}
}

// process acts on every complete event in rd. It returns true when it
// handed the reader's turn to an offReader goroutine.
func (c *conn) process() (paused bool) {
	for {
		ev, ok, err := c.rd.next()
		if n := c.rd.takeFrames(); n > 0 && c.frameRate != nil && !c.frameRate.AllowN(time.Now(), n) {
			c.g.refused(LimitFrameRate)
			c.frameRate = nil // the reader's own: once over is enough
			c.Close(protocol.Errorf(protocol.ErrRateLimited, "more than %g frames per second", c.g.cfg.FrameRate), nil)
		}
		if err != nil {
			// A wsViolation: the connection fails (1002, 1003, 1007, 1009).
			c.Close(err, nil)
			continue // rd skips or discards what follows
		}
		if !ok {
			return false
		}
		switch ev.kind {
		case wsPing:
			c.queuePong(ev.payload)
		case wsPong:
			// lastRead is all a pong is for.
		case wsClose:
			c.peerClose(protocol.CloseCode(ev.code))
			return false
		case wsMessage:
			c.helloSeen.Store(true) // pongs do not count: a client must say hello
			if c.handleMessage(ev.payload) {
				return true
			}
		}
	}
}

// handleMessage acts on one client text message; true means a hello
// goroutine now holds the reader's turn.
func (c *conn) handleMessage(payload []byte) (paused bool) {
	c.mu.Lock()
	closing, accepted := c.closing, c.accepted
	c.mu.Unlock()
	if closing {
		return false // waiting for the client's close
	}
	f, err := protocol.DecodeClientFrame(payload)
	if err != nil {
		c.Close(err, nil)
		return false
	}
	switch {
	case !accepted && c.user == "" && f.Type == protocol.TypeHello:
		c.startHello(f)
		return true
	case !accepted:
		c.Close(protocol.Errorf(protocol.ErrBadRequest, "first frame must be hello"), nil)
	case f.Type == protocol.TypeHello:
		c.Close(protocol.Errorf(protocol.ErrBadRequest, "duplicate hello"), nil)
	case f.Type == protocol.TypeRefresh:
		// The Authenticator may block (a key fetch): not on the poller.
		c.offReader(func() { c.refresh(f.Token) })
		return true
	case f.Type == protocol.TypePing:
		c.Send(0, protocol.AppendPong(nil, f.ID))
	case f.Type == protocol.TypeAck:
		c.guard("Hub.Ack", func() { c.g.hub.Ack(c, f.Seq) })
	case f.Type == protocol.TypeSubscribe, f.Type == protocol.TypeUnsubscribe, f.Type == protocol.TypePresence:
		return c.channelFrame(f)
	}
	return false
}

// maxQueuedPongs bounds the pongs waiting for the writer. Every ping gets
// its own pong, but a client that pings faster than it reads them would
// grow ctl without bound while the writer waits on its socket: past this
// many it is flooding, and is closed as over a rate limit.
const maxQueuedPongs = 128

// errPingFlood closes a connection with maxQueuedPongs pongs unwritten.
var errPingFlood = protocol.Errorf(protocol.ErrRateLimited, "pings faster than their pongs can be written")

// queuePong queues the pong that answers a ping with payload, ahead of
// message frames.
func (c *conn) queuePong(payload []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	if c.pongs >= maxQueuedPongs {
		c.beginCloseLocked(closeReqFor(errPingFlood, nil))
		c.kickLocked()
		return
	}
	c.ctl = wsAppendFrame(c.ctl, wsOpPong, payload)
	c.pongs++
	c.kickLocked()
}

// peerClose handles the client's close frame: it completes our close
// handshake, or starts one that echoes the client's code.
func (c *conn) peerClose(code protocol.CloseCode) {
	c.g.log.Debug("client closed", "conn", c.id, "code", code)
	c.mu.Lock()
	c.peerClosed = true
	if c.closeSent {
		c.mu.Unlock()
		c.teardown()
		return
	}
	if code == wsCloseNoStatus {
		code = protocol.CloseNormal
	}
	if !c.closing {
		c.beginCloseLocked(closeReq{code: code})
	}
	// Nobody reads what was queued any more; the echo goes out at once.
	c.dropQueueLocked()
	c.req.code = code
	c.req.slug, c.req.msg = "", ""
	c.kickLocked()
	c.mu.Unlock()
}

// startHello serves the hello off the reader: authentication and
// Hub.Hello may take a Raft commit or a takeover, which must not hold the
// poller.
func (c *conn) startHello(f protocol.ClientFrame) {
	ctx, cancel := context.WithTimeout(context.Background(), c.g.cfg.HelloTimeout)
	c.mu.Lock()
	c.helloCancel = cancel
	if c.closing {
		cancel()
	}
	c.mu.Unlock()
	c.offReader(func() {
		defer cancel()
		accepted := c.hello(ctx, f)
		c.mu.Lock()
		c.helloCancel = nil
		c.accepted = accepted
		c.headerToken = ""
		c.mu.Unlock()
		if accepted {
			c.welcomed.Store(true)
		}
	})
}

// offReader runs work, which may block, on a goroutine that holds the
// reader's turn meanwhile: the socket is not read until work returns, so
// frames are still acted on in order and a client cannot pile up such
// work. Then the frames that came with the one that asked for it are
// processed (after a refused hello only the client's close matters among
// them), and reading resumes.
func (c *conn) offReader(work func()) {
	c.mu.Lock()
	c.busy = true
	c.mu.Unlock()
	c.rd.keep() // the frames after this one wait in memory the reader owns
	go func() {
		paused := false
		func() {
			defer c.recoverReader()
			func() {
				defer func() {
					// The client's pongs waited in the socket meanwhile: the
					// read deadline counts from now.
					c.lastRead.Store(monoNow())
					c.mu.Lock()
					c.busy = false
					c.mu.Unlock()
				}()
				work()
			}()
			if paused = c.process(); !paused {
				c.rd.keep()
			}
		}()
		if !paused {
			c.doneReading()
		}
	}()
}

// hello authenticates the hello frame f and hands the connection to the hub.
func (c *conn) hello(ctx context.Context, f protocol.ClientFrame) bool {
	token := f.Token
	if token == "" {
		token = c.headerToken
	}
	if token == "" {
		c.Close(protocol.Errorf(protocol.ErrUnauthorized, "missing token"), nil)
		return false
	}
	id, err := c.g.auth(token)
	if err == nil && id.User == "" {
		err = errors.New("token names no user")
	}
	if err != nil {
		c.g.log.Debug("hello unauthorized", "conn", c.id, "err", err)
		c.Close(protocol.Errorf(protocol.ErrUnauthorized, "invalid or expired token"), nil)
		return false
	}
	if ctx.Err() != nil {
		// Usually CloseAll or the hello timeout won the race and this
		// Close changes nothing.
		c.Close(protocol.Errorf(protocol.ErrUnavailable, "hello took too long; try again"), nil)
		return false
	}
	user := id.User
	c.user = user
	c.expires.Store(unixNano(id.Expires))
	c.chans.allowed = id.Channels
	if err := c.g.countUser(c); err != nil {
		c.Close(err, nil)
		return false
	}
	err = c.g.hub.Hello(ctx, c, user, f.Resume)
	if err != nil {
		c.g.log.Debug("hello failed", "conn", c.id, "user", user, "err", err)
		c.Close(err, nil)
		return false
	}
	c.g.log.Debug("welcomed", "conn", c.id, "user", user)
	for _, s := range f.Subscriptions {
		c.subscribe(ctx, s)
	}
	return true
}

// errTokenExpired closes a connection whose token expired without a
// valid refresh.
var errTokenExpired = protocol.Errorf(protocol.ErrTokenExpired, "token expired; refresh it before it expires")

// tokenExpired reports whether the connection's token has expired at
// wall (unix ns).
func (c *conn) tokenExpired(wall int64) bool {
	exp := c.expires.Load()
	return exp != 0 && wall >= exp
}

// unixNano is t in unix ns, 0 for the zero time (no expiry).
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// refresh replaces the connection's token with token if it names the same
// user and expires later, and answers refreshed; otherwise it answers an
// unauthorized error frame and the connection keeps its token.
func (c *conn) refresh(token string) {
	var why string
	id, err := c.g.auth(token)
	switch cur := c.expires.Load(); {
	case token == "":
		why = "refresh without a token"
	case err != nil:
		c.g.log.Debug("refresh refused", "conn", c.id, "err", err)
		why = "invalid or expired token"
	case id.User != c.user:
		why = "the token names another user"
	case cur == 0 || !id.Expires.IsZero() && id.Expires.UnixNano() <= cur:
		why = "the token does not expire later than the current one"
	default:
		c.expires.Store(unixNano(id.Expires))
		c.chans.allowed = id.Channels // for subscriptions from now on
		exp := int64(0)
		if !id.Expires.IsZero() {
			exp = id.Expires.Unix()
		}
		c.Send(0, protocol.EncodeRefreshed(exp))
		return
	}
	refused := protocol.Errorf(protocol.ErrUnauthorized, "refresh refused: %s; the connection keeps its token", why)
	c.Send(0, protocol.EncodeError(protocol.SlugOf(refused), refused.Error(), nil))
}

func (c *conn) logReadEnd(err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		c.g.log.Debug("client went away", "conn", c.id)
		return
	}
	c.g.log.Debug("read ended", "conn", c.id, "err", err)
}

// awaitPeerClose waits briefly for the client's close frame after ours:
// cutting TCP earlier risks a reset that discards the error frame still in
// flight.
func (c *conn) awaitPeerClose() {
	c.mu.Lock()
	if c.deadCh == nil {
		c.deadCh = make(chan struct{})
		if c.dead {
			close(c.deadCh)
		}
	}
	ch := c.deadCh
	c.mu.Unlock()
	t := time.NewTimer(c.g.closeWait)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

// teardown closes the socket; the connection finishes once its reader and
// writer have noticed. It is idempotent.
func (c *conn) teardown() {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	c.dead = true
	c.closing = true // Send fails from now on
	c.dropQueueLocked()
	c.ctl, c.pongs = nil, 0
	if c.helloCancel != nil {
		c.helloCancel()
	}
	if c.deadCh != nil {
		close(c.deadCh)
	}
	if c.armCh != nil {
		close(c.armCh) // the fallback reader returns
	}
	if c.wake != nil {
		select {
		case c.wake <- struct{}{}: // a lingering writer returns
		default:
		}
	}
	if c.poll != nil {
		c.poll.remove(c) // before the close, so the descriptor cannot be reused under it
	}
	c.mu.Unlock()
	_ = closeSocket(c.nc)
	c.mu.Lock()
	c.finishLocked()
}

// closeSocket closes nc's socket at once. For a TLS connection that is
// the socket under it: tls.Conn.Close first writes a close_notify alert,
// which waits up to 5 s on a client that stopped reading, and the
// sweeper tears connections down on its own goroutine. The WebSocket
// close handshake has already ended the conversation.
func closeSocket(nc net.Conn) error {
	if tc, ok := nc.(interface{ NetConn() net.Conn }); ok {
		return tc.NetConn().Close()
	}
	return nc.Close()
}

// finishLocked completes a dead connection once nobody uses it any more:
// it leaves the gateway and Hub.Gone is called if Hub.Hello accepted it.
// It unlocks mu.
func (c *conn) finishLocked() {
	if !c.dead || c.reading || c.writing || c.finished {
		c.mu.Unlock()
		return
	}
	c.finished = true
	accepted := c.accepted
	c.mu.Unlock()
	c.g.log.Debug("disconnected", "conn", c.id)
	if !accepted {
		c.g.unregister(c)
		c.g.wg.Done()
		return
	}
	// Not on the caller's goroutine, which may be the poller: Gone takes
	// the stream's lock, and no hub call may stall every connection's
	// reads. The connection counts until Gone has returned.
	go func() {
		defer c.g.wg.Done()
		c.guard("Hub.Gone", func() { c.g.hub.Gone(c) })
		c.g.unregister(c)
	}()
}

// guard runs a hub callback and turns its panic into a log line and a
// 1011 close.
func (c *conn) guard(what string, f func()) {
	defer func() {
		if r := recover(); r != nil {
			c.g.log.Error("panic in "+what, "conn", c.id, "panic", r, "stack", string(debug.Stack()))
			c.Close(errInternal, nil)
		}
	}()
	f()
}
