package load

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/switchboard/switchboard/client"
	"github.com/switchboard/switchboard/internal/token"
	"github.com/switchboard/switchboard/protocol"
)

// dialWait bounds how long one user may take to get its first welcome.
const dialWait = 60 * time.Second

// user is one simulated user with one SDK client.
type user struct {
	idx  int
	name string
	c    *client.Client

	welcomes  atomic.Int64
	firstNode atomic.Pointer[string] // node of the first welcome
	node      atomic.Pointer[string] // node of the latest welcome

	// The first welcome after the fleet's mark (the kill or drain), its
	// resumed flag and node, and the first message delivered after it;
	// times are UnixNano, 0 when not yet seen.
	postWelcomeAt atomic.Int64
	postResumed   atomic.Bool
	postNode      atomic.Pointer[string]
	postMsgAt     atomic.Int64

	continuityLost atomic.Int64
	gapEvents      atomic.Int64
	regressEvents  atomic.Int64
}

// fleet is the set of users of a run and the goroutines that consume
// their messages and events.
type fleet struct {
	cfg   *Config
	users []*user
	// onMessage is called for every message delivered (after the SDK's
	// de-duplication), on the user's consumer goroutine.
	onMessage func(u *user, m client.Message, now time.Time)

	// mark is when the trigger fired (UnixNano); welcomes after it are
	// "post" welcomes. With operatorMode, a user's second welcome counts
	// as post instead, and the first disconnect sets firstDrop.
	mark         atomic.Int64
	operatorMode bool
	firstDrop    atomic.Int64

	connected atomic.Int64
	dialer    *websocket.Dialer
	wg        sync.WaitGroup
}

func newFleet(cfg *Config, onMessage func(*user, client.Message, time.Time)) *fleet {
	f := &fleet{
		cfg:       cfg,
		onMessage: onMessage,
		// Small buffers and a shared write pool: an idle client should
		// cost the load generator little, so one process holds thousands.
		dialer: &websocket.Dialer{
			ReadBufferSize:  2048,
			WriteBufferSize: 1024,
			WriteBufferPool: &sync.Pool{},
		},
	}
	f.users = make([]*user, cfg.Users)
	for i := range f.users {
		f.users[i] = &user{idx: i, name: cfg.userName(i)}
	}
	return f
}

// connectError reports users that did not connect.
type connectError struct {
	failed, of int
	first      error
}

func (e *connectError) Error() string {
	return fmt.Sprintf("%d of %d users failed to connect, first: %v", e.failed, e.of, e.first)
}

func (e *connectError) Unwrap() []error { return []error{ErrCluster, e.first} }

// connect dials every user, user i with the endpoints order(i) (the first
// is where it connects), at most DialConcurrency at a time, and waits for
// every first welcome. If some fail it returns a *connectError; the users
// that did connect stay connected until close.
func (f *fleet) connect(ctx context.Context, order func(i int) []string) error {
	ttl := f.cfg.Duration + f.cfg.Grace + f.cfg.RetryFor + time.Hour
	sem := make(chan struct{}, max(f.cfg.DialConcurrency, 1))
	var (
		mu     sync.Mutex
		failed int
		first  error
		wg     sync.WaitGroup
	)
	for _, u := range f.users {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return fmt.Errorf("load: connecting users: %w", ctx.Err())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f.dial(ctx, u, order(u.idx), ttl); err != nil {
				mu.Lock()
				failed++
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed > 0 {
		return &connectError{failed: failed, of: len(f.users), first: first}
	}
	return nil
}

func (f *fleet) dial(ctx context.Context, u *user, endpoints []string, ttl time.Duration) error {
	tok, err := token.MintChannels(f.cfg.TokenSecret, u.name, ttl, []string{"*"})
	if err != nil {
		return fmt.Errorf("%w: mint token: %w", ErrConfig, err)
	}
	cc := client.DefaultConfig()
	cc.Endpoints = endpoints
	cc.Token = client.StaticToken(tok)
	cc.Buffer = f.cfg.ClientBuffer
	cc.EventBuffer = 16
	cc.Dialer = f.dialer
	cc.TLS = f.cfg.TLS
	cc.OnWelcome = func(w protocol.Welcome) { f.welcomed(u, w) }
	dctx, cancel := context.WithTimeout(ctx, dialWait)
	defer cancel()
	c, err := client.Dial(dctx, cc)
	if err != nil {
		return fmt.Errorf("user %s: %w", u.name, err)
	}
	u.c = c
	f.connected.Add(1)
	f.wg.Add(1)
	go f.consume(u)
	return nil
}

// welcomed runs on the SDK's read goroutine for every welcome: it must
// not block.
func (f *fleet) welcomed(u *user, w protocol.Welcome) {
	n := u.welcomes.Add(1)
	node := w.Node
	if n == 1 {
		u.firstNode.Store(&node)
	}
	u.node.Store(&node)
	post := f.mark.Load() != 0
	if f.operatorMode {
		post = n >= 2
	}
	if post && u.postWelcomeAt.CompareAndSwap(0, time.Now().UnixNano()) {
		u.postResumed.Store(w.Resumed)
		u.postNode.Store(&node)
	}
}

// consume reads a user's messages and events until the client closes.
func (f *fleet) consume(u *user) {
	defer f.wg.Done()
	msgs, events := u.c.Messages(), u.c.Events()
	for msgs != nil || events != nil {
		select {
		case m, ok := <-msgs:
			if !ok {
				msgs = nil
				continue
			}
			now := time.Now()
			if u.postWelcomeAt.Load() != 0 {
				u.postMsgAt.CompareAndSwap(0, now.UnixNano())
			}
			if f.onMessage != nil {
				f.onMessage(u, m, now)
			}
		case e, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			f.event(u, e)
		}
	}
}

func (f *fleet) event(u *user, e client.Event) {
	switch e.Kind {
	case client.EventContinuityLost:
		u.continuityLost.Add(1)
	case client.EventSequenceAnomaly:
		switch {
		case errors.Is(e.Err, client.ErrSequenceGap):
			u.gapEvents.Add(1)
		case errors.Is(e.Err, client.ErrSequenceRegression):
			u.regressEvents.Add(1)
		}
	case client.EventDisconnected:
		f.firstDrop.CompareAndSwap(0, time.Now().UnixNano())
	}
}

// close stops every client, a bounded number at a time, and waits for the
// consumers.
func (f *fleet) close() {
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	for _, u := range f.users {
		if u.c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_ = u.c.Close()
		}()
	}
	wg.Wait()
	f.wg.Wait()
}

// tolerate turns a partial connect failure into report fields, for
// scenarios that measure the users that did connect.
func tolerate(err error, failed *int, msg *string) error {
	var ce *connectError
	if errors.As(err, &ce) && ce.failed < ce.of {
		*failed, *msg = ce.failed, ce.first.Error()
		return nil
	}
	return err
}

// firstNodes counts users by the node of their first welcome.
func (f *fleet) firstNodes() map[string]int {
	out := map[string]int{}
	for _, u := range f.users {
		if p := u.firstNode.Load(); p != nil {
			out[*p]++
		}
	}
	return out
}

// onNode lists the users whose latest welcome came from node.
func (f *fleet) onNode(node string) []*user {
	var out []*user
	for _, u := range f.users {
		if p := u.node.Load(); p != nil && *p == node {
			out = append(out, u)
		}
	}
	return out
}

// Failover summarizes how users came back after the target went away:
// their first welcome after it, whether it resumed, and the first message
// after it (the RTO), all relative to the trigger.
type Failover struct {
	Rewelcomed     int     `json:"rewelcomed"`
	Resumed        int     `json:"resumed"`
	ContinuityLost int     `json:"continuity_lost"`
	SDKGapEvents   int64   `json:"sdk_gap_events"`
	SDKRegressions int64   `json:"sdk_regression_events"`
	Rewelcome      Latency `json:"rewelcome_ms"`
	RTO            Latency `json:"rto_ms"`
	RTOMissing     int     `json:"rto_missing"`
	LastRewelcome  float64 `json:"last_rewelcome_ms"`
	// ByNode counts where the users landed.
	ByNode map[string]int `json:"rewelcomed_by_node"`
}

func (f *fleet) failover(t0 int64) Failover {
	var out Failover
	out.ByNode = map[string]int{}
	var welcome, rto Histogram
	var last int64
	for _, u := range f.users {
		out.SDKGapEvents += u.gapEvents.Load()
		out.SDKRegressions += u.regressEvents.Load()
		lost := u.continuityLost.Load() > 0
		w := u.postWelcomeAt.Load()
		if w == 0 {
			if lost {
				out.ContinuityLost++
			}
			continue
		}
		out.Rewelcomed++
		if u.postResumed.Load() {
			out.Resumed++
		} else {
			lost = true
		}
		if lost {
			out.ContinuityLost++
		}
		if p := u.postNode.Load(); p != nil {
			out.ByNode[*p]++
		}
		welcome.Record(w - t0)
		last = max(last, w-t0)
		if m := u.postMsgAt.Load(); m != 0 {
			rto.Record(m - t0)
		} else {
			out.RTOMissing++
		}
	}
	out.Rewelcome, out.RTO = welcome.Summary(), rto.Summary()
	out.LastRewelcome = round3(float64(last) / float64(time.Millisecond))
	return out
}
