//go:build linux

package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller watches the sockets of idle connections with one epoll instance
// and one goroutine, so a connection waiting for its client costs no
// goroutine (and no goroutine stack) of its own. Each socket is armed for
// one readiness event at a time (EPOLLONESHOT): the connection reads what
// is there without blocking, acts on it, and re-arms when it is done, so
// one connection is never read by two goroutines at once.
//
// Events carry the connection id, not the descriptor: a descriptor may be
// closed and reused by a new connection while an event for the old one is
// in flight, and an id is never reused. Every epoll_ctl runs inside
// RawConn.Control, which keeps the descriptor open meanwhile.
type poller struct {
	g      *Gateway
	epfd   int
	wakefd int // eventfd: Close wakes the loop with it

	mu     sync.Mutex
	conns  map[uint64]*conn
	failed bool // epoll_wait failed: the poller watches nothing more

	done chan struct{}
}

// pollWakeToken is the event data of the wake eventfd; connection ids
// start at 1.
const pollWakeToken = 0

const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// pollReadBuf is the poller's read buffer, shared by every connection it
// serves (one reads at a time).
const pollReadBuf = 64 << 10

func newPoller(g *Gateway) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := pollEvent(unix.EPOLLIN, pollWakeToken)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(wakefd)
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll_ctl wake: %w", err)
	}
	p := &poller{g: g, epfd: epfd, wakefd: wakefd, conns: make(map[uint64]*conn), done: make(chan struct{})}
	go p.run()
	return p, nil
}

// pollEvent packs the 64-bit token into epoll_event's data union (the Fd
// and Pad fields of x/sys/unix's EpollEvent).
func pollEvent(events uint32, token uint64) unix.EpollEvent {
	return unix.EpollEvent{Events: events, Fd: int32(uint32(token)), Pad: int32(uint32(token >> 32))}
}

func pollToken(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// watch starts watching c's socket, armed for its first event. It returns
// false when the socket is not one epoll can watch (no descriptor, or a
// TLS connection from a listener PollableListener did not wrap): c then
// needs a reader goroutine.
func (p *poller) watch(c *conn) (bool, error) {
	socket := c.nc
	var under *tlsSocket
	if tc, ok := c.nc.(*tls.Conn); ok {
		if under, ok = tc.NetConn().(*tlsSocket); !ok {
			return false, nil
		}
		socket = under
	}
	sc, ok := socket.(syscall.Conn)
	if !ok {
		return false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, err
	}
	if under != nil {
		under.rc = rc
		under.nonblocking.Store(true)
		c.tls = true
	}
	// unwatched undoes the above for a socket the poller will not watch:
	// its reader goroutine reads through tls.Conn with reads that wait,
	// or it would spin on reads that never do.
	unwatched := func() {
		if under != nil {
			under.nonblocking.Store(false)
			c.tls = false
		}
	}
	p.mu.Lock()
	if p.failed {
		p.mu.Unlock()
		unwatched()
		return false, errors.New("poller failed")
	}
	c.rc = rc
	c.poll = p
	p.conns[c.id] = c
	p.mu.Unlock()
	if err := p.ctl(c, unix.EPOLL_CTL_ADD, pollEvents); err != nil {
		p.mu.Lock()
		delete(p.conns, c.id)
		p.mu.Unlock()
		c.rc, c.poll = nil, nil
		unwatched()
		return false, err
	}
	return true, nil
}

// arm asks for c's next readiness event.
func (p *poller) arm(c *conn) error {
	return p.ctl(c, unix.EPOLL_CTL_MOD, pollEvents)
}

// remove stops watching c; call it before the socket is closed.
func (p *poller) remove(c *conn) {
	_ = p.ctl(c, unix.EPOLL_CTL_DEL, 0)
	p.mu.Lock()
	delete(p.conns, c.id)
	p.mu.Unlock()
}

func (p *poller) ctl(c *conn, op int, events uint32) error {
	var err error
	cerr := c.rc.Control(func(fd uintptr) {
		ev := pollEvent(events, c.id)
		err = unix.EpollCtl(p.epfd, op, int(fd), &ev)
	})
	if cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// run delivers readiness events until close. Connections read without
// blocking, so the loop never waits on one client.
func (p *poller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, pollReadBuf)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			p.fail(err)
			return
		}
		for i := range n {
			token := pollToken(&events[i])
			if token == pollWakeToken {
				return
			}
			p.mu.Lock()
			c := p.conns[token]
			p.mu.Unlock()
			switch {
			case c == nil:
			case c.tls:
				// tls.Conn.Read may write (an alert, a KeyUpdate answer)
				// and so wait for a writer stuck on a client that does not
				// read: never on the poller.
				go c.tlsTurn()
			default:
				c.onReadable(buf, c.readNow)
			}
		}
	}
}

// fail gives up on epoll after an error it cannot retry: the connections
// it watched are closed (their clients reconnect, here on reader
// goroutines, or elsewhere) and new ones get reader goroutines.
func (p *poller) fail(err error) {
	p.g.log.Error("epoll_wait failed; closing the poller's connections, new ones get reader goroutines", "err", err)
	p.mu.Lock()
	p.failed = true
	conns := make([]*conn, 0, len(p.conns))
	for _, c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.teardown()
	}
}

// close stops the loop; connections must be gone already.
func (p *poller) close() {
	var one = [8]byte{1}
	if _, err := unix.Write(p.wakefd, one[:]); err != nil {
		p.g.log.Error("poller wake failed", "err", err)
	}
	<-p.done
	unix.Close(p.wakefd)
	unix.Close(p.epfd)
}

// readNow reads what the socket holds without waiting (through TLS, if
// the connection has it): errWouldBlock when it holds nothing.
func (c *conn) readNow(buf []byte) (int, error) {
	if c.tls {
		return c.nc.Read(buf)
	}
	return readRaw(c.rc, buf)
}

// readRaw reads what the socket rc holds without waiting: errWouldBlock
// when it holds nothing.
func readRaw(rc syscall.RawConn, buf []byte) (int, error) {
	var n int
	var err error
	cerr := rc.Read(func(fd uintptr) bool {
		for {
			n, err = unix.Read(int(fd), buf)
			if err != unix.EINTR {
				return true // never park in the runtime's poller
			}
		}
	})
	switch {
	case cerr != nil:
		return 0, cerr
	case err == unix.EAGAIN:
		return 0, errWouldBlock
	case err != nil:
		return 0, err
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// writeRaw makes one write of b to the socket rc without waiting:
// errWouldBlock when the socket takes nothing now; a short count when it
// took only part.
func writeRaw(rc syscall.RawConn, b []byte) (int, error) {
	var n int
	var err error
	cerr := rc.Write(func(fd uintptr) bool {
		for {
			n, err = unix.Write(int(fd), b)
			if err != unix.EINTR {
				return true // never park in the runtime's poller
			}
		}
	})
	switch {
	case cerr != nil:
		return 0, cerr
	case err == unix.EAGAIN:
		return 0, errWouldBlock
	case err != nil:
		return 0, err
	}
	return n, nil
}
