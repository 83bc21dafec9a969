// Package netfault is a node's injected network faults, for failover
// drills (DESIGN.md §5, POST /v1/nodes/{id}/faults): a Gate through which
// every cluster connection of the node passes (Raft, peer links, gossip
// streams), so that isolating the node closes what is open and refuses
// what comes, and a latency that peer links add to what they send.
//
// A nil *Gate is always open and adds nothing: nodes without fault
// injection pay nothing for it.
package netfault

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// ErrIsolated is what a dial through an isolated Gate returns.
var ErrIsolated = errors.New("netfault: node isolated by fault injection")

// Gate holds the node's injected network faults.
type Gate struct {
	now func() time.Time

	mu        sync.Mutex
	isolated  time.Time // isolated until
	slowUntil time.Time
	latency   time.Duration
	conns     map[*conn]struct{}
}

// NewGate returns an open gate.
func NewGate() *Gate {
	return &Gate{now: time.Now, conns: map[*conn]struct{}{}}
}

// Isolate closes every connection the gate tracks and refuses every
// connection, in and out, for d. Isolating again extends or shortens it.
func (g *Gate) Isolate(d time.Duration) {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.isolated = g.now().Add(d)
	open := make([]*conn, 0, len(g.conns))
	for c := range g.conns {
		open = append(open, c)
	}
	g.mu.Unlock()
	for _, c := range open {
		_ = c.Close() // removes itself from conns
	}
}

// Isolated reports whether the node is isolated now.
func (g *Gate) Isolated() bool {
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.now().Before(g.isolated)
}

// Slow adds latency to what the node's peer links send, for d.
func (g *Gate) Slow(latency, d time.Duration) {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.latency, g.slowUntil = latency, g.now().Add(d)
	g.mu.Unlock()
}

// Delay is the latency to add now to a peer link's send: 0 when the node
// is not slow.
func (g *Gate) Delay() time.Duration {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.now().Before(g.slowUntil) {
		return 0
	}
	return g.latency
}

// Admit tracks c while the gate is open; while it is isolated it closes
// c and returns ErrIsolated.
func (g *Gate) Admit(c net.Conn) (net.Conn, error) {
	if g == nil {
		return c, nil
	}
	g.mu.Lock()
	if g.now().Before(g.isolated) {
		g.mu.Unlock()
		_ = c.Close()
		return nil, ErrIsolated
	}
	tc := &conn{Conn: c, g: g}
	g.conns[tc] = struct{}{}
	g.mu.Unlock()
	return tc, nil
}

// Dialer is a dial function, as clusterport.Dialer.
type Dialer = func(ctx context.Context, network, addr string) (net.Conn, error)

// Dial wraps dial: while isolated it fails at once, otherwise the
// connection it opens is tracked.
func (g *Gate) Dial(dial Dialer) Dialer {
	if g == nil {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if g.Isolated() {
			return nil, fmt.Errorf("dial %s: %w", addr, ErrIsolated)
		}
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return g.Admit(c)
	}
}

// Listener wraps l: connections accepted while isolated are closed at
// once (the dialer sees its connection reset), the others are tracked.
func (g *Gate) Listener(l net.Listener) net.Listener {
	if g == nil {
		return l
	}
	return &listener{Listener: l, g: g}
}

type listener struct {
	net.Listener
	g *Gate
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tc, err := l.g.Admit(c); err == nil {
			return tc, nil
		}
	}
}

// conn is a tracked connection: Close forgets it.
type conn struct {
	net.Conn
	g    *Gate
	once sync.Once
}

func (c *conn) Close() error {
	c.once.Do(func() {
		c.g.mu.Lock()
		delete(c.g.conns, c)
		c.g.mu.Unlock()
	})
	return c.Conn.Close()
}
