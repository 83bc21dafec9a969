package gateway

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// PollableListener wraps l, the TCP listener under a tls.Listener, so
// that the WebSocket connections upgraded from its TLS connections are
// watched by the gateway's poller like plain ones, instead of each
// holding a reader goroutine blocked in tls.Conn.Read: at 10,000 idle
// TLS connections that goroutine and its read buffer were two thirds of
// the node's memory. Plain listeners need no wrapping.
//
// Until the gateway takes a connection over, reads block as usual (the
// TLS handshake and the HTTP upgrade request are read that way).
func PollableListener(l net.Listener) net.Listener { return pollableListener{l} }

type pollableListener struct{ net.Listener }

func (l pollableListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if tc, ok := nc.(*net.TCPConn); ok {
		return &tlsSocket{TCPConn: tc}, nil
	}
	return nc, err
}

// tlsSocket is the TCP connection under a tls.Conn. Once the poller
// watches it, its reads no longer wait: an empty socket answers
// errWouldBlock, which tls.Conn takes for a timeout (a net.Error that is
// Temporary) and keeps its state, a partial record included, for the
// next Read.
type tlsSocket struct {
	*net.TCPConn
	rc          syscall.RawConn // set before nonblocking
	nonblocking atomic.Bool
}

func (s *tlsSocket) Read(b []byte) (int, error) {
	if s.nonblocking.Load() {
		return readRaw(s.rc, b)
	}
	return s.TCPConn.Read(b)
}

// wouldBlock is errWouldBlock: a net.Error, so that tls.Conn keeps going
// after it.
type wouldBlock struct{}

func (wouldBlock) Error() string   { return "transport: read would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

var _ net.Error = wouldBlock{}

// tlsReadBuf is the read buffer of a TLS connection's reader turn: a TLS
// record's plaintext is at most 16 KiB.
const tlsReadBuf = 16 << 10

var tlsReadBufs = sync.Pool{New: func() any { b := make([]byte, tlsReadBuf); return &b }}

// tlsTurn runs one reader turn of a TLS connection, on a goroutine of its
// own that ends with the turn: when the poller reports the socket
// readable, and when the last turn ended before a read came back empty
// (tls.Conn may hold records it took from the socket already, which no
// readiness event would announce). An idle TLS connection has no
// goroutine, as a plain one.
func (c *conn) tlsTurn() {
	bp := tlsReadBufs.Get().(*[]byte)
	defer tlsReadBufs.Put(bp)
	c.onReadable(*bp, c.readNow)
}
