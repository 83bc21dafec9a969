package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

// gwConn is one client connection: a reader (the HTTP handler goroutine)
// and a writer goroutine joined by a bounded queue. It implements Sink.
type gwConn struct {
	g           *Gateway
	id          uint64
	ws          *websocket.Conn
	log         *slog.Logger
	headerToken string

	// user is written by the reader before the sink is handed to Hub.Hello
	// and never again, so the hub's reads need no lock.
	user string

	// ctx ends when the connection starts closing; it aborts a Hub.Hello
	// still in progress.
	ctx    context.Context
	cancel context.CancelFunc

	helloSeen atomic.Bool // first frame arrived: the hello timer is moot
	welcomed  atomic.Bool // Hub.Hello accepted: heartbeats may flow

	// closeBy (unix ns, 0 = open) bounds every write once a close was
	// requested, so a closing connection is gone within WriteTimeout plus
	// gwCloseWait. abandon makes the writer drop the batch in flight.
	closeBy atomic.Int64
	abandon atomic.Bool

	mu      sync.Mutex
	q       []gwItem // frames not yet taken by the writer
	pending int      // frames queued or being written; bounded by SendQueue
	closing bool     // close requested: no more frames accepted
	req     gwCloseReq

	wake       chan struct{} // cap 1: queue or close state changed
	readerDone chan struct{}
	writerDone chan struct{}
}

// gwCloseReq is the close a connection was asked for; the first one wins.
type gwCloseReq struct {
	code      int
	slug, msg string
	endpoints []string
}

func newGwConn(g *Gateway, ws *websocket.Conn, headerToken string) *gwConn {
	id := g.nextID.Add(1)
	ctx, cancel := context.WithCancel(context.Background())
	return &gwConn{
		g:           g,
		id:          id,
		ws:          ws,
		log:         g.log.With("conn", id),
		headerToken: headerToken,
		ctx:         ctx,
		cancel:      cancel,
		wake:        make(chan struct{}, 1),
		readerDone:  make(chan struct{}),
		writerDone:  make(chan struct{}),
	}
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
		c.mu.Unlock()
		c.afterCloseRequest()
		c.log.Info("slow consumer", "queue", c.g.cfg.SendQueue)
		return false
	}
	c.q = append(c.q, gwItem{seq: seq, frame: frame})
	c.pending++
	c.mu.Unlock()
	c.signal()
	return true
}

// Close implements Sink.
func (c *gwConn) Close(closeCode int, slug, msg string, endpoints []string) {
	if !gwValidCloseCode(closeCode) {
		c.log.Error("invalid close code, using 1011", "code", closeCode, "slug", slug)
		closeCode, slug = websocket.CloseInternalServerErr, gwCodeInternal
	}
	c.mu.Lock()
	first := c.beginCloseLocked(gwCloseReq{code: closeCode, slug: slug, msg: msg, endpoints: endpoints})
	c.mu.Unlock()
	if first {
		c.afterCloseRequest()
	}
}

// beginCloseLocked records the close request unless one exists already.
func (c *gwConn) beginCloseLocked(r gwCloseReq) bool {
	if c.closing {
		return false
	}
	c.closing = true
	c.req = r
	c.closeBy.Store(time.Now().Add(c.g.cfg.WriteTimeout).UnixNano())
	return true
}

func (c *gwConn) afterCloseRequest() {
	c.cancel()
	c.signal()
}

func (c *gwConn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

func (c *gwConn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// take moves the queued frames into buf for writing.
func (c *gwConn) take(buf []gwItem) ([]gwItem, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	buf = append(buf, c.q...)
	clear(c.q)
	c.q = c.q[:0]
	if cap(c.q) > 64 {
		c.q = nil // a burst's backing array is not kept by an idle connection
	}
	return buf, c.closing
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

// readLoop runs on the HTTP handler goroutine.
func (c *gwConn) readLoop() {
	defer c.g.wg.Done()
	accepted := c.serveReads()
	close(c.readerDone)
	<-c.writerDone
	c.g.unregister(c)
	if accepted {
		c.guard("Hub.Gone", func() { c.g.hub.Gone(c) })
	}
	c.log.Debug("disconnected")
}

// serveReads reads client frames until the connection fails or closes, and
// reports whether Hub.Hello accepted the connection.
func (c *gwConn) serveReads() (accepted bool) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("panic in connection reader", "panic", r, "stack", string(debug.Stack()))
			c.Close(websocket.CloseInternalServerErr, gwCodeInternal, "internal error", nil)
		}
	}()
	cfg := &c.g.cfg
	readWait := cfg.PingInterval * 5 / 2
	// Until the first frame, the hello timer (in the writer) decides; the read
	// deadline only backs it up, so pongs must not pull it in.
	helloDeadline := time.Now().Add(cfg.HelloTimeout + gwCloseWait)
	refresh := func() error {
		d := time.Now().Add(readWait)
		if !c.helloSeen.Load() && d.Before(helloDeadline) {
			d = helloDeadline
		}
		return c.ws.SetReadDeadline(d)
	}
	_ = refresh()
	c.ws.SetPongHandler(func(string) error { return refresh() })

	for {
		mt, r, err := c.ws.NextReader()
		if err != nil {
			c.logReadEnd(err)
			return accepted
		}
		c.helloSeen.Store(true)
		_ = refresh()
		if c.isClosing() {
			continue // waiting for the client's close; NextReader discards the rest
		}
		f, ok, err := c.readFrame(mt, r)
		if err != nil {
			c.logReadEnd(err)
			return accepted
		}
		if !ok {
			continue // refused: a close is on its way
		}

		switch {
		case !accepted && f.Type != TypeHello:
			c.Close(CloseProtocol, CodeProtocol, "first frame must be hello", nil)
		case !accepted:
			accepted = c.hello(f)
			_ = refresh() // Hello may have taken a while
		case f.Type == TypeHello:
			c.Close(CloseProtocol, CodeProtocol, "duplicate hello", nil)
		case f.Type == TypePing:
			c.Send(0, gwAppendPong(nil, f.ID))
		case f.Type == TypeAck:
			c.g.hub.Ack(c, f.Seq)
		}
	}
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
	if token == "" {
		c.Close(CloseUnauthorized, CodeUnauthorized, "missing token", nil)
		return false
	}
	user, err := c.g.auth(token)
	if err == nil && user == "" {
		err = errors.New("token names no user")
	}
	if err != nil {
		c.log.Debug("hello unauthorized", "err", err)
		c.Close(CloseUnauthorized, CodeUnauthorized, "invalid or expired token", nil)
		return false
	}
	if c.isClosing() {
		return false // hello timeout or CloseAll won the race
	}
	c.user = user

	ctx, cancel := context.WithTimeout(c.ctx, c.g.cfg.HelloTimeout)
	err = c.g.hub.Hello(ctx, c, user, f.Resume)
	cancel()
	if err != nil {
		var he *HelloError
		if errors.As(err, &he) {
			c.Close(he.Close, he.Code, he.Message, he.Endpoints)
		} else {
			c.log.Warn("hello failed", "user", user, "err", err)
			c.Close(CloseTryAgainLater, CodeUnavailable, "session registry unavailable; try again", nil)
		}
		return false
	}
	c.welcomed.Store(true)
	c.log.Debug("welcomed", "user", user)
	return true
}

func (c *gwConn) logReadEnd(err error) {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		c.log.Debug("client closed", "code", ce.Code)
		return
	}
	c.log.Debug("read ended", "err", err)
}

// writeLoop owns every write to the socket except gorilla's automatic
// control replies, and tears the connection down when it returns.
func (c *gwConn) writeLoop() {
	defer c.g.wg.Done()
	defer close(c.writerDone)
	defer func() {
		c.mu.Lock()
		c.closing = true // Send fails from now on
		c.q = nil
		c.mu.Unlock()
		c.cancel()
		_ = c.ws.Close()
	}()
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("panic in connection writer", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	if err := c.writeFrames(); err != nil {
		c.log.Debug("write ended", "err", err)
	}
}

func (c *gwConn) writeFrames() error {
	cfg := &c.g.cfg
	helloTimer := time.NewTimer(cfg.HelloTimeout)
	defer helloTimer.Stop()
	pinger := time.NewTicker(cfg.PingInterval)
	defer pinger.Stop()
	heartbeat := time.NewTimer(cfg.Heartbeat)
	defer heartbeat.Stop()

	var (
		lastWrite = time.Now()
		highest   uint64 // highest seq written, reported by heartbeats
		batch     []gwItem
		scratch   [48]byte
	)
	write := func(frame []byte) error {
		if err := c.ws.SetWriteDeadline(c.writeDeadline()); err != nil {
			return err
		}
		if err := c.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
			return err
		}
		lastWrite = time.Now()
		return nil
	}

	for {
		select {
		case <-c.wake:
		case <-c.readerDone:
			if !c.isClosing() {
				return nil // the client left or the socket failed
			}
			// A panicking reader asked for a close: still send it.
		case <-helloTimer.C:
			if !c.helloSeen.Load() {
				c.Close(CloseHelloTimeout, CodeHelloTimeout, fmt.Sprintf("no hello within %v", cfg.HelloTimeout), nil)
			}
			continue
		case <-pinger.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, c.writeDeadline()); err != nil {
				return fmt.Errorf("ping: %w", err)
			}
			continue
		case now := <-heartbeat.C:
			if !c.welcomed.Load() {
				heartbeat.Reset(cfg.Heartbeat) // no stream position to report yet
				continue
			}
			if idle := now.Sub(lastWrite); idle < cfg.Heartbeat {
				heartbeat.Reset(cfg.Heartbeat - idle)
				continue
			}
			if err := write(AppendHeartbeatFrame(scratch[:0], highest)); err != nil {
				return fmt.Errorf("heartbeat: %w", err)
			}
			heartbeat.Reset(cfg.Heartbeat)
			continue
		}

		for {
			var closing bool
			batch, closing = c.take(batch[:0])
			if len(batch) == 0 {
				if closing {
					return c.sendClose()
				}
				break
			}
			for _, it := range batch {
				if c.abandon.Load() {
					break
				}
				if err := write(it.frame); err != nil {
					return fmt.Errorf("frame: %w", err)
				}
				highest = max(highest, it.seq)
			}
			c.written(len(batch))
			clear(batch) // drop frame references while idle
		}
	}
}

// sendClose writes the error frame and close frame of the recorded close
// request, then waits briefly for the client's close.
func (c *gwConn) sendClose() error {
	c.mu.Lock()
	r := c.req
	c.mu.Unlock()
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
	c.log.Debug("closing", "code", r.code, "slug", r.slug)
	t := time.NewTimer(gwCloseWait)
	defer t.Stop()
	select {
	case <-c.readerDone:
	case <-t.C:
	}
	return nil
}

// guard runs a hub callback and turns its panic into a log line.
func (c *gwConn) guard(what string, f func()) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("panic in "+what, "panic", r, "stack", string(debug.Stack()))
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
