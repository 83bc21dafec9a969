// Package clusterport is a node's cluster port: one TCP listener shared by
// Raft and the peer links, each connection routed by the first byte its
// dialer writes. It is the one place a handshake policy for node-to-node
// traffic (mutual TLS) applies to both: with a TLS config, a connection
// completes its handshake before its first byte is read, so one that
// cannot prove itself never reaches Raft or a peer method.
package clusterport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Connection kinds on the cluster address: the first byte a dialer writes.
const (
	Raft byte = 'R' // hashicorp/raft NetworkTransport streams
	Peer byte = 'P' // peer links (transport/peer)
)

// ErrUnknownKind is returned by Dial for a kind Mux does not route.
var ErrUnknownKind = errors.New("cluster mux: unknown connection kind")

const (
	defaultFirstByteTimeout = 5 * time.Second
	acceptQueue             = 64  // per kind: connections routed but not yet accepted
	maxPending              = 512 // connections in their handshake or first-byte read
	refusalLogEvery         = 10 * time.Second
)

type options struct {
	firstByteTimeout time.Duration // how long a new connection may take to handshake and say what it is
	tls              *tls.Config   // nil: plain TCP
	logger           *slog.Logger
}

// Mux accepts on one TCP address and routes each incoming connection by
// its first byte, so Raft and peer links share --cluster-addr.
type Mux struct {
	ln   net.Listener
	log  *slog.Logger
	opts options
	subs map[byte]*listener

	pending  chan struct{} // semaphore bounding connections in the handshake or first-byte read
	mu       sync.Mutex
	unrouted map[net.Conn]struct{} // in the handshake or first-byte read; closed by Close so it need not wait out the deadline
	refusals refusals
	done     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
}

// Listen listens on addr (host:port; port 0 picks a free one) and starts
// routing connections to the listeners returned by Listener. With
// tlsConfig, every connection first completes a TLS handshake under that
// config (for mutual TLS, one that requires and verifies a client
// certificate), within the same deadline as its first byte; nil means
// plain TCP.
func Listen(addr string, tlsConfig *tls.Config) (*Mux, error) {
	return listen(addr, options{tls: tlsConfig})
}

func listen(addr string, opts options) (*Mux, error) {
	if opts.firstByteTimeout <= 0 {
		opts.firstByteTimeout = defaultFirstByteTimeout
	}
	if opts.logger == nil {
		opts.logger = slog.Default()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster mux: listen %s: %w", addr, err)
	}
	m := &Mux{
		ln:       ln,
		log:      opts.logger.With("component", "cluster-mux"),
		opts:     opts,
		subs:     make(map[byte]*listener, 2),
		pending:  make(chan struct{}, maxPending),
		unrouted: make(map[net.Conn]struct{}),
		done:     make(chan struct{}),
	}
	for _, k := range []byte{Raft, Peer} {
		m.subs[k] = &listener{mux: m, kind: k, conns: make(chan net.Conn, acceptQueue), closed: make(chan struct{})}
	}
	m.wg.Add(1)
	go m.acceptLoop()
	return m, nil
}

// Addr is the address the mux listens on.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Listener returns the listener receiving connections whose first byte was
// kind (Raft or Peer); that byte has been consumed. It panics on any
// other kind: that is a programming error, not a runtime condition.
func (m *Mux) Listener(kind byte) net.Listener {
	l, ok := m.subs[kind]
	if !ok {
		panic(fmt.Sprintf("cluster mux: no listener for kind %q", kind))
	}
	return l
}

// Close stops accepting, closes every sub-listener (their Accept returns
// net.ErrClosed) and waits for the mux's goroutines. Connections already
// handed out are not touched. Idempotent.
func (m *Mux) Close() error {
	var err error
	m.once.Do(func() {
		close(m.done)
		err = m.ln.Close()
		for _, l := range m.subs {
			l.Close()
		}
		m.mu.Lock()
		for c := range m.unrouted {
			c.Close()
		}
		m.mu.Unlock()
		m.wg.Wait()
		// Routing goroutines may have queued connections after the sub-listeners
		// drained; nobody will accept them now.
		for _, l := range m.subs {
			l.drain()
		}
	})
	return err
}

func (m *Mux) acceptLoop() {
	defer m.wg.Done()
	var backoff time.Duration
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				m.log.Error("cluster listener closed unexpectedly", "err", err)
				return
			}
			// Transient (e.g. EMFILE): back off like net/http rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			m.log.Warn("cluster accept failed; retrying", "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-m.done:
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		select {
		case m.pending <- struct{}{}:
		default:
			// Too many connections that have not said what they are: shed the
			// newest rather than stall accepting for legitimate dialers.
			m.log.Debug("cluster mux: too many pending connections; dropping", "remote", conn.RemoteAddr())
			conn.Close()
			continue
		}
		m.mu.Lock()
		select {
		case <-m.done: // Close has already swept unrouted
			m.mu.Unlock()
			conn.Close()
			<-m.pending
			return
		default:
		}
		m.unrouted[conn] = struct{}{}
		m.mu.Unlock()
		m.wg.Add(1)
		go m.route(conn)
	}
}

// route runs the TLS handshake (if any) and reads the kind byte under one
// deadline, and hands conn to its listener.
func (m *Mux) route(raw net.Conn) {
	defer m.wg.Done()
	defer func() { <-m.pending }()
	deadline := time.Now().Add(m.opts.firstByteTimeout)
	conn := raw
	var b [1]byte
	err := raw.SetDeadline(deadline)
	if err == nil && m.opts.tls != nil {
		tc := tls.Server(raw, m.opts.tls)
		if err = tc.Handshake(); err != nil {
			m.refusals.log(m.log, raw.RemoteAddr(), err)
		}
		conn = &tlsConn{tc}
	}
	if err == nil {
		_, err = io.ReadFull(conn, b[:])
	}
	if err == nil {
		err = raw.SetDeadline(time.Time{})
	}
	m.mu.Lock()
	delete(m.unrouted, raw)
	m.mu.Unlock()
	if err != nil {
		m.log.Debug("cluster mux: no kind byte", "remote", raw.RemoteAddr(), "err", err)
		raw.Close()
		return
	}
	l, ok := m.subs[b[0]]
	if !ok {
		m.log.Debug("cluster mux: unknown kind byte", "remote", conn.RemoteAddr(), "kind", b[0])
		conn.Close()
		return
	}
	// The accept queue is bounded; if the owner is not accepting, wait out the
	// rest of the handshake budget and then drop, so this goroutine always ends.
	select {
	case <-l.closed:
		conn.Close()
		return
	default:
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case l.conns <- conn:
		// Close may have drained the queue just before this send; nobody
		// else will, so drain again.
		select {
		case <-l.closed:
			l.drain()
		default:
		}
	case <-l.closed:
		conn.Close()
	case <-m.done:
		conn.Close()
	case <-t.C:
		m.log.Debug("cluster mux: accept queue full; dropping", "remote", conn.RemoteAddr(), "kind", string(b[0]))
		conn.Close()
	}
}

// listener is the net.Listener for one kind.
type listener struct {
	mux    *Mux
	kind   byte
	conns  chan net.Conn
	once   sync.Once
	closed chan struct{}
}

// Accept waits for the next connection of this kind.
func (l *listener) Accept() (net.Conn, error) {
	// Prefer reporting closure over handing out a connection after Close.
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops this kind only; the mux and other kinds keep running, and
// later connections of this kind are closed on arrival.
func (l *listener) Close() error {
	l.once.Do(func() {
		close(l.closed)
		l.drain()
	})
	return nil
}

func (l *listener) drain() {
	for {
		select {
		case c := <-l.conns:
			c.Close()
		default:
			return
		}
	}
}

// Addr is the shared cluster address (what Raft advertises).
func (l *listener) Addr() net.Addr { return l.mux.Addr() }

// Dial dials a Mux at addr and announces kind. timeout bounds the
// dial and the kind write; ctx can cancel the dial.
func Dial(ctx context.Context, addr string, kind byte, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return DialWith(ctx, d.DialContext, nil, addr, kind, timeout)
}

// Dialer opens a raw connection; net.Dialer.DialContext is one. Tests pass
// their own to route links through fault-injecting proxies.
type Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

// DialWith is Dial over a given dialer and, with tlsConfig, over TLS: the
// handshake completes (within timeout, and ctx) before the kind byte is
// written.
func DialWith(ctx context.Context, dial Dialer, tlsConfig *tls.Config, addr string, kind byte, timeout time.Duration) (net.Conn, error) {
	if kind != Raft && kind != Peer {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKind, kind)
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster dial %s: %w", addr, err)
	}
	if tlsConfig != nil {
		tc := tls.Client(conn, tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("cluster dial %s: TLS: %w", addr, err)
		}
		conn = &tlsConn{tc}
	}
	if timeout > 0 {
		if err := conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
			conn.Close()
			return nil, fmt.Errorf("cluster dial %s: %w", addr, err)
		}
	}
	if _, err := conn.Write([]byte{kind}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("cluster dial %s: write kind: %w", addr, err)
	}
	if err := conn.SetWriteDeadline(time.Time{}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("cluster dial %s: %w", addr, err)
	}
	return conn, nil
}

// tlsConn is a TLS connection whose Close closes the socket at once.
// tls.Conn.Close first sends a close_notify alert, which can block for up
// to 5 s on a peer that stopped reading (a full send buffer), and Raft
// and the peer links close connections to peers that stopped answering.
// Nothing on the cluster port relies on close_notify: both protocols
// frame their own messages.
type tlsConn struct{ *tls.Conn }

func (c *tlsConn) Close() error { return c.NetConn().Close() }

// refusals rate-limits the log of refused handshakes: one line per
// refusalLogEvery, with the count of those not logged.
type refusals struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (r *refusals) log(l *slog.Logger, remote net.Addr, err error) {
	r.mu.Lock()
	now := time.Now()
	if now.Sub(r.last) < refusalLogEvery {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.last, r.suppressed = now, 0
	r.mu.Unlock()
	l.Warn("cluster port: refused a connection that did not prove itself (TLS handshake failed)", "remote", remote, "err", err, "refused_since_last_line", n)
}
