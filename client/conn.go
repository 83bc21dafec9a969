package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/switchboard/switchboard/protocol"
)

const (
	// closeGrace bounds writing the closing 1000 frame on Close.
	closeGrace = time.Second
	// defaultIdleTimeout is the read deadline when the server announces no
	// heartbeat interval, so that a dead peer is still noticed eventually.
	defaultIdleTimeout = time.Minute
)

// conn is one WebSocket connection. Reads happen only on the run goroutine;
// writes (hello, pings, refreshes, channel requests) are serialized by
// writeMu.
type conn struct {
	ws      *websocket.Conn
	writeMu sync.Mutex
	done    chan struct{} // closed when the connection is over
	refresh *refresher    // keeps the token fresh (refresh.go)

	mu    sync.Mutex
	pings map[uint64]chan struct{}
	// inHello are the channels the hello subscribed; the others are
	// subscribed once welcomed.
	inHello map[string]bool
}

func (cn *conn) write(b []byte, timeout time.Duration) error {
	cn.writeMu.Lock()
	defer cn.writeMu.Unlock()
	if err := cn.ws.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	return cn.ws.WriteMessage(websocket.TextMessage, b)
}

func (cn *conn) expectPong(id uint64) <-chan struct{} {
	ch := make(chan struct{}, 1)
	cn.mu.Lock()
	cn.pings[id] = ch
	cn.mu.Unlock()
	return ch
}

func (cn *conn) forgetPong(id uint64) {
	cn.mu.Lock()
	delete(cn.pings, id)
	cn.mu.Unlock()
}

func (cn *conn) pong(id uint64) {
	cn.mu.Lock()
	ch := cn.pings[id]
	cn.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default: // a duplicate pong
		}
	}
}

// helloFrame builds the hello for the current resume state. With a session
// it resumes it; without one it asks for the stream from lastSeq when
// offline messages are wanted, a position was preset, or a 4011 reset the
// state (fresh).
func helloFrame(token, session string, lastSeq uint64, resumeOffline, fresh bool) protocol.ClientFrame {
	f := protocol.ClientFrame{Type: protocol.TypeHello, Token: token}
	switch {
	case session != "":
		f.Resume = &protocol.Resume{Session: session, Seq: lastSeq}
	case resumeOffline || fresh || lastSeq > 0:
		f.Resume = &protocol.Resume{Seq: lastSeq}
	}
	return f
}

// connect runs one connection to ep, from dial to its end.
func (c *Client) connect(ep string) (out outcome) {
	token, err := c.cfg.Token()
	if err != nil {
		out.err = fmt.Errorf("%w: %w", ErrToken, err)
		return out
	}
	ws, resp, err := c.dialer.DialContext(c.ctx, ep, nil)
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			err = fmt.Errorf("%w: upgrade answered 401: %w", ErrUnauthorized, err)
		}
		out.err = fmt.Errorf("client: dial %s: %w", ep, err)
		return out
	}
	cn := &conn{ws: ws, done: make(chan struct{}), pings: make(map[uint64]chan struct{})}
	cn.refresh = c.newRefresher(ep, cn, token)

	// Close must interrupt a blocked read; this goroutine says goodbye with
	// 1000 (so the server detaches now rather than at a heartbeat timeout)
	// and closes the socket.
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-c.ctx.Done():
			msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "client closed")
			_ = ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
			_ = ws.Close()
		case <-stop:
		}
	}()
	defer func() {
		close(stop)
		<-stopped
		_ = ws.Close()
		cn.refresh.close() // after ws.Close, which ends a write in progress
		c.mu.Lock()
		if c.cur == cn {
			c.cur = nil
		}
		c.mu.Unlock()
		close(cn.done)
	}()

	c.mu.Lock()
	session := c.session
	c.mu.Unlock()
	hello := helloFrame(token, session, c.lastSeq.Load(), c.cfg.ResumeOffline, c.freshResume)
	hello.Subscriptions = c.subscriptions()
	cn.inHello = make(map[string]bool, len(hello.Subscriptions))
	for _, s := range hello.Subscriptions {
		cn.inHello[s.Channel] = true
	}
	out.resumeSent = hello.Resume != nil && (hello.Resume.Session != "" || hello.Resume.Seq > 0)
	b, err := json.Marshal(hello)
	if err != nil {
		out.err = fmt.Errorf("client: encode hello: %w", err)
		return out
	}
	if err := cn.write(b, c.cfg.DialTimeout); err != nil {
		out.err = fmt.Errorf("client: send hello to %s: %w", ep, err)
		return out
	}
	c.readLoop(ep, cn, hello.Resume, &out)
	return out
}

// readLoop reads frames until the connection fails, filling out.
func (c *Client) readLoop(ep string, cn *conn, sent *protocol.Resume, out *outcome) {
	ws := cn.ws
	ws.SetReadLimit(c.cfg.MaxFrameBytes)
	var (
		idle       time.Duration // read deadline once welcomed: 2.5 heartbeats
		welcomedAt time.Time
		errFrame   *protocol.ErrorFrame
	)
	handshakeDeadline := time.Now().Add(c.cfg.DialTimeout)
	ws.SetPingHandler(func(data string) error {
		// A server ping is a sign of life too. The handler runs inside
		// ReadMessage on this goroutine, so reading idle is safe.
		if idle > 0 {
			_ = ws.SetReadDeadline(time.Now().Add(idle))
		}
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(c.cfg.DialTimeout))
		var ne net.Error
		if errors.Is(err, websocket.ErrCloseSent) || (errors.As(err, &ne) && ne.Timeout()) {
			return nil // as gorilla's default handler: not fatal for reading
		}
		return err
	})
	defer func() {
		if out.welcomed {
			out.uptime = time.Since(welcomedAt)
		}
	}()

	for {
		deadline := handshakeDeadline
		if idle > 0 {
			deadline = time.Now().Add(idle)
		}
		if err := ws.SetReadDeadline(deadline); err != nil {
			out.err = fmt.Errorf("client: read from %s: %w", ep, err)
			return
		}
		typ, data, err := ws.ReadMessage()
		if err != nil {
			c.readError(err, idle, errFrame, out)
			return
		}
		if typ != websocket.TextMessage {
			out.err = fmt.Errorf("%w: binary frame", ErrProtocol)
			return
		}
		if m, ok := protocol.ParseMessage(data); ok {
			if !out.welcomed {
				out.err = fmt.Errorf("%w: message before welcome", ErrProtocol)
				return
			}
			if m.Channel != "" {
				if err := c.deliverChannel(m); err != nil {
					out.err = err
					return
				}
				continue
			}
			if err := c.deliverMessage(m); err != nil {
				out.err = err
				return
			}
			continue
		}
		frameType, err := protocol.FrameType(data)
		if err != nil {
			out.err = fmt.Errorf("%w: undecodable frame: %w", ErrProtocol, err)
			return
		}
		switch frameType {
		case protocol.TypeWelcome:
			if out.welcomed {
				out.err = fmt.Errorf("%w: second welcome", ErrProtocol)
				return
			}
			var w protocol.Welcome
			if err := json.Unmarshal(data, &w); err != nil {
				out.err = fmt.Errorf("%w: undecodable welcome: %w", ErrProtocol, err)
				return
			}
			idle = c.onWelcome(ep, cn, w, sent)
			out.welcomed, welcomedAt = true, time.Now()
			cn.refresh.welcomed()
		case protocol.TypeRefreshed:
			var f protocol.Refreshed
			if err := json.Unmarshal(data, &f); err != nil {
				out.err = fmt.Errorf("%w: undecodable refreshed: %w", ErrProtocol, err)
				return
			}
			cn.refresh.refreshed(f)
		case protocol.TypeMessage:
			if !out.welcomed {
				out.err = fmt.Errorf("%w: message before welcome", ErrProtocol)
				return
			}
			var m protocol.Message
			if err := json.Unmarshal(data, &m); err != nil {
				out.err = fmt.Errorf("%w: undecodable message: %w", ErrProtocol, err)
				return
			}
			if m.Channel != "" {
				if err := c.onChannelFrame(frameType, data); err != nil {
					out.err = err
					return
				}
				continue
			}
			if err := c.deliverMessage(m); err != nil {
				out.err = err
				return
			}
		case protocol.TypeSubscribed, protocol.TypeUnsubscribed, protocol.TypeJoin, protocol.TypeLeave, protocol.TypePresence:
			if err := c.onChannelFrame(frameType, data); err != nil {
				out.err = err
				return
			}
		case protocol.TypeHeartbeat:
			// Its arrival has already moved the read deadline.
		case protocol.TypePong:
			var p protocol.Pong
			var id uint64
			if json.Unmarshal(data, &p) == nil && json.Unmarshal(p.ID, &id) == nil {
				cn.pong(id)
			}
		case protocol.TypeError:
			var f protocol.ErrorFrame
			if err := json.Unmarshal(data, &f); err != nil {
				out.err = fmt.Errorf("%w: undecodable error frame: %w", ErrProtocol, err)
				return
			}
			var about struct {
				Channel string `json:"channel"`
			}
			if json.Unmarshal(data, &about) == nil && about.Channel != "" {
				// A subscription's error: the connection goes on.
				if err := c.onChannelFrame(frameType, data); err != nil {
					out.err = err
					return
				}
				continue
			}
			if cn.refresh.refused(f) {
				continue // the refresh's answer: the connection goes on
			}
			errFrame = &f
			c.log.Warn("server error frame", "endpoint", ep, "code", f.Code, "message", f.Message)
		default:
			// Unknown types are skipped so that servers can add frames.
			c.log.Debug("ignoring unknown frame", "endpoint", ep, "type", frameType)
		}
	}
}

// readError records in out why a read failed.
func (c *Client) readError(err error, idle time.Duration, errFrame *protocol.ErrorFrame, out *outcome) {
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce) && ce.Code == websocket.CloseAbnormalClosure:
		// Not a close frame: the connection just dropped (gorilla reports 1006).
		out.err = fmt.Errorf("client: connection dropped: %w", err)
	case errors.As(err, &ce):
		e := &CloseError{Code: ce.Code, Reason: ce.Text}
		if errFrame != nil {
			e.ErrorCode, e.Message = errFrame.Code, errFrame.Message
			out.drainTo = c.validEndpoints(errFrame.Endpoints)
		}
		out.err, out.closeCode = e, ce.Code
	case errors.As(err, &ne) && ne.Timeout() && idle > 0:
		out.err = fmt.Errorf("%w: nothing received for %v", ErrHeartbeatTimeout, idle)
	case errors.As(err, &ne) && ne.Timeout():
		out.err = fmt.Errorf("%w: no welcome within %v", ErrHandshakeTimeout, c.cfg.DialTimeout)
	default:
		out.err = fmt.Errorf("client: read: %w", err)
	}
}

// onWelcome records the session and resume position and returns the read
// idle timeout for the connection.
func (c *Client) onWelcome(ep string, cn *conn, w protocol.Welcome, sent *protocol.Resume) time.Duration {
	resumeAsked := sent != nil && (sent.Session != "" || sent.Seq > 0)
	prev := c.lastSeq.Load()

	c.mu.Lock()
	c.session, c.node, c.cur = w.Session, w.Node, cn
	// Subscriptions made after the hello went out: from now on Subscribe
	// writes its own frame.
	var late []*Subscription
	for ch, s := range c.subs {
		if !cn.inHello[ch] {
			late = append(late, s)
		}
	}
	c.mu.Unlock()
	for _, s := range late {
		b, _ := json.Marshal(protocol.NewSubscribe(s.request()))
		_ = cn.write(b, c.cfg.DialTimeout) // a failed write ends the connection
	}
	c.freshResume = false

	ev := Event{Endpoint: ep, Node: w.Node, Session: w.Session}
	switch {
	case !w.Resumed:
		// The server does not replay: continue from its position.
		c.lastSeq.Store(w.Seq)
		ev.Seq = w.Seq
		if resumeAsked {
			c.log.Warn("resume refused, continuity lost", "endpoint", ep, "node", w.Node, "had_seq", prev, "seq", w.Seq)
			lost := ev
			lost.Kind = EventContinuityLost
			lost.Err = fmt.Errorf("%w: resume from seq %d refused by node %s", ErrContinuityLost, prev, w.Node)
			c.emit(lost)
		}
		ev.Kind = EventConnected
	case w.Seq < prev:
		// Keep prev: delivering seqs again would break G3, and the anomaly
		// is reported rather than hidden.
		err := fmt.Errorf("%w: resumed at stream seq %d below delivered seq %d", ErrSequenceRegression, w.Seq, prev)
		c.log.Error("server bug", "endpoint", ep, "node", w.Node, "err", err)
		c.emit(Event{Kind: EventSequenceAnomaly, Endpoint: ep, Node: w.Node, Session: w.Session, Seq: prev, Err: err})
		ev.Kind, ev.Seq = EventResumed, prev
	default:
		ev.Kind, ev.Seq = EventConnected, prev
		if resumeAsked {
			ev.Kind = EventResumed
		}
	}
	c.eps.connected(ep, c.validEndpoints(w.Endpoints))
	c.log.Info("welcome", "endpoint", ep, "node", w.Node, "session", w.Session, "resumed", w.Resumed, "seq", ev.Seq)
	c.emit(ev)
	if c.cfg.OnWelcome != nil {
		c.cfg.OnWelcome(w)
	}
	if !c.readyClosed {
		c.readyClosed = true
		close(c.ready)
	}
	if w.HeartbeatMS <= 0 {
		return defaultIdleTimeout
	}
	return time.Duration(w.HeartbeatMS) * time.Millisecond * 5 / 2
}

// deliverMessage hands a message to the application unless it is a
// duplicate. It blocks while Messages is full, which stops reading: that
// is the backpressure. It returns an error only for Close.
func (c *Client) deliverMessage(f protocol.Message) error {
	seq := f.Seq
	last := c.lastSeq.Load()
	if seq <= last {
		c.log.Debug("dropping duplicate", "seq", seq, "last_seq", last)
		return nil
	}
	if seq > last+1 {
		c.mu.Lock()
		node, session := c.node, c.session
		c.mu.Unlock()
		err := fmt.Errorf("%w: expected seq %d, got %d", ErrSequenceGap, last+1, seq)
		c.log.Error("server bug", "node", node, "err", err)
		c.emit(Event{Kind: EventSequenceAnomaly, Node: node, Session: session, Seq: last, Err: err})
	}
	m := Message{Seq: seq, ID: f.ID, TS: time.UnixMilli(f.TS), Data: f.Data}
	// Advance first so that an application that has the message never sees
	// an older LastSeq; undo it if Close stops the delivery.
	c.lastSeq.Store(seq)
	select {
	case c.msgs <- m:
		return nil
	case <-c.ctx.Done():
		c.lastSeq.Store(last)
		return ErrClosed
	}
}

// validEndpoints keeps the URLs that are usable endpoints.
func (c *Client) validEndpoints(urls []string) []string {
	var out []string
	for _, u := range urls {
		if err := checkEndpoint(u); err != nil {
			c.log.Warn("ignoring endpoint from server", "err", err)
			continue
		}
		out = append(out, u)
	}
	return out
}
