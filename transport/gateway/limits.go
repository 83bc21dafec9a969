package gateway

import (
	"encoding/json"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/switchboard/switchboard/protocol"
)

// The gateway's limits (DESIGN.md §7) answer at three points: before the
// upgrade (Origin, connections per node, new connections per client IP:
// an HTTP error with a JSON body, no WebSocket), after the hello
// (connections per user: 4029), and on every frame (frames per
// connection: 4029, conn.process).

// Limit names one of the gateway's limits, as Refusals counts them.
type Limit int

// The gateway's limits.
const (
	LimitOrigin          Limit = iota // CheckOrigin: 403
	LimitConnectRate                  // ConnectRate: 429
	LimitConnections                  // MaxConnections: 503
	LimitUserConnections              // MaxConnectionsPerUser: 4029
	LimitFrameRate                    // FrameRate: 4029
	numLimits
)

var limitNames = [numLimits]string{"origin", "connect_rate", "connections", "connections_per_user", "frame_rate"}

// String is the limit's metric label.
func (l Limit) String() string {
	if l < 0 || l >= numLimits {
		return "unknown"
	}
	return limitNames[l]
}

// Refusals counts, by Limit, the connections a limit refused or ended.
type Refusals [numLimits]int64

// Refusals returns how many times each limit has refused a connection or
// ended one.
func (g *Gateway) Refusals() (counts Refusals) {
	for i := range counts {
		counts[i] = g.refusals[i].Load()
	}
	return counts
}

// SlowConsumers returns how many connections were closed as slow
// consumers (4008): their send queue overflowed, or the broker gave up
// on a stream they could not keep up with.
func (g *Gateway) SlowConsumers() int64 { return g.slowConsumers.Load() }

// refused counts one refusal by l.
func (g *Gateway) refused(l Limit) { g.refusals[l].Add(1) }

// admit decides whether an upgrade request may become a connection and,
// if so, holds a connection slot for it (released by releaseSlot if the
// upgrade fails, else when the connection is unregistered). A refusal
// says after how many seconds to retry, 0 for none.
func (g *Gateway) admit(r *http.Request) (retryAfter int, err error) {
	if r.Header.Get("Origin") != "" && !g.cfg.CheckOrigin(r) {
		g.refused(LimitOrigin)
		return 0, protocol.Errorf(protocol.ErrForbidden, "origin %q is not allowed", r.Header.Get("Origin"))
	}
	if g.ips != nil && !g.ips.allow(clientIP(r), time.Now()) {
		g.refused(LimitConnectRate)
		return int(math.Ceil(1 / g.cfg.ConnectRate)),
			protocol.Errorf(protocol.ErrRateLimited, "more than %g new connections per second from this address", g.cfg.ConnectRate)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if limit := g.cfg.MaxConnections; limit > 0 && g.slots >= limit {
		g.refused(LimitConnections)
		return 1, protocol.Errorf(protocol.ErrTooManyConnections, "node at its limit of %d connections; try another endpoint", limit)
	}
	g.slots++
	return 0, nil
}

// releaseSlot gives back the slot of an upgrade that failed.
func (g *Gateway) releaseSlot() {
	g.mu.Lock()
	g.slots--
	g.mu.Unlock()
}

// writeRefusal answers a refused upgrade: the contract's status for err,
// Retry-After when retryAfter > 0, and a JSON {"error":…} body.
func writeRefusal(w http.ResponseWriter, err error, retryAfter int) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.WriteHeader(protocol.StatusOf(err))
	b, _ := json.Marshal(protocol.Error{Error: err.Error()})
	_, _ = w.Write(append(b, '\n'))
}

// countUser counts c, whose user is known, against MaxConnectionsPerUser.
func (g *Gateway) countUser(c *conn) error {
	limit := g.cfg.MaxConnectionsPerUser
	if limit <= 0 {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.perUser[c.user] >= limit {
		g.refused(LimitUserConnections)
		return protocol.Errorf(protocol.ErrTooManyConnections, "user has %d connections on this node, the most allowed", limit)
	}
	g.perUser[c.user]++
	c.userCounted = true
	return nil
}

// clientIP is the address the request came from. Headers a proxy may set
// (X-Forwarded-For) are not trusted: anyone can send them.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// burstOf is one second's worth of a rate, at least one.
func burstOf(perSecond float64) int {
	return max(1, int(math.Ceil(perSecond)))
}

// maxTrackedIPs bounds the client addresses whose connect rate is tracked.
const maxTrackedIPs = 1 << 16

// ipLimiter limits new connections per client address.
type ipLimiter struct {
	limit rate.Limit
	burst int

	mu  sync.Mutex
	ips map[string]*rate.Limiter
}

func newIPLimiter(perSecond float64) *ipLimiter {
	if perSecond <= 0 {
		return nil
	}
	return &ipLimiter{limit: rate.Limit(perSecond), burst: burstOf(perSecond), ips: make(map[string]*rate.Limiter)}
}

// allow takes one connection from ip's allowance at now.
func (l *ipLimiter) allow(ip string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.ips[ip]
	if lim == nil {
		if len(l.ips) >= maxTrackedIPs {
			l.pruneLocked(now)
		}
		lim = rate.NewLimiter(l.limit, l.burst)
		l.ips[ip] = lim
	}
	return lim.AllowN(now, 1)
}

// pruneLocked forgets the addresses whose allowance has refilled: their
// limiter is as good as a new one. If that is not a quarter of them (a
// flood from more addresses than are tracked), it forgets arbitrary ones
// until it is: the bound on memory wins over the limit's precision, and
// pruning a quarter at a time keeps the cost per new address constant.
func (l *ipLimiter) pruneLocked(now time.Time) {
	for ip, lim := range l.ips {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.ips, ip)
		}
	}
	for ip := range l.ips {
		if len(l.ips) <= maxTrackedIPs*3/4 {
			break
		}
		delete(l.ips, ip)
	}
}
