package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
)

// gatedSink is a connection whose writes can be held: while its gate is
// shut, Send waits. Sink.Send never blocks in the gateway; a held one is
// the extreme of a slow write, and shows what waits for it.
type gatedSink struct {
	*testSink
	gmu  sync.Mutex
	gate chan struct{} // nil: open
	// channel: it carries channel messages, whose seq is in the frame
	// (a connection's Send carries its user stream's).
	channel bool
}

func newGatedSink(user string) *gatedSink { return &gatedSink{testSink: newTestSink(user)} }

func (g *gatedSink) Send(seq uint64, frame []byte) bool {
	g.gmu.Lock()
	gate := g.gate
	g.gmu.Unlock()
	if gate != nil {
		<-gate
	}
	if g.channel {
		var m struct{ Seq uint64 }
		if err := json.Unmarshal(frame, &m); err != nil {
			panic(err)
		}
		seq = m.Seq
	}
	return g.testSink.Send(seq, frame)
}

// shut holds its writes until the returned release (idempotent) runs.
func (g *gatedSink) shut() (release func()) {
	g.gmu.Lock()
	defer g.gmu.Unlock()
	gate := make(chan struct{})
	g.gate = gate
	var once sync.Once
	return func() {
		once.Do(func() {
			g.gmu.Lock()
			g.gate = nil
			g.gmu.Unlock()
			close(gate)
		})
	}
}

func (s *testSink) seqsCopy() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seqs)
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// publishWithin publishes n messages to key through node and fails the
// test unless they are answered within d.
func publishWithin(t *testing.T, tn *testNet, node string, key session.Key, n int, d time.Duration) uint64 {
	t.Helper()
	reqs := make([]PublishRequest, n)
	for i := range reqs {
		reqs[i] = PublishRequest{Key: key, Data: []byte(`{}`)}
	}
	done := make(chan []PublishResult, 1)
	go func() { done <- tn.broker(node).Publish(context.Background(), reqs) }()
	select {
	case res := <-done:
		for _, r := range res {
			if r.Err != nil {
				t.Fatalf("publish to %s: %v", key, r.Err)
			}
		}
		return res[len(res)-1].Seq
	case <-time.After(d):
		t.Fatalf("publish to %s not answered within %v", key, d)
		return 0
	}
}

// TestLocalFanoutKeepsOrderForConnectionsJoiningMidQueue: a stream with
// more local connections than fanoutInline delivers through its queue. A
// connection that joins while messages are queued, from any position,
// gets exactly the messages after its position, once each, in order —
// its replay and the queue do not overlap — and so does every connection
// that was there before.
func TestLocalFanoutKeepsOrderForConnectionsJoiningMidQueue(t *testing.T) {
	cases := []struct {
		name   string
		resume func(before uint64) *protocol.Resume
		// want is the joiner's seqs, given the acknowledged seq when it
		// joined and the last one.
		want func(before, last uint64) []uint64
	}{
		{"from the start", func(uint64) *protocol.Resume { return &protocol.Resume{Seq: 0} },
			func(_, last uint64) []uint64 { return seqRange(1, last) }},
		{"from a queued seq", func(uint64) *protocol.Resume { return &protocol.Resume{Seq: 2} },
			func(_, last uint64) []uint64 { return seqRange(3, last) }},
		{"from the last acknowledged seq", func(before uint64) *protocol.Resume { return &protocol.Resume{Seq: before} },
			func(before, last uint64) []uint64 { return seqRange(before+1, last) }},
		{"new (no resume)", func(uint64) *protocol.Resume { return nil },
			func(before, last uint64) []uint64 { return seqRange(before+1, last) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tn := newTestNet(t, 2)
			user := "fan-" + tc.name
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			stalled := newGatedSink(user)
			if err := tn.broker("n1").Hello(ctx, stalled, user, &protocol.Resume{}); err != nil {
				t.Fatal(err)
			}
			others := make([]*testSink, fanoutInline)
			for i := range others {
				s, err := tn.hello("n1", user, &protocol.Resume{})
				if err != nil {
					t.Fatal(err)
				}
				others[i] = s
			}
			release := stalled.shut()
			t.Cleanup(release)
			key := session.UserKey(user)
			// Acknowledged while the first delivery waits on the
			// stalled connection: these stay queued.
			for range 3 {
				publishWithin(t, tn, "n1", key, 1, 2*time.Second)
			}
			before := publishWithin(t, tn, "n1", key, 2, 2*time.Second)
			joiner, err := tn.hello("n1", user, tc.resume(before))
			if err != nil {
				t.Fatal(err)
			}
			last := publishWithin(t, tn, "n1", key, 3, 2*time.Second)
			release()
			all := append([]*testSink{stalled.testSink, joiner}, others...)
			for _, s := range all {
				eventually(t, 2*time.Second, "every connection to get the last seq", func() bool {
					l, _ := s.state()
					return l >= last
				})
			}
			for i, s := range all {
				want := seqRange(1, last)
				if s == joiner {
					want = tc.want(before, last)
				}
				if got := s.seqsCopy(); !slices.Equal(got, want) {
					t.Errorf("connection %d got seqs %v, want %v", i, got, want)
				}
			}
		})
	}
}

// TestChannelPublishAckedWithoutWaitingForLocalSubscribers: the owner of
// a channel with many local subscribers answers a publish once the backup
// has the message. A subscriber whose connection does not take its
// writes delays neither the answer nor later publishes; when it takes
// them again, every subscriber has every message once, in order.
func TestChannelPublishAckedWithoutWaitingForLocalSubscribers(t *testing.T) {
	tn := newTestNet(t, 2)
	key := session.ChannelKey("ticker:fan")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	subs := make([]*gatedSink, 2*fanoutInline)
	for i := range subs {
		subs[i] = newGatedSink(fmt.Sprintf("u%d", i))
		subs[i].channel = true
		if err := tn.broker("n1").Subscribe(ctx, subs[i], protocol.Subscription{Channel: "ticker:fan"}); err != nil {
			t.Fatal(err)
		}
	}
	if e := tn.entry(key.String()); e.Owner != "n1" {
		t.Fatalf("entry %+v, want owner n1", e)
	}
	release := subs[0].shut()
	t.Cleanup(release)
	var last uint64
	for range 20 {
		last = publishWithin(t, tn, "n2", key, 1, time.Second)
	}
	release()
	for i, s := range subs {
		eventually(t, 2*time.Second, "every subscriber to get the last seq", func() bool {
			l, _ := s.state()
			return l >= last
		})
		if got := s.seqsCopy(); !slices.Equal(got, seqRange(1, last)) {
			t.Errorf("subscriber %d got seqs %v, want 1..%d", i, got, last)
		}
	}
}

// TestLocalFanoutQueueIsBounded: while fanoutLimit messages wait for the
// stream's local connections, a further publish waits for room rather
// than queueing without bound; it is answered once they drain.
func TestLocalFanoutQueueIsBounded(t *testing.T) {
	tn := newTestNet(t, 2)
	user := "fan-bound"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stalled := newGatedSink(user)
	if err := tn.broker("n1").Hello(ctx, stalled, user, &protocol.Resume{}); err != nil {
		t.Fatal(err)
	}
	for range fanoutInline {
		if _, err := tn.hello("n1", user, &protocol.Resume{}); err != nil {
			t.Fatal(err)
		}
	}
	release := stalled.shut()
	t.Cleanup(release)
	key := session.UserKey(user)
	publishWithin(t, tn, "n1", key, 1, 2*time.Second)           // its delivery waits on the stalled connection
	publishWithin(t, tn, "n1", key, fanoutLimit, 5*time.Second) // fills the queue
	done := make(chan uint64, 1)
	go func() {
		r := tn.broker("n1").Publish(context.Background(), []PublishRequest{{Key: key, Data: []byte(`{}`)}})[0]
		done <- r.Seq
	}()
	select {
	case seq := <-done:
		t.Fatalf("publish answered (seq %d) while the local queue was full", seq)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	select {
	case seq := <-done:
		if seq != fanoutLimit+2 {
			t.Fatalf("publish got seq %d, want %d", seq, fanoutLimit+2)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("publish not answered after the queue drained")
	}
}
