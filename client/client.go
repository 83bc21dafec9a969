package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/switchboard/switchboard/protocol"
)

// stableConnection is how long a welcomed connection must have lasted for
// its loss to reset the backoff, so that a node that welcomes and then drops
// clients at once cannot make them reconnect in a hot loop.
const stableConnection = time.Second

// Message is one stream message delivered to the application.
type Message struct {
	Seq  uint64
	ID   string // publish id
	TS   time.Time
	Data json.RawMessage
}

// Client is a subscriber connection that survives node failures: it
// reconnects, resumes from the last delivered seq, and de-duplicates.
// Its methods are safe for concurrent use.
type Client struct {
	cfg    Config
	log    *slog.Logger
	dialer *websocket.Dialer
	randN  func(int64) int64

	msgs   chan Message
	events chan Event
	ready  chan struct{} // closed at the first welcome

	ctx       context.Context // canceled by Close
	cancel    context.CancelFunc
	done      chan struct{} // closed when run has returned
	closeOnce sync.Once

	lastSeq atomic.Uint64 // last delivered seq (or the welcome's, after a lost resume)
	pingID  atomic.Uint64

	mu      sync.Mutex
	session string
	node    string
	cur     *conn                    // the welcomed connection, nil between connections
	lastErr error                    // why the last connection attempt ended
	subs    map[string]*Subscription // by channel (channel.go)

	// Owned by the run goroutine.
	eps         *endpointList
	readyClosed bool
	freshResume bool // after 4011: resume from seq 0 without session
}

// Dial starts a client and waits until the first welcome arrives or ctx is
// done; on ctx expiry it stops the client and returns the context error
// joined with the last connection error. After a successful Dial the client
// keeps itself connected until Close.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	c := newClient(cfg)
	go c.run()
	select {
	case <-c.ready:
		return c, nil
	case <-ctx.Done():
		select {
		case <-c.ready: // both happened: a connected client is the better answer
			return c, nil
		default:
		}
		last := c.lastError()
		_ = c.Close()
		if last != nil {
			return nil, fmt.Errorf("client: dial: %w: %w", ctx.Err(), last)
		}
		return nil, fmt.Errorf("client: dial: %w", ctx.Err())
	}
}

func newClient(cfg Config) *Client {
	d := cfg.Dialer
	if d == nil {
		d = websocket.DefaultDialer
	}
	dialer := *d // copy: we set the timeout without touching the caller's
	dialer.HandshakeTimeout = cfg.DialTimeout
	if cfg.TLS != nil {
		dialer.TLSClientConfig = cfg.TLS
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "client"),
		dialer:  &dialer,
		randN:   rand.Int64N,
		msgs:    make(chan Message, cfg.Buffer),
		events:  make(chan Event, cfg.EventBuffer),
		ready:   make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		session: cfg.Session,
		eps:     newEndpointList(cfg.Endpoints),
	}
	c.lastSeq.Store(cfg.LastSeq)
	return c
}

// Messages returns the stream of messages, in seq order and without
// duplicates. It is closed by Close.
func (c *Client) Messages() <-chan Message { return c.msgs }

// Events returns connection events. The channel is bounded: events that
// find it full are dropped. It is closed by Close.
func (c *Client) Events() <-chan Event { return c.events }

// Session returns the current session id ("" before the first welcome).
func (c *Client) Session() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session
}

// Node returns the id of the node of the current or last connection.
func (c *Client) Node() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.node
}

// LastSeq returns the seq of the last message delivered on Messages, which
// is the resume point; persist it with Session to resume after a restart.
func (c *Client) LastSeq() uint64 { return c.lastSeq.Load() }

// Ping sends an application ping on the current connection and returns the
// round-trip time when the pong arrives.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	if c.ctx.Err() != nil {
		return 0, ErrClosed
	}
	c.mu.Lock()
	cn := c.cur
	c.mu.Unlock()
	if cn == nil {
		return 0, ErrNotConnected
	}
	id := c.pingID.Add(1)
	pong := cn.expectPong(id)
	defer cn.forgetPong(id)
	start := time.Now()
	frame := []byte(`{"type":"ping","id":` + strconv.FormatUint(id, 10) + `}`)
	// A fixed write timeout, not ctx's: a timed-out write corrupts the
	// WebSocket for everyone, so it must only fire on a stuck peer.
	if err := cn.write(frame, c.cfg.DialTimeout); err != nil {
		return 0, fmt.Errorf("%w: ping: %w", ErrConnectionLost, err)
	}
	select {
	case <-pong:
		return time.Since(start), nil
	case <-cn.done:
		return 0, ErrConnectionLost
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-c.ctx.Done():
		return 0, ErrClosed
	}
}

// Close closes the connection with 1000, stops the client's goroutines and
// closes Messages and Events. It is idempotent and always returns nil. It
// must not be called from OnWelcome.
func (c *Client) Close() error {
	c.closeOnce.Do(c.cancel)
	<-c.done
	return nil
}

func (c *Client) lastError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// run connects, reads until the connection ends, and reconnects, until
// Close. It and its connections' token refreshes, which connect waits
// for, are the only senders on msgs and events; it closes both.
func (c *Client) run() {
	defer close(c.done)
	defer close(c.events)
	defer close(c.msgs)
	defer c.finishSubscriptions()
	fails := 0
	for {
		if d := backoff(fails, c.cfg.BackoffBase, c.cfg.BackoffMax, c.randN); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-c.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if c.ctx.Err() != nil {
			return
		}
		ep := c.eps.pick()
		fails++
		out := c.connect(ep)
		if c.ctx.Err() != nil {
			return
		}
		fails = c.afterConnection(ep, out, fails)
	}
}

// outcome is how one connection attempt ended.
type outcome struct {
	welcomed   bool
	uptime     time.Duration // since the welcome
	closeCode  int           // server close code, 0 if none
	drainTo    []string      // endpoints offered by a draining error frame
	resumeSent bool          // the hello carried a session or a seq > 0
	err        error
}

// afterConnection applies the reconnect policy for each way a connection
// can end and returns the new failure count, which sets the next backoff.
func (c *Client) afterConnection(ep string, out outcome, fails int) int {
	c.mu.Lock()
	c.lastErr = out.err
	node, session := c.node, c.session
	c.mu.Unlock()
	ev := Event{Endpoint: ep, Node: node, Session: session, Seq: c.lastSeq.Load(), Code: out.closeCode, Err: out.err}
	if out.welcomed {
		c.log.Info("disconnected", "endpoint", ep, "node", node, "code", out.closeCode, "err", out.err)
		ev.Kind = EventDisconnected
		c.emit(ev)
		if out.uptime >= stableConnection {
			fails = 0
		}
	} else {
		c.log.Warn("connect failed", "endpoint", ep, "err", out.err)
	}

	switch protocol.CloseCode(out.closeCode) {
	case protocol.CloseMoved, protocol.CloseGoingAway:
		// The node is leaving: go elsewhere now, where it told us if it did.
		c.eps.prefer(out.drainTo, ep)
		if out.welcomed {
			fails = 0
		}
	case protocol.CloseContinuityLost:
		// Resume is impossible: start over from the start of the stream.
		c.mu.Lock()
		c.session = ""
		c.mu.Unlock()
		c.lastSeq.Store(0)
		c.freshResume = true
		ev.Kind, ev.Session, ev.Seq = EventContinuityLost, "", 0
		c.emit(ev)
		c.log.Warn("session expired, continuity lost", "endpoint", ep)
		if out.resumeSent {
			fails = 0 // the next hello differs, so retrying at once cannot loop
		}
	case protocol.CloseRateLimited, protocol.CloseTryAgainLater, protocol.CloseProtocol,
		protocol.CloseProtocolViolation, protocol.CloseUnsupportedData,
		protocol.CloseHelloTimeout, protocol.CloseInvalidUTF8, protocol.CloseTooLarge:
		fails = max(fails, 1)
	}
	if errors.Is(out.err, ErrUnauthorized) {
		// Config.Token is asked again before the next attempt; back off in
		// case it returns the same rejected token.
		ev.Kind = EventUnauthorized
		c.emit(ev)
		fails = max(fails, 1)
	}
	return fails
}

// emit sends e without blocking: a consumer that does not read events must
// not stall message delivery.
func (c *Client) emit(e Event) {
	select {
	case c.events <- e:
	default:
		c.log.Warn("event dropped: Events channel full", "kind", e.Kind.String())
	}
}
