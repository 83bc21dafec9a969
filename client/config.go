package client

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/gorilla/websocket"
	"github.com/switchboard/switchboard/protocol"
)

// Config configures a Client. Start from DefaultConfig; zero durations and
// sizes are replaced by their defaults, but ResumeOffline is a plain bool and
// is only true when set (DefaultConfig sets it).
type Config struct {
	// Endpoints are ws:// or wss:// URLs of /v1/connect, tried in order.
	// Endpoints learned from welcome and draining frames are added to them
	// for failover; these are kept.
	Endpoints []string
	// Token returns the JWT sent in hello. It is called before every
	// connect, and on a live connection RefreshBefore its token's exp, for a
	// token that expires later to send in a refresh frame. It must return
	// promptly (Close waits for it); calls never overlap. See StaticToken.
	Token func() (string, error)
	// RefreshBefore is how long before a connection's token expires the
	// client refreshes it (DESIGN.md §3 refresh), so that the server does
	// not close the connection with 4001 at exp. A token with less than
	// RefreshBefore left is refreshed when half of what is left has passed.
	// Only a JWT with an exp claim (read without verifying the token) is
	// refreshed. A refresh that fails is reported as EventRefreshFailed;
	// the server then closes the connection at exp and the client
	// reconnects with a token from Token.
	RefreshBefore time.Duration

	// Session and LastSeq are the resume point. The client keeps them up to
	// date across reconnects; preset them to resume an earlier session.
	Session string
	LastSeq uint64
	// ResumeOffline makes a connect without a session send resume
	// {"seq":LastSeq}, which asks for messages published while offline.
	ResumeOffline bool

	// BackoffBase and BackoffMax shape the full-jitter exponential backoff
	// between reconnect attempts: attempt n sleeps a random duration in
	// [0, min(BackoffMax, BackoffBase·2ⁿ)]; attempt 0 is immediate.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// DialTimeout bounds the WebSocket handshake and the wait for welcome.
	DialTimeout time.Duration
	// Buffer is the capacity of the Messages channel. When it is full the
	// client stops reading: the server sees backpressure and may close the
	// connection with 4008, after which the client resumes where it was.
	Buffer int
	// EventBuffer is the capacity of the Events channel; events that do not
	// fit are dropped (and logged).
	EventBuffer int
	// MaxFrameBytes limits the size of one server frame.
	MaxFrameBytes int64
	// Dialer dials the WebSocket; nil uses a copy of websocket.DefaultDialer.
	// Set it for a proxy or buffer sizes.
	Dialer *websocket.Dialer
	// TLS configures wss:// connections, e.g. RootCAs holding the CA of a
	// cluster whose certificates a private CA issued (sbctl certs init).
	// It replaces the Dialer's TLSClientConfig; nil keeps that, which by
	// default trusts the system's roots.
	TLS *tls.Config
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
	// OnWelcome, if set, is called with every welcome, on the client's read
	// goroutine: it must not block.
	OnWelcome func(protocol.Welcome)
}

// DefaultConfig returns a production-ready Config; set Endpoints and Token.
func DefaultConfig() Config {
	return Config{
		ResumeOffline: true,
		BackoffBase:   100 * time.Millisecond,
		BackoffMax:    5 * time.Second,
		DialTimeout:   5 * time.Second,
		RefreshBefore: 30 * time.Second,
		Buffer:        1024,
		EventBuffer:   64,
		MaxFrameBytes: 1 << 20,
	}
}

// StaticToken returns a Config.Token that always yields tok.
func StaticToken(tok string) func() (string, error) {
	return func() (string, error) { return tok, nil }
}

// normalize fills defaults and validates, naming the offending field.
func (c Config) normalize() (Config, error) {
	d := DefaultConfig()
	if c.BackoffBase == 0 {
		c.BackoffBase = d.BackoffBase
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = d.BackoffMax
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = d.DialTimeout
	}
	if c.RefreshBefore == 0 {
		c.RefreshBefore = d.RefreshBefore
	}
	if c.Buffer == 0 {
		c.Buffer = d.Buffer
	}
	if c.EventBuffer == 0 {
		c.EventBuffer = d.EventBuffer
	}
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = d.MaxFrameBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case len(c.Endpoints) == 0:
		return c, fmt.Errorf("%w: Endpoints is empty", ErrConfig)
	case c.Token == nil:
		return c, fmt.Errorf("%w: Token is nil", ErrConfig)
	case c.BackoffBase < 0:
		return c, fmt.Errorf("%w: BackoffBase %v is negative", ErrConfig, c.BackoffBase)
	case c.BackoffMax < c.BackoffBase:
		return c, fmt.Errorf("%w: BackoffMax %v is below BackoffBase %v", ErrConfig, c.BackoffMax, c.BackoffBase)
	case c.DialTimeout < 0:
		return c, fmt.Errorf("%w: DialTimeout %v is negative", ErrConfig, c.DialTimeout)
	case c.RefreshBefore < 0:
		return c, fmt.Errorf("%w: RefreshBefore %v is negative", ErrConfig, c.RefreshBefore)
	case c.Buffer < 0:
		return c, fmt.Errorf("%w: Buffer %d is negative", ErrConfig, c.Buffer)
	case c.EventBuffer < 0:
		return c, fmt.Errorf("%w: EventBuffer %d is negative", ErrConfig, c.EventBuffer)
	case c.MaxFrameBytes < 0:
		return c, fmt.Errorf("%w: MaxFrameBytes %d is negative", ErrConfig, c.MaxFrameBytes)
	}
	for i, e := range c.Endpoints {
		if err := checkEndpoint(e); err != nil {
			return c, fmt.Errorf("%w: Endpoints[%d]: %w", ErrConfig, i, err)
		}
	}
	// Copy so later merging never aliases the caller's slice.
	c.Endpoints = append([]string(nil), c.Endpoints...)
	return c, nil
}

// checkEndpoint accepts absolute ws:// and wss:// URLs.
func checkEndpoint(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return fmt.Errorf("%q is not a ws:// or wss:// URL", s)
	}
	return nil
}
