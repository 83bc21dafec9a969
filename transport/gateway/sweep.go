package gateway

import "time"

// The sweeper is the one clock of all connections: instead of timers per
// connection it visits every connection a few times per interval and lets
// it act on what is due (the hello timeout, WebSocket pings, heartbeats,
// the read deadline, an unfinished close, an expired token). Its cost grows with the number
// of connections, about a microsecond each per visit, and none of it is
// paid by an idle connection's memory.

// sweepTick returns how often the sweeper visits: a quarter of the
// shortest interval it enforces, so each fires at most a quarter late,
// and at least twice a second, so a connection whose token expired is
// closed within a second of its exp (DESIGN.md §7).
func sweepTick(cfg Config) time.Duration {
	d := min(cfg.HelloTimeout, cfg.PingInterval, cfg.Heartbeat) / 4
	return max(5*time.Millisecond, min(d, 500*time.Millisecond))
}

func (g *Gateway) sweep(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(sweepTick(g.cfg))
	defer t.Stop()
	var conns []*conn
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		g.mu.Lock()
		for c := range g.conns {
			conns = append(conns, c)
		}
		g.mu.Unlock()
		now, wall := monoNow(), time.Now().UnixNano()
		for _, c := range conns {
			c.tick(now, wall)
		}
		clear(conns)
		conns = conns[:0]
	}
}
