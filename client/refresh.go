package client

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/switchboard/switchboard/protocol"
)

// Token refresh (DESIGN.md §3): a live connection replaces its token with
// a refresh frame before the token's exp, so that the node does not close
// it with 4001. When a refresh fails, the node closes the connection at
// exp and the reconnect asks Config.Token again, as after any 4001.

// minRefreshDelay is the shortest wait before a refresh, so that a token
// that has already expired by this machine's clock is not refreshed in a
// tight loop.
const minRefreshDelay = 100 * time.Millisecond

// tokenExpiry returns the exp claim of a JWT, read from its payload
// without verifying the signature (the node does that). ok is false when
// the token is not a JWT or has no usable exp: it is then never refreshed.
func tokenExpiry(token string) (exp time.Time, ok bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	// exp is a NumericDate: seconds, possibly with a fraction. Values past
	// the year 30000 mean "never" in practice (and would overflow).
	sec := *claims.Exp
	if sec <= 0 || sec >= 1<<40 || math.IsNaN(sec) {
		return time.Time{}, false
	}
	whole, frac := math.Modf(sec)
	return time.Unix(int64(whole), int64(frac*1e9)), true
}

// refreshDelay is how long to wait, at now, before refreshing a token that
// expires at exp: until before ahead of exp or, for a token with less than
// before left, half of what is left; never less than minRefreshDelay.
func refreshDelay(now, exp time.Time, before time.Duration) time.Duration {
	left := exp.Sub(now)
	d := left - before
	if left <= before {
		d = left / 2
	}
	return max(d, minRefreshDelay)
}

// refresher keeps one connection's token fresh. The read loop tells it
// when the node accepted a token (welcome, refreshed) or refused a
// refresh; a timer (no goroutine while it waits: a process may hold
// thousands of connections) fires at the moment to refresh, asks
// Config.Token off any lock (it may block) and sends the refresh frame.
// It lives and dies with the connection.
type refresher struct {
	c       *Client
	cn      *conn
	ep      string
	running sync.WaitGroup // a firing timer's refresh, waited for by close

	mu      sync.Mutex
	closed  bool
	timer   *time.Timer // the next refresh, nil when none is scheduled
	gen     uint64      // which timer may refresh: a stopped one that fired anyway may not
	current string      // the token the node holds
	pending string      // a refresh sent and not answered yet
}

// newRefresher returns the refresher of cn, whose hello carried token.
// Nothing is scheduled until the welcome.
func (c *Client) newRefresher(ep string, cn *conn, token string) *refresher {
	return &refresher{c: c, cn: cn, ep: ep, current: token}
}

// close stops the refresher and waits for a refresh in progress (and so
// for a Config.Token call). Call it before the client's channels close.
func (r *refresher) close() {
	r.mu.Lock()
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
	}
	r.mu.Unlock()
	r.running.Wait()
}

// welcomed schedules the refresh of the hello's token. Read loop only.
func (r *refresher) welcomed() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.scheduleLocked()
}

// refreshed handles a refreshed frame: the token sent is now the
// connection's, and its own refresh is scheduled. Read loop only.
func (r *refresher) refreshed(f protocol.Refreshed) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == "" {
		r.c.log.Debug("ignoring refreshed without a refresh", "endpoint", r.ep)
		return
	}
	r.current, r.pending = r.pending, ""
	r.c.log.Debug("token refreshed", "endpoint", r.ep, "exp", f.Exp)
	r.scheduleLocked()
}

// refused reports whether f, an error frame without a channel, answers the
// refresh in flight; if so the failure is reported and nothing more is
// scheduled: the node keeps the old token and closes the connection at
// its exp. Read loop only.
func (r *refresher) refused(f protocol.ErrorFrame) bool {
	if f.Code != protocol.CloseUnauthorized.Slug() {
		return false
	}
	r.mu.Lock()
	pending := r.pending != ""
	r.pending = ""
	r.mu.Unlock()
	if !pending {
		return false
	}
	r.fail(fmt.Errorf("%w: refresh refused: %s", ErrUnauthorized, f.Message))
	return true
}

// scheduleLocked arms the refresh of the current token, replacing any
// scheduled one; a token without exp is never refreshed.
func (r *refresher) scheduleLocked() {
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	r.gen++
	exp, ok := tokenExpiry(r.current)
	if !ok || r.closed {
		return
	}
	d := refreshDelay(time.Now(), exp, r.c.cfg.RefreshBefore)
	r.c.log.Debug("token refresh scheduled", "endpoint", r.ep, "exp", exp, "in", d)
	gen := r.gen
	r.timer = time.AfterFunc(d, func() { r.fire(gen) })
}

// fire runs on the timer's goroutine: it asks Config.Token for a token
// and sends it in a refresh frame.
func (r *refresher) fire(gen uint64) {
	r.mu.Lock()
	if r.closed || gen != r.gen {
		r.mu.Unlock()
		return
	}
	r.timer = nil
	r.running.Add(1) // before close's Wait: closed is false under mu
	r.mu.Unlock()
	defer r.running.Done()

	tok, err := r.c.cfg.Token()
	r.mu.Lock()
	closed, same := r.closed, tok == r.current
	if !closed && err == nil && !same {
		// Set before the write: the answer may come before it returns.
		r.pending = tok
	}
	r.mu.Unlock()
	switch {
	case closed:
		return // the connection is over: nothing to refresh or report
	case err != nil:
		r.fail(fmt.Errorf("%w: refresh: %w", ErrToken, err))
		return
	case same:
		r.fail(fmt.Errorf("%w: refresh: Token returned the token the connection already has", ErrToken))
		return
	}
	b, err := json.Marshal(protocol.ClientFrame{Type: protocol.TypeRefresh, Token: tok})
	if err == nil {
		err = r.cn.write(b, r.c.cfg.DialTimeout)
	}
	if err != nil {
		// A failed write ends the connection; the reconnect gets a token.
		r.mu.Lock()
		r.pending = ""
		r.mu.Unlock()
		r.c.log.Debug("refresh not sent", "endpoint", r.ep, "err", err)
	}
}

// fail reports a refresh that did not happen. The connection goes on with
// its old token until the node closes it at exp.
func (r *refresher) fail(err error) {
	r.c.mu.Lock()
	node, session := r.c.node, r.c.session
	r.c.mu.Unlock()
	r.c.log.Warn("token refresh failed", "endpoint", r.ep, "node", node, "err", err)
	r.c.emit(Event{Kind: EventRefreshFailed, Endpoint: r.ep, Node: node, Session: session, Seq: r.c.lastSeq.Load(), Err: err})
}
