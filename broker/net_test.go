package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/peer"
)

// testNet runs brokers in one process over fakes of what node/ wires in:
// one shared registry applied synchronously, peer calls that run the
// target's handler in the caller's goroutine, and a cluster view that says
// every node not stopped is alive. Links can be cut, and one-way frames
// lost, per direction, which is what the broker must survive.
type testNet struct {
	t       *testing.T
	mu      sync.Mutex
	reg     *session.Registry
	brokers map[string]*Broker
	zones   map[string]string
	order   []string
	cut     map[[2]string]bool          // from → to: calls and sends fail at the link level
	lose    map[[2]string]bool          // from → to: one-way frames vanish, Send says nil
	stall   map[[2]string]chan struct{} // from → to: Send blocks until closed
	now     int64
	tune    func(*Config) // adjusts every broker's config, when set
	// afterCall, when set, runs after every peer call a broker makes,
	// in the caller's goroutine: a test's way to act at an exact point.
	afterCall func(from, to string, method uint8, err error)
}

// newTestNet starts brokers n1..nN in zones a, b, c, … of region r1;
// tune, if given, adjusts their configs.
func newTestNet(t *testing.T, n int, tune ...func(*Config)) *testNet {
	t.Helper()
	tn := &testNet{
		t: t, reg: session.NewRegistry(), brokers: map[string]*Broker{}, zones: map[string]string{},
		cut: map[[2]string]bool{}, lose: map[[2]string]bool{}, stall: map[[2]string]chan struct{}{},
	}
	if len(tune) > 0 {
		tn.tune = tune[0]
	}
	for i := range n {
		id := fmt.Sprintf("n%d", i+1)
		tn.zones[id] = string(rune('a' + i))
		tn.order = append(tn.order, id)
	}
	for _, id := range tn.order {
		tn.start(id)
	}
	t.Cleanup(func() {
		for _, id := range tn.order {
			tn.stop(id)
		}
	})
	return tn
}

// start starts (or restarts, empty) the broker of node id.
func (tn *testNet) start(id string) {
	tn.t.Helper()
	cfg := DefaultConfig()
	cfg.NodeID, cfg.Region, cfg.Zone = id, "r1", tn.zones[id]
	cfg.CallTimeout = time.Second
	cfg.Heartbeat = 50 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if tn.tune != nil {
		tn.tune(&cfg)
	}
	b, err := New(cfg, testReg{tn}, testPeers{tn, id}, testCluster{tn, id})
	if err != nil {
		tn.t.Fatal(err)
	}
	tn.mu.Lock()
	tn.brokers[id] = b
	tn.mu.Unlock()
}

// stop stops node id's broker, as a crash would: what it held is gone.
func (tn *testNet) stop(id string) {
	tn.mu.Lock()
	b := tn.brokers[id]
	delete(tn.brokers, id)
	tn.mu.Unlock()
	if b != nil {
		_ = b.Close()
	}
}

func (tn *testNet) broker(id string) *Broker {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return tn.brokers[id]
}

// setCut cuts (or restores) the links from → to.
func (tn *testNet) setCut(from, to string, cut bool) {
	tn.mu.Lock()
	tn.cut[[2]string{from, to}] = cut
	tn.mu.Unlock()
}

// setStall makes one-way frames from → to block, as on a link whose peer
// stopped reading, until the returned release is called (the test's
// cleanup calls it too).
func (tn *testNet) setStall(from, to string) (release func()) {
	ch := make(chan struct{})
	tn.mu.Lock()
	tn.stall[[2]string{from, to}] = ch
	tn.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			tn.mu.Lock()
			delete(tn.stall, [2]string{from, to})
			tn.mu.Unlock()
			close(ch)
		})
	}
	tn.t.Cleanup(release)
	return release
}

// sent waits until from's outbox to `to` has sent everything queued.
func (tn *testNet) sent(from, to string) {
	tn.t.Helper()
	b := tn.broker(from)
	o := b.outbox(to)
	eventually(tn.t, 2*time.Second, from+"'s outbox to "+to+" to empty", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return !o.running && len(o.q) == 0
	})
}

// setLose makes one-way frames from → to vanish (or arrive again) while
// Send reports success: frames queued on a link that then died.
func (tn *testNet) setLose(from, to string, lose bool) {
	tn.mu.Lock()
	tn.lose[[2]string{from, to}] = lose
	tn.mu.Unlock()
}

func (tn *testNet) entry(user string) session.Entry {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	e, _ := tn.reg.Get(user)
	return e
}

// propose applies c as a committed command; it bypasses every broker, as a
// command from elsewhere (the leader's node-failed) would.
func (tn *testNet) propose(c session.Command) session.Result {
	tn.mu.Lock()
	tn.now++
	c.Now = max(c.Now, time.Now().UnixMilli()+tn.now)
	res := tn.reg.Apply(c)
	bs := make([]*Broker, 0, len(tn.brokers))
	for _, b := range tn.brokers {
		bs = append(bs, b)
	}
	tn.mu.Unlock()
	for _, b := range bs {
		b.Applied(c, res)
	}
	return res
}

// target returns the running broker a call from → to reaches, or the
// link-level error the caller would see.
func (tn *testNet) target(from, to string) (*Broker, bool, error) {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	b := tn.brokers[to]
	if b == nil || tn.cut[[2]string{from, to}] {
		// As a refused dial: the call never left.
		return nil, false, fmt.Errorf("%w: %w: %s -> %s", peer.ErrUnavailable, peer.ErrNotSent, from, to)
	}
	return b, tn.lose[[2]string{from, to}], nil
}

type testReg struct{ tn *testNet }

func (r testReg) Get(user string) (session.Entry, bool) {
	r.tn.mu.Lock()
	defer r.tn.mu.Unlock()
	return r.tn.reg.Get(user)
}

func (r testReg) Propose(ctx context.Context, c session.Command) (session.Result, error) {
	if err := ctx.Err(); err != nil {
		return session.Result{}, err
	}
	return r.tn.propose(c), nil
}

type testPeers struct {
	tn   *testNet
	from string
}

// handlers is a broker's peer methods, as a peer.Registry collects them.
type handlers map[uint8]peer.Handler

func (hs handlers) Handle(method uint8, h peer.Handler, _ bool) { hs[method] = h }

func (p testPeers) handler(b *Broker, method uint8) peer.Handler {
	hs := handlers{}
	b.Serve(hs)
	if h := hs[method]; h != nil {
		return h
	}
	p.tn.t.Errorf("no handler for method %d", method)
	return func(context.Context, string, []byte) ([]byte, error) {
		return nil, fmt.Errorf("%w: %d", peer.ErrUnknownMethod, method)
	}
}

func (p testPeers) Call(ctx context.Context, node string, method uint8, payload []byte) ([]byte, error) {
	out, err := p.call(ctx, node, method, payload)
	if hook := p.tn.afterCall; hook != nil {
		hook(p.from, node, method, err)
	}
	return out, err
}

func (p testPeers) call(ctx context.Context, node string, method uint8, payload []byte) ([]byte, error) {
	b, _, err := p.tn.target(p.from, node)
	if err != nil {
		return nil, err
	}
	return p.handler(b, method)(ctx, p.from, append([]byte(nil), payload...))
}

func (p testPeers) Send(ctx context.Context, node string, method uint8, payload []byte) error {
	p.tn.mu.Lock()
	stall := p.tn.stall[[2]string{p.from, node}]
	p.tn.mu.Unlock()
	if stall != nil {
		<-stall // a link whose peer stopped reading: nothing honours ctx here
	}
	b, lose, err := p.tn.target(p.from, node)
	if err != nil || lose {
		return err
	}
	_, _ = p.handler(b, method)(ctx, p.from, append([]byte(nil), payload...))
	return nil
}

type testCluster struct {
	tn   *testNet
	self string
}

func (c testCluster) Alive(node string) bool { return c.tn.broker(node) != nil }

func (c testCluster) Endpoints() []Endpoint { return nil }

func (c testCluster) Peers() []Peer {
	var out []Peer
	for _, id := range c.tn.order {
		if id != c.self && c.tn.broker(id) != nil {
			out = append(out, Peer{ID: id, Region: "r1", Zone: c.tn.zones[id]})
		}
	}
	return out
}

func (c testCluster) Solo() bool { return false }

// testSink is a client connection: it records what it is sent and how it
// was closed.
type testSink struct {
	id   uint64
	user string

	mu      sync.Mutex
	welcome protocol.Welcome
	seqs    []uint64 // seq of every message frame, in order
	frames  int      // every frame, welcome included
	closed  int      // close code, 0 while open
}

var sinkIDs atomic.Uint64

func newTestSink(user string) *testSink { return &testSink{id: sinkIDs.Add(1), user: user} }

func (s *testSink) ID() uint64   { return s.id }
func (s *testSink) User() string { return s.user }

func (s *testSink) Send(seq uint64, frame []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed != 0 {
		return false
	}
	s.frames++
	if s.frames == 1 {
		if err := json.Unmarshal(frame, &s.welcome); err != nil {
			panic(fmt.Sprintf("first frame %s is no welcome: %v", frame, err))
		}
	} else {
		s.seqs = append(s.seqs, seq)
	}
	return true
}

func (s *testSink) Close(err error, _ []string) {
	code := int(protocol.CloseOf(err))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed == 0 {
		s.closed = code
	}
}

// state returns the highest seq received and the close code.
func (s *testSink) state() (last uint64, closed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seqs) > 0 {
		last = s.seqs[len(s.seqs)-1]
	}
	return last, s.closed
}

// hello connects a new sink for user at node, resuming after seq.
func (tn *testNet) hello(node, user string, resume *protocol.Resume) (*testSink, error) {
	tn.t.Helper()
	s := newTestSink(user)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s, tn.broker(node).Hello(ctx, s, user, resume)
}

// publish publishes one message to user through node.
func (tn *testNet) publish(node, user, id string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r := tn.broker(node).Publish(ctx, []PublishRequest{{Key: session.UserKey(user), ID: id, Data: []byte(`{}`)}})[0]
	return r.Seq, r.Err
}

// eventually polls cond until it holds or fails the test after d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}
