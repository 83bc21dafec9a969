package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// gwItem is one queued outgoing frame.
type gwItem struct {
	seq   uint64
	frame []byte
}

// gwMaxPooledBuf keeps oversized read buffers out of the pool.
const gwMaxPooledBuf = 256 << 10

// gwReadBufPool holds read buffers between frames, so an idle connection
// holds none.
var gwReadBufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// gwEpoch anchors gwNow, so connection times fit an int64 and stay
// monotonic.
var gwEpoch = time.Now()

// gwNow is the monotonic time since gwEpoch in nanoseconds.
func gwNow() int64 { return int64(time.Since(gwEpoch)) }

// gwConn is one client connection. It implements Sink.
//
// An idle connection costs one goroutine, the reader, and one runtime timer;
// that is what makes tens of thousands of them affordable. The writer
// goroutine exists only while there is something to write: the first frame
// queued (or a due ping, heartbeat or close) starts it, and it returns once
// the queue is empty. At most one writer runs at a time (writing, under mu),
// so frames go out in the order they were queued. Pings, heartbeats and the
// hello deadline are driven by one time.AfterFunc timer (tick) that only
// sets flags and starts the writer.
//
// The reader owns the connection's lifetime: it holds the gateway's
// WaitGroup count until the connection is torn down, waits for a running
// writer, and calls Hub.Gone. Writers are counted too, and start only under
// mu while the reader has not finished, so the count never rises from zero.
type gwConn struct {
	g  *Gateway
	id uint64
	ws *websocket.Conn

	// headerToken is the bearer token of the upgrade request, kept until
	// the hello is handled.
	headerToken string

	// user is written by the reader before the sink is handed to Hub.Hello
	// and never again, so the hub's reads need no lock.
	user string

	helloSeen atomic.Bool // first frame arrived: the hello timer is moot
	welcomed  atomic.Bool // Hub.Hello accepted: heartbeats may flow

	// closeBy (unix ns, 0 = open) bounds every write once a close was
	// requested, so a closing connection is gone within WriteTimeout plus
	// gwCloseWait. abandon makes the writer drop the batch in flight.
	closeBy atomic.Int64
	abandon atomic.Bool

	// lastWrite (gwNow) is when the last text frame was written; a
	// heartbeat is due Heartbeat after it.
	lastWrite atomic.Int64

	// highest is the highest seq written, reported by heartbeats. Only the
	// running writer touches it; writers hand over under mu.
	highest uint64

	mu          sync.Mutex
	q           []gwItem // frames not yet taken by the writer
	pending     int      // frames queued or being written; bounded by SendQueue
	closing     bool     // close requested or connection over: no more frames accepted
	req         gwCloseReq
	helloCancel context.CancelFunc // aborts a Hub.Hello in progress
	writing     bool               // a writer goroutine is running
	noWriter    bool               // no writer may start again: write failed, close sent or reader done
	writerExit  chan struct{}      // made by the finishing reader to wait for the running writer
	pingDue     bool
	beatDue     bool
	closeSent   bool  // the close frame is out: the next tick cuts TCP
	timerOff    bool  // the reader finished: tick does nothing
	nextPing    int64 // gwNow of the next WebSocket ping
	helloBy     int64 // gwNow by which the first frame must arrive; set once, before any goroutine
	timer       *time.Timer
}

// gwCloseReq is the close a connection was asked for; the first one wins.
// A zero code means the connection ended without a close to send.
type gwCloseReq struct {
	code      int
	slug, msg string
	endpoints []string
}

func newGwConn(g *Gateway, ws *websocket.Conn, headerToken string) *gwConn {
	c := &gwConn{
		g:           g,
		id:          g.nextID.Add(1),
		ws:          ws,
		headerToken: headerToken,
	}
	cfg := &g.cfg
	now := gwNow()
	c.lastWrite.Store(now)
	c.mu.Lock()
	c.nextPing = now + int64(cfg.PingInterval)
	c.helloBy = now + int64(cfg.HelloTimeout)
	c.timer = time.AfterFunc(min(cfg.HelloTimeout, cfg.PingInterval, cfg.Heartbeat), c.tick)
	c.mu.Unlock()
	return c
}

// ID implements Sink.
func (c *gwConn) ID() uint64 { return c.id }

// User implements Sink.
func (c *gwConn) User() string { return c.user }

// Send implements Sink.
func (c *gwConn) Send(seq uint64, frame []byte) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	if c.pending >= c.g.cfg.SendQueue {
		c.beginCloseLocked(gwCloseReq{code: CloseSlowConsumer, slug: CodeSlowConsumer, msg: "send queue overflow"})
		// The client is the problem: what it has not taken is dropped (it
		// resumes from its last seq) and only the error and close follow.
		c.abandon.Store(true)
		c.pending -= len(c.q)
		clear(c.q)
		c.q = c.q[:0]
		cancel := c.helloCancel
		c.mu.Unlock()
		if cancel != nil {
			cancel()
		}
		c.g.log.Info("slow consumer", "conn", c.id, "queue", c.g.cfg.SendQueue)
		return false
	}
	c.q = append(c.q, gwItem{seq: seq, frame: frame})
	c.pending++
	c.startWriterLocked()
	c.mu.Unlock()
	return true
}

// Close implements Sink.
func (c *gwConn) Close(closeCode int, slug, msg string, endpoints []string) {
	if !gwValidCloseCode(closeCode) {
		c.g.log.Error("invalid close code, using 1011", "conn", c.id, "code", closeCode, "slug", slug)
		closeCode, slug = websocket.CloseInternalServerErr, gwCodeInternal
	}
	c.mu.Lock()
	first := c.beginCloseLocked(gwCloseReq{code: closeCode, slug: slug, msg: msg, endpoints: endpoints})
	cancel := c.helloCancel
	c.mu.Unlock()
	if first && cancel != nil {
		cancel()
	}
}

// beginCloseLocked records the close request unless one exists already, and
// starts the writer that will send it.
func (c *gwConn) beginCloseLocked(r gwCloseReq) bool {
	if c.closing {
		return false
	}
	c.closing = true
	c.req = r
	c.closeBy.Store(time.Now().Add(c.g.cfg.WriteTimeout).UnixNano())
	c.startWriterLocked()
	return true
}

// startWriterLocked starts the writer unless one runs or none may.
func (c *gwConn) startWriterLocked() {
	if c.writing || c.noWriter {
		return
	}
	c.writing = true
	c.g.wg.Add(1) // the reader's count is still held: never an Add from zero
	go c.writeLoop()
}

func (c *gwConn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// tick runs on the connection's timer: it marks pings and heartbeats due
// and starts the writer for them, enforces the hello deadline, cuts TCP
// once the close wait is over, and re-arms itself.
func (c *gwConn) tick() {
	cfg := &c.g.cfg
	now := gwNow()
	c.mu.Lock()
	switch {
	case c.timerOff:
		c.mu.Unlock()
		return
	case c.closeSent:
		// The client did not answer our close in time.
		c.timerOff = true
		c.mu.Unlock()
		_ = c.ws.NetConn().Close()
		return
	case c.closing:
		c.mu.Unlock() // nothing more to schedule until the close is out
		return
	}
	helloLate := !c.helloSeen.Load() && now >= c.helloBy
	// A ping a little early rides on the heartbeat's wake-up instead of
	// needing its own; pings only keep the 2.5-interval read deadline fed.
	if now >= c.nextPing-int64(cfg.PingInterval/8) {
		c.pingDue = true
		c.nextPing = now + int64(cfg.PingInterval)
	}
	beatAt := now + int64(cfg.Heartbeat) // before the welcome: look again later
	if c.welcomed.Load() {
		if at := c.lastWrite.Load() + int64(cfg.Heartbeat); at > now {
			beatAt = at
		} else {
			c.beatDue = true
		}
	}
	next := min(c.nextPing, beatAt)
	if !c.helloSeen.Load() && !helloLate {
		next = min(next, c.helloBy)
	}
	c.timer.Reset(time.Duration(next - now))
	if c.pingDue || c.beatDue {
		c.startWriterLocked()
	}
	c.mu.Unlock()
	if helloLate {
		c.Close(CloseHelloTimeout, CodeHelloTimeout, fmt.Sprintf("no hello within %v", cfg.HelloTimeout), nil)
	}
}

func (c *gwConn) written(n int) {
	c.mu.Lock()
	c.pending -= n
	c.mu.Unlock()
}

// writeDeadline is WriteTimeout from now, or the close deadline if sooner.
func (c *gwConn) writeDeadline() time.Time {
	d := time.Now().Add(c.g.cfg.WriteTimeout)
	if by := c.closeBy.Load(); by != 0 && by < d.UnixNano() {
		return time.Unix(0, by)
	}
	return d
}

// readLoop waits for the next client frame, handles it, and hands the
// connection on to a fresh readLoop goroutine; when the connection ends it
// tears it down. The first one starts after the upgrade, so the net/http
// handler goroutine with its deep stack and buffers is gone while the
// connection idles.
//
// The handoff is what keeps an idle connection's stack small: decoding,
// authentication, Hub.Hello and logging grow a goroutine's stack to 8 KiB or
// more, and the runtime never shrinks a stack below four times what its
// parked goroutine uses, which for a reader blocked in gorilla and net is
// over 2 KiB. A fresh goroutine that only waits stays at 4 KiB. The price is
// one goroutine start per client frame; clients send few (hello, acks,
// pings).
func (c *gwConn) readLoop(accepted bool) {
	defer c.g.wg.Done()
	for {
		mt, r, err := c.ws.NextReader()
		if err != nil {
			c.logReadEnd(err)
			break
		}
		c.helloSeen.Store(true)
		_ = c.refreshReadDeadline()
		if c.isClosing() {
			continue // waiting for the client's close; NextReader discards the rest
		}
		var stop bool
		if accepted, stop = c.handleFrame(accepted, mt, r); stop {
			break
		}
		c.g.wg.Add(1) // our own count is still held
		go c.readLoop(accepted)
		return
	}
	c.finish()
	c.g.unregister(c)
	if accepted {
		c.guard("Hub.Gone", func() { c.g.hub.Gone(c) })
	}
	c.g.log.Debug("disconnected", "conn", c.id)
}

// refreshReadDeadline moves the read deadline to 2.5 ping intervals from
// now. Until the first frame, the hello timer (in tick) decides; the read
// deadline only backs it up, so pongs must not pull it in.
func (c *gwConn) refreshReadDeadline() error {
	d := time.Now().Add(c.g.cfg.PingInterval * 5 / 2)
	if !c.helloSeen.Load() {
		if hd := gwEpoch.Add(time.Duration(c.helloBy) + gwCloseWait); d.Before(hd) {
			d = hd
		}
	}
	return c.ws.SetReadDeadline(d)
}

// onPong is the WebSocket pong handler.
func (c *gwConn) onPong(string) error { return c.refreshReadDeadline() }

// finish tears the connection down after the reader ended: no writer may
// start any more, a close already requested is still sent by the running
// writer (bounded by its deadline), and the socket is closed.
func (c *gwConn) finish() {
	c.mu.Lock()
	wasClosing := c.closing
	if !c.closing {
		// The client left or the socket failed: nothing more can be sent.
		c.closing = true
		c.abandon.Store(true)
		c.pending -= len(c.q)
		c.q = nil
	}
	c.noWriter = true
	c.timerOff = true
	c.timer.Stop()
	var wait chan struct{}
	if c.writing {
		wait = make(chan struct{})
		c.writerExit = wait
	}
	c.mu.Unlock()
	if !wasClosing {
		_ = c.ws.Close() // a writer stuck on a dead peer fails at once
	}
	if wait != nil {
		<-wait
	}
	_ = c.ws.Close()
}

// handleFrame reads, decodes and acts on one client message, and reports
// whether Hub.Hello has accepted the connection by now, and stop when the
// reader must end: the connection failed, or a panic was turned into a
// close.
func (c *gwConn) handleFrame(welcomed bool, mt int, r io.Reader) (accepted, stop bool) {
	accepted = welcomed
	defer func() {
		if p := recover(); p != nil {
			c.g.log.Error("panic in connection reader", "conn", c.id, "panic", p, "stack", string(debug.Stack()))
			c.Close(websocket.CloseInternalServerErr, gwCodeInternal, "internal error", nil)
			stop = true
		}
	}()
	f, ok, err := c.readFrame(mt, r)
	if err != nil {
		c.logReadEnd(err)
		return accepted, true
	}
	if !ok {
		return accepted, false // refused: a close is on its way
	}
	switch {
	case !accepted && f.Type != TypeHello:
		c.Close(CloseProtocol, CodeProtocol, "first frame must be hello", nil)
	case !accepted:
		accepted = c.hello(f)
		_ = c.refreshReadDeadline() // Hello may have taken a while
	case f.Type == TypeHello:
		c.Close(CloseProtocol, CodeProtocol, "duplicate hello", nil)
	case f.Type == TypePing:
		c.Send(0, gwAppendPong(nil, f.ID))
	case f.Type == TypeAck:
		c.g.hub.Ack(c, f.Seq)
	}
	return accepted, false
}

// readFrame reads and decodes one client message. A message that breaks
// §3 is answered by requesting the matching close and reported as !ok; err
// is a connection failure.
func (c *gwConn) readFrame(mt int, r io.Reader) (f ClientFrame, ok bool, err error) {
	if mt != websocket.TextMessage {
		c.Close(CloseProtocol, CodeProtocol, "binary frames are not supported", nil)
		return f, false, nil
	}
	limit := c.g.cfg.MaxFrameBytes
	buf := gwReadBufPool.Get().(*bytes.Buffer)
	defer gwPutReadBuf(buf)
	buf.Reset()
	// Reading one byte past the limit tells an oversized frame apart without
	// gorilla's read limit, which would close (1009) before our error frame.
	n, err := buf.ReadFrom(io.LimitReader(r, int64(limit)+1))
	switch {
	case err != nil:
		return f, false, err
	case n > int64(limit):
		c.Close(CloseTooLarge, CodeTooLarge, fmt.Sprintf("frame exceeds %d bytes", limit), nil)
		return f, false, nil
	case !utf8.Valid(buf.Bytes()):
		c.Close(CloseInvalidUTF8, CodeInvalidUTF8, "text frame is not valid UTF-8", nil)
		return f, false, nil
	}
	// DecodeClientFrame copies what it keeps, so buf can go back to the pool.
	if f, err = DecodeClientFrame(buf.Bytes()); err != nil {
		c.Close(CloseProtocol, CodeProtocol, err.Error(), nil)
		return f, false, nil
	}
	return f, true, nil
}

// hello authenticates the hello frame f and hands the connection to the hub.
func (c *gwConn) hello(f ClientFrame) bool {
	token := f.Token
	if token == "" {
		token = c.headerToken
	}
	c.headerToken = "" // not needed again; do not keep it for the connection's life
	if token == "" {
		c.Close(CloseUnauthorized, CodeUnauthorized, "missing token", nil)
		return false
	}
	user, err := c.g.auth(token)
	if err == nil && user == "" {
		err = errors.New("token names no user")
	}
	if err != nil {
		c.g.log.Debug("hello unauthorized", "conn", c.id, "err", err)
		c.Close(CloseUnauthorized, CodeUnauthorized, "invalid or expired token", nil)
		return false
	}
	c.user = user

	// The context exists only while Hello runs, so an idle connection does
	// not keep one; a close request cancels it through helloCancel.
	ctx, cancel := context.WithTimeout(context.Background(), c.g.cfg.HelloTimeout)
	defer cancel()
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false // hello timeout or CloseAll won the race
	}
	c.helloCancel = cancel
	c.mu.Unlock()
	err = c.g.hub.Hello(ctx, c, user, f.Resume)
	c.mu.Lock()
	c.helloCancel = nil
	c.mu.Unlock()
	if err != nil {
		var he *HelloError
		if errors.As(err, &he) {
			c.Close(he.Close, he.Code, he.Message, he.Endpoints)
		} else {
			c.g.log.Warn("hello failed", "conn", c.id, "user", user, "err", err)
			c.Close(CloseTryAgainLater, CodeUnavailable, "session registry unavailable; try again", nil)
		}
		return false
	}
	c.welcomed.Store(true)
	c.g.log.Debug("welcomed", "conn", c.id, "user", user)
	return true
}

func (c *gwConn) logReadEnd(err error) {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		c.g.log.Debug("client closed", "conn", c.id, "code", ce.Code)
		return
	}
	c.g.log.Debug("read ended", "conn", c.id, "err", err)
}

// writeLoop writes what is queued or due, in order, and returns when there
// is nothing left. It owns every write to the socket except gorilla's
// automatic control replies. After the close frame or a write error no
// writer starts again.
func (c *gwConn) writeLoop() {
	defer c.g.wg.Done()
	var idle, closeSent bool
	defer func() {
		if r := recover(); r != nil {
			c.g.log.Error("panic in connection writer", "conn", c.id, "panic", r, "stack", string(debug.Stack()))
		}
		if !idle {
			c.stopWriting(closeSent)
		}
	}()
	var err error
	idle, closeSent, err = c.writeFrames()
	if err != nil {
		c.g.log.Debug("write ended", "conn", c.id, "err", err)
	}
}

// writeFrames writes until nothing is queued or due. It reports idle when
// it left with the connection open (the writer slot is already released),
// and closeSent when the close frame went out.
func (c *gwConn) writeFrames() (idle, closeSent bool, err error) {
	var batch []gwItem
	for {
		c.mu.Lock()
		batch = append(batch[:0], c.q...)
		clear(c.q)
		c.q = c.q[:0]
		if cap(c.q) > 64 {
			c.q = nil // a burst's backing array is not kept by an idle connection
		}
		ping, beat := c.pingDue, c.beatDue
		c.pingDue, c.beatDue = false, false
		if len(batch) == 0 && !ping && !beat {
			if !c.closing {
				c.writing = false
				c.mu.Unlock()
				return true, false, nil
			}
			r := c.req
			c.mu.Unlock()
			if r.code == 0 {
				return false, false, nil // the reader ended the connection: nothing to say
			}
			if err := c.sendClose(r); err != nil {
				return false, false, err
			}
			return false, true, nil
		}
		c.mu.Unlock()

		if ping {
			if err := c.ws.WriteControl(websocket.PingMessage, nil, c.writeDeadline()); err != nil {
				return false, false, fmt.Errorf("ping: %w", err)
			}
		}
		for _, it := range batch {
			if c.abandon.Load() {
				break
			}
			if err := c.write(it.frame); err != nil {
				return false, false, fmt.Errorf("frame: %w", err)
			}
			c.highest = max(c.highest, it.seq)
		}
		c.written(len(batch))
		clear(batch) // drop frame references
		// The tick found the connection idle; frames written since make
		// the heartbeat moot.
		if beat && c.welcomed.Load() && gwNow()-c.lastWrite.Load() >= int64(c.g.cfg.Heartbeat) {
			var scratch [48]byte
			if err := c.write(AppendHeartbeatFrame(scratch[:0], c.highest)); err != nil {
				return false, false, fmt.Errorf("heartbeat: %w", err)
			}
		}
	}
}

// write writes one text frame under the write deadline.
func (c *gwConn) write(frame []byte) error {
	if err := c.ws.SetWriteDeadline(c.writeDeadline()); err != nil {
		return err
	}
	if err := c.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		return err
	}
	c.lastWrite.Store(gwNow())
	return nil
}

// stopWriting ends writing for good. After a clean close frame the timer
// gives the client gwCloseWait to answer before it cuts TCP; otherwise the
// socket is closed now, which also ends the reader.
func (c *gwConn) stopWriting(closeSent bool) {
	c.mu.Lock()
	c.closing = true // Send fails from now on
	c.q = nil
	c.writing = false
	c.noWriter = true
	if c.writerExit != nil {
		close(c.writerExit)
		c.writerExit = nil
	}
	wait := closeSent && !c.timerOff
	if wait {
		c.closeSent = true
		c.timer.Reset(gwCloseWait)
	}
	cancel := c.helloCancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if !wait {
		_ = c.ws.Close()
	}
}

// sendClose writes the error frame and close frame of close request r.
func (c *gwConn) sendClose(r gwCloseReq) error {
	deadline := c.writeDeadline()
	if r.code != CloseNormal {
		if err := c.ws.SetWriteDeadline(deadline); err != nil {
			return err
		}
		if err := c.ws.WriteMessage(websocket.TextMessage, EncodeError(r.slug, r.msg, r.endpoints)); err != nil {
			return fmt.Errorf("error frame: %w", err)
		}
	}
	reason := r.slug
	if len(reason) > 123 { // control frame payload limit minus the code
		reason = strings.ToValidUTF8(reason[:123], "")
	}
	if err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(r.code, reason), deadline); err != nil {
		return fmt.Errorf("close frame: %w", err)
	}
	c.g.log.Debug("closing", "conn", c.id, "code", r.code, "slug", r.slug)
	return nil
}

// guard runs a hub callback and turns its panic into a log line.
func (c *gwConn) guard(what string, f func()) {
	defer func() {
		if r := recover(); r != nil {
			c.g.log.Error("panic in "+what, "conn", c.id, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	f()
}

func gwPutReadBuf(b *bytes.Buffer) {
	if b.Cap() <= gwMaxPooledBuf {
		gwReadBufPool.Put(b)
	}
}

// gwAppendPong appends a pong frame echoing the ping id verbatim; id was
// validated as JSON by DecodeClientFrame.
func gwAppendPong(dst []byte, id []byte) []byte {
	if len(id) == 0 {
		return append(dst, `{"type":"pong"}`...)
	}
	dst = append(dst, `{"type":"pong","id":`...)
	dst = append(dst, id...)
	return append(dst, '}')
}
