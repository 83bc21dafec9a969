package gateway

// errWouldBlock ends a reader's turn: the socket has nothing more now.
var errWouldBlock error = wouldBlock{}

// fallbackReadBuf is the read buffer of a connection that has a reader
// goroutine of its own.
const fallbackReadBuf = 4096

// watch starts reading c: through the gateway's poller when it can watch
// the socket (a plain TCP socket on Linux), otherwise with a reader
// goroutine of c's own that blocks in Read. Either way onReadable does the
// work, one turn at a time.
func (g *Gateway) watch(c *conn, p *poller) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return // Shutdown cut it already
	}
	if p != nil && !g.noPoller {
		ok, err := p.watch(c)
		if ok {
			return
		}
		if err != nil {
			g.log.Debug("poller cannot watch connection; using a reader goroutine", "conn", c.id, "err", err)
		}
	}
	c.armCh = make(chan struct{}, 1)
	c.armCh <- struct{}{}
	go c.readBlocking()
}

// readBlocking is the fallback reader: one blocking read per turn. Its
// deadline is the sweeper's, which closes the socket of a silent client.
func (c *conn) readBlocking() {
	buf := make([]byte, fallbackReadBuf)
	read := func(b []byte) (int, error) {
		n, err := c.nc.Read(b)
		if err == nil {
			err = errWouldBlock // one read per turn, then wait to be armed
		}
		return n, err
	}
	for range c.armCh {
		c.onReadable(buf, read)
	}
}
