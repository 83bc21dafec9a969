package gateway

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/switchboard/switchboard/protocol"
)

// Writing. A connection has at most one writer at a time (its writing
// flag). For a plain TCP socket the poller watches, the writer is first a
// turn of the gateway's writer pool: a worker takes what is queued and
// makes one non-blocking write of it. Almost always the socket takes it
// all, and no goroutine, timer or write deadline was needed. When the
// socket is full, or the connection is closing, a writer goroutine of the
// connection's own takes over (writeLoop): it waits on the socket under
// the write timeout, and lingers a moment for more before it returns. TLS
// connections always use the goroutine: tls.Conn cannot write without
// blocking.

// maxPooledBuf keeps oversized write buffers out of the pool.
const maxPooledBuf = 256 << 10

// writeBatch bounds the message bytes one write takes. Each write has
// WriteTimeout to complete, so a backlog (a resume replay) reaches a client
// that reads steadily but slowly in pieces instead of timing out as one
// write, and the writer copies at most this much of the queue at a time.
const writeBatch = 64 << 10

// writeBufPool holds write buffers between flushes, so an idle
// connection holds none.
var writeBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// writerLinger is how long a writer goroutine that wrote messages and has
// nothing more to write waits for more before it returns. Short, so that
// quiet connections hold no goroutine; writers of heartbeats and pings do
// not linger at all.
const writerLinger = 250 * time.Millisecond

// keptQueue is the largest queue array a connection keeps between
// writes, so that a stream of messages does not allocate one each; the
// sweeper drops it after a heartbeat interval without data (tick), so an
// idle connection keeps none.
const keptQueue = 4

// round is one write: the queued frames it carries and their bytes.
type round struct {
	bp         *[]byte // the pooled buffer buf lives in; nil when none is held
	batch      []item
	buf        []byte
	off        int // bytes of buf already written
	highest    uint64
	data       bool // text frames: the silence heartbeats fill ends
	abandon    bool
	sendClose  bool
	peerClosed bool
	deadline   int64 // monoNow() by which the write must be done
}

// release returns r's buffer to the pool.
func (r *round) release() {
	if r.bp != nil && cap(*r.bp) <= maxPooledBuf {
		*r.bp = (*r.bp)[:0]
		writeBufPool.Put(r.bp)
	}
	r.bp, r.buf, r.off = nil, nil, 0
}

// takeLocked moves what is due to be written into r: queued frames (about
// writeBatch at most; the rest waits for the next round), pongs, a due ping
// or heartbeat, and the close frames once nothing is queued. It returns
// false, with the queue untouched, when nothing is due.
func (c *conn) takeLocked(r *round) bool {
	n, size := 0, 0
	for n < len(c.q) && (n == 0 || size+len(c.q[n].frame) <= writeBatch) {
		size += len(c.q[n].frame)
		n++
	}
	r.batch = append(r.batch[:0], c.q[:n]...)
	clear(c.q[:n])
	if n < len(c.q) {
		c.q = c.q[n:] // the rest goes in the next rounds, each with its own deadline
		if cap(c.q) <= keptQueue {
			// A tail this small would pass for a kept queue array once
			// drained, and keep the whole backlog's array: a fresh one.
			c.q = append([]item(nil), c.q...)
		}
	} else {
		c.q = c.q[:0]
		if cap(c.q) > keptQueue {
			c.q = nil // a burst's backing array is not kept by an idle connection
		}
	}
	if r.bp == nil {
		r.bp = writeBufPool.Get().(*[]byte)
	}
	buf := append((*r.bp)[:0], c.ctl...)
	c.ctl, c.pongs = nil, 0
	if c.pingDue {
		buf = wsAppendHeader(buf, wsOpPing, 0)
		c.pingDue, c.lastPing = false, monoNow()
	}
	r.abandon = c.abandon
	r.highest = c.highest
	r.data = false
	for _, it := range r.batch {
		if r.abandon {
			break
		}
		buf = wsAppendHeader(buf, wsOpText, len(it.frame))
		buf = append(buf, it.frame...)
		r.highest = max(r.highest, it.seq)
		r.data = true
	}
	if c.beatDue {
		if !r.data {
			var scratch [48]byte
			buf = wsAppendFrame(buf, wsOpText, protocol.AppendHeartbeat(scratch[:0], r.highest))
			r.data = true
		}
		c.beatDue = false
	}
	r.sendClose = c.closing && !c.closeSent && len(c.q) == 0
	if r.sendClose {
		if req := c.req; req.errorFrame() {
			buf = wsAppendFrame(buf, wsOpText, protocol.EncodeError(req.slug, req.msg, req.endpoints))
			r.data = true
		}
		buf = wsAppendClose(buf, int(c.req.code), c.req.slug)
		c.closeSent = true
	}
	r.deadline = monoNow() + int64(c.g.cfg.WriteTimeout)
	if c.closing && c.closeBy < r.deadline {
		r.deadline = c.closeBy
	}
	r.peerClosed = c.peerClosed
	*r.bp = buf // keep what the buffer grew to
	r.buf, r.off = buf, 0
	return len(buf) > 0
}

// wrote settles the round r, written with the result err: its frames'
// notifications, the queue's count, and, after a failed write or the close
// frame, the connection's end. It returns true when the writer is done:
// the connection is torn down and the writing flag cleared.
func (c *conn) wrote(r *round, err error) (done bool) {
	if r.abandon {
		notify(r.batch, errNotWritten)
	} else {
		notify(r.batch, err)
	}
	n := len(r.batch)
	clear(r.batch) // drop frame references while idle
	r.batch = r.batch[:0]

	c.mu.Lock()
	c.pending -= n
	if err != nil {
		// Still marked writing until the socket is closed: a Send
		// meanwhile must not start a writer whose bytes would land
		// inside the frame this write broke off.
		c.mu.Unlock()
		c.g.log.Debug("write ended", "conn", c.id, "err", err)
		c.teardown()
		c.mu.Lock()
		c.writing, c.wake = false, nil
		c.finishLocked()
		return true
	}
	c.highest = r.highest
	if r.data {
		c.lastData = monoNow()
	}
	c.mu.Unlock()
	if !r.sendClose {
		return false
	}
	c.g.log.Debug("closing", "conn", c.id, "code", c.req.code, "slug", c.req.slug)
	if !r.peerClosed {
		// Nothing follows our close: the client reads EOF right after it,
		// while its close, or its EOF, may still come in and ends the
		// wait. Closing the socket now instead would reset the connection
		// if input is unread, and a reset discards our close if it is
		// still in flight.
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		c.awaitPeerClose()
	}
	c.teardown()
	c.mu.Lock()
	c.writing, c.wake = false, nil
	c.finishLocked()
	return true
}

// writeLoop is the connection's writer goroutine: it writes everything
// queued, one syscall of about writeBatch at most per round, and returns
// once nothing is left. It tears the connection down after a failed write
// and after the close handshake. r, when not nil, is a round a pool
// worker could write only in part: its rest goes first.
func (c *conn) writeLoop(r *round) {
	if r == nil {
		r = &round{}
	}
	// The write buffer is held only while writing, not while lingering.
	defer r.release()
	var (
		linger   *time.Timer
		lingered bool // lingered once with nothing to do: return next time
		// carried: the last write held messages. Only then is more likely
		// soon; a writer that wrote a heartbeat, ping or pong returns at
		// once, so idle connections hold no goroutine between beats.
		carried bool
	)
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()
	for {
		if r.off == len(r.buf) {
			c.mu.Lock()
			if c.dead {
				notify(c.q, errNotWritten)
				c.writing, c.wake = false, nil
				c.finishLocked()
				return
			}
			if !c.takeLocked(r) {
				if lingered || !carried {
					if c.pooledLocked() {
						// The pool's writes do not wait: a deadline left
						// behind would fail the next one. Cleared while
						// this is still the writer, so it cannot clear the
						// deadline of the next writer goroutine.
						_ = c.nc.SetWriteDeadline(time.Time{})
					}
					c.writing, c.wake = false, nil
					c.mu.Unlock()
					return
				}
				// Linger a moment before returning: a connection that gets
				// a stream of messages keeps one writer (and its grown
				// stack) instead of starting one per message.
				if c.wake == nil {
					c.wake = make(chan struct{}, 1)
				}
				wake := c.wake
				c.mu.Unlock()
				r.release()
				if linger == nil {
					linger = time.NewTimer(writerLinger)
				} else {
					linger.Reset(writerLinger)
				}
				select {
				case <-wake:
					linger.Stop()
				case <-linger.C:
					lingered = true
				}
				continue
			}
			lingered = false
			c.mu.Unlock()
		}
		err := c.nc.SetWriteDeadline(monoEpoch.Add(time.Duration(r.deadline)))
		if err == nil {
			_, err = c.nc.Write(r.buf[r.off:])
		}
		r.off = len(r.buf)
		carried = len(r.batch) > 0
		if c.wrote(r, err) {
			return
		}
	}
}

// pooledLocked reports whether the writer pool may write c: a plain socket
// the poller watches, not closing. Ends (the close handshake waits) and
// TLS go to a writer goroutine.
func (c *conn) pooledLocked() bool {
	return c.rc != nil && !c.tls && !c.closing && !c.dead && c.g.writers != nil
}

// turnRounds bounds the rounds a pool worker writes for one connection
// before it moves on to the next: a connection that keeps getting frames
// goes back to the end of the line.
const turnRounds = 4

// writeTurn is a pool worker's turn at c: rounds of non-blocking writes
// while something is due. r is the worker's round, reused from turn to
// turn. handed reports that r now belongs to a writer goroutine c started
// (the socket was full: it waits there); again that c still has frames
// due and must go back in line.
func (c *conn) writeTurn(r *round) (handed, again bool) {
	for range turnRounds {
		c.mu.Lock()
		if !c.pooledLocked() {
			// Closing or dead: the writer goroutine sends the close and
			// waits for the client's, or finishes the connection.
			c.mu.Unlock()
			go c.writeLoop(nil)
			return false, false
		}
		if !c.takeLocked(r) {
			c.writing = false
			c.mu.Unlock()
			return false, false
		}
		c.mu.Unlock()
		n, err := writeRaw(c.rc, r.buf)
		r.off = n
		if errors.Is(err, errWouldBlock) || errors.Is(err, os.ErrDeadlineExceeded) || (err == nil && n < len(r.buf)) {
			// The socket is full (or a writer goroutine's deadline is
			// still set on it): the rest is for a goroutine that waits.
			go c.writeLoop(r)
			return true, false
		}
		if c.wrote(r, err) {
			return false, false
		}
	}
	return false, true
}

// writerPool is a few goroutines (writerWorkers) that take turns writing the
// connections that have something due (writeTurn). A broadcast to thousands
// of connections then costs a write syscall each, not also a goroutine
// wake-up, a timer and a write deadline each.
type writerPool struct {
	mu      sync.Mutex
	cond    sync.Cond
	ready   []*conn // connections waiting for a turn; each at most once (its writing flag)
	waiting int     // workers blocked in cond.Wait
	running bool
	done    sync.WaitGroup
}

// writerChunk is how many connections a worker takes from the line at a
// time: fewer lock round trips, and still a share for every worker.
const writerChunk = 32

func newWriterPool() *writerPool {
	p := &writerPool{}
	p.cond.L = &p.mu
	return p
}

// writerWorkers is the pool's size: one CPU less than the process may
// use, and at least one. The CPU left over serves everything else (reads,
// the publish API, Raft, the broker's fan-out): with a worker on every CPU
// a broadcast held every P, and a publish request waited for a preemption
// to be read and answered. Measured on 2 CPUs (docs/benchmarks.md): one
// worker acknowledged publishes 15 ms after they were sent where two took
// 233 ms, and delivered 174,000–202,000 messages a second where two
// delivered 143,000–153,000.
func writerWorkers() int { return max(1, runtime.GOMAXPROCS(0)-1) }

// start starts the workers.
func (p *writerPool) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running {
		return
	}
	p.running = true
	for range writerWorkers() {
		p.done.Add(1)
		go p.work()
	}
}

// stop ends the workers once the line is empty; the gateway calls it when
// no connection is left.
func (p *writerPool) stop() {
	p.mu.Lock()
	p.running = false
	p.cond.Broadcast()
	p.mu.Unlock()
	p.done.Wait()
}

// push puts c in line; c.writing is set and stays set until its turn ends
// with nothing due.
func (p *writerPool) push(c *conn) {
	p.mu.Lock()
	p.ready = append(p.ready, c)
	if p.waiting > 0 {
		p.cond.Signal()
	}
	p.mu.Unlock()
}

func (p *writerPool) work() {
	defer p.done.Done()
	r := &round{}
	defer func() { r.release() }() // the round held at the end: earlier ones were handed off
	var chunk []*conn
	for {
		p.mu.Lock()
		for len(p.ready) == 0 && p.running {
			p.waiting++
			p.cond.Wait()
			p.waiting--
		}
		if len(p.ready) == 0 {
			p.mu.Unlock()
			return
		}
		n := min(len(p.ready), writerChunk)
		chunk = append(chunk[:0], p.ready[:n]...)
		clear(p.ready[:n])
		p.ready = p.ready[n:]
		if len(p.ready) == 0 {
			p.ready = nil // a burst's array is not kept
		}
		p.mu.Unlock()
		for i, c := range chunk {
			handed, again := c.writeTurn(r)
			if handed {
				r = &round{}
			}
			if again {
				p.push(c)
			}
			chunk[i] = nil
		}
	}
}
