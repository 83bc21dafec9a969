package consensus

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// tcpKeepAlive is the keep-alive period set on Raft's TCP connections.
//
// Raft's inbound connections have no read deadline on purpose: heartbeat and
// vote connections sit idle by design, and NetworkTransport pools outbound
// connections without noticing when the far end dropped them, so an idle
// deadline would make the first vote of the next election fail and add an
// election timeout to every failover. Keep-alive detects dead peers instead,
// and Close closes every connection it tracks so no reader outlives it.
const tcpKeepAlive = 15 * time.Second

// streamLayer is the raft.StreamLayer over the node's cluster port: it
// accepts from the muxed listener, dials through Config.Dial, and tracks
// every connection so Close can end the transport's reader goroutines,
// which NetworkTransport.Close alone leaves blocked on idle connections.
type streamLayer struct {
	ln        net.Listener
	dial      func(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error)
	advertise net.Addr

	ctx    context.Context // cancelled by Close to abort dials in progress
	cancel context.CancelFunc

	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func newStreamLayer(ln net.Listener, dial func(context.Context, string, time.Duration) (net.Conn, error), advertise string) *streamLayer {
	ctx, cancel := context.WithCancel(context.Background())
	return &streamLayer{
		ln:        ln,
		dial:      dial,
		advertise: advertiseAddr(advertise),
		ctx:       ctx,
		cancel:    cancel,
		conns:     make(map[*trackedConn]struct{}),
	}
}

// advertiseAddr is a net.Addr for AdvertiseAddr: NetworkTransport takes its
// own raft.ServerAddress from Addr(), which must be the address peers dial,
// not the (possibly wildcard) listening address.
type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }

// Accept waits for the next inbound Raft connection.
func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	return s.track(c)
}

// Dial opens a Raft connection to a peer.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	c, err := s.dial(ctx, string(address), timeout)
	if err != nil {
		return nil, fmt.Errorf("consensus: dial raft at %s: %w", address, err)
	}
	return s.track(c)
}

func (s *streamLayer) track(c net.Conn) (net.Conn, error) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetKeepAlive(true)
		_ = tc.SetKeepAlivePeriod(tcpKeepAlive)
	}
	tc := &trackedConn{Conn: c, s: s}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	s.conns[tc] = struct{}{}
	return tc, nil
}

// Close stops accepting, aborts dials in progress and closes every tracked
// connection. It is idempotent.
func (s *streamLayer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()

	s.cancel()
	err := s.ln.Close()
	for c := range conns {
		_ = c.Conn.Close()
	}
	return err
}

// Addr returns the advertised address.
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// trackedConn removes itself from the stream layer when closed.
type trackedConn struct {
	net.Conn
	s    *streamLayer
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	})
	return err
}
