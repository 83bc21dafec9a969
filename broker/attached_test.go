package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
)

// attachedPair connects user at n1 (which takes the stream over) and at
// n2 (which attaches to n1's stream), publishes one message and waits
// until both connections have it.
func attachedPair(t *testing.T, tn *testNet, user string) (local, remote *testSink) {
	t.Helper()
	local, err := tn.hello("n1", user, &protocol.Resume{})
	if err != nil {
		t.Fatal(err)
	}
	remote, err = tn.hello("n2", user, &protocol.Resume{})
	if err != nil {
		t.Fatal(err)
	}
	if e := tn.entry(user); e.Owner != "n1" {
		t.Fatalf("entry %+v, want owner n1", e)
	}
	if _, err := tn.publish("n1", user, "m1"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*testSink{local, remote} {
		// Deliveries to attached nodes leave from an outbox, after the
		// publish is answered.
		eventually(t, 2*time.Second, "both connections to get seq 1", func() bool {
			last, _ := s.state()
			return last >= 1
		})
		if last, closed := s.state(); last != 1 || closed != 0 {
			t.Fatalf("connection has seq %d (closed %d), want seq 1, open", last, closed)
		}
	}
	return local, remote
}

// missedOrResumed waits until the attached connection either has every
// message up to seq or was closed with 4010, which sends its client to
// resume from what it has. Staying open without the message hides it.
func missedOrResumed(t *testing.T, s *testSink, seq uint64) {
	t.Helper()
	eventually(t, 2*time.Second, fmt.Sprintf("the attached connection to get seq %d or be sent to resume", seq), func() bool {
		last, closed := s.state()
		return last >= seq || closed == int(protocol.CloseMoved)
	})
}

// TestAttachedConnectionNotStalledByFailedDeliver: the owner could not
// hand a delivery to the attached node's link at all. The attached
// connection must not wait silently for messages that will never come.
func TestAttachedConnectionNotStalledByFailedDeliver(t *testing.T) {
	tn := newTestNet(t, 3)
	_, remote := attachedPair(t, tn, "u")
	tn.setCut("n1", "n2", true)
	if _, err := tn.publish("n1", "u", "m2"); err != nil {
		t.Fatal(err)
	}
	tn.sent("n1", "n2")
	tn.setCut("n1", "n2", false)
	if _, err := tn.publish("n1", "u", "m3"); err != nil {
		t.Fatal(err)
	}
	missedOrResumed(t, remote, 3)
}

// TestAttachedConnectionLearnsOfLostLastDelivery: the owner's link took a
// delivery and then died with it, and nothing is published after it. The
// attached connection must still learn that it missed a message.
func TestAttachedConnectionLearnsOfLostLastDelivery(t *testing.T) {
	tn := newTestNet(t, 3)
	_, remote := attachedPair(t, tn, "u")
	tn.setLose("n1", "n2", true)
	if _, err := tn.publish("n1", "u", "m2"); err != nil {
		t.Fatal(err)
	}
	tn.sent("n1", "n2")
	tn.setLose("n1", "n2", false)
	missedOrResumed(t, remote, 2)
}

// TestAttachedConnectionResumesWhatItMissed: a connection sent to resume
// after a lost delivery gets exactly the messages it lacks.
func TestAttachedConnectionResumesWhatItMissed(t *testing.T) {
	tn := newTestNet(t, 3)
	_, remote := attachedPair(t, tn, "u")
	tn.setLose("n1", "n2", true)
	for i := 2; i <= 3; i++ {
		if _, err := tn.publish("n1", "u", fmt.Sprintf("m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	tn.sent("n1", "n2")
	tn.setLose("n1", "n2", false)
	missedOrResumed(t, remote, 3)
	last, _ := remote.state()
	again, err := tn.hello("n2", "u", &protocol.Resume{Session: tn.entry("u").Session, Seq: last})
	if err != nil {
		t.Fatal(err)
	}
	again.mu.Lock()
	got := append([]uint64(nil), again.seqs...)
	again.mu.Unlock()
	if want := []uint64{2, 3}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("resumed after seq %d, got %v, want %v", last, got, want)
	}
	if _, err := tn.publish("n1", "u", "m4"); err != nil {
		t.Fatal(err)
	}
	missedOrResumed(t, again, 4)
	if _, closed := again.state(); closed != 0 {
		t.Fatalf("resumed connection closed with %d, want it served live", closed)
	}
}

// TestAttachedConnectionLeavesOwnerThatCannotReachIt: the owner's link to
// the attached node stays broken, so neither deliveries nor tips arrive.
// The attached node must not keep serving heartbeats over a dead stream.
func TestAttachedConnectionLeavesOwnerThatCannotReachIt(t *testing.T) {
	tn := newTestNet(t, 3)
	_, remote := attachedPair(t, tn, "u")
	eventually(t, time.Second, "n2 to hear a tip from n1", func() bool {
		b := tn.broker("n2")
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.tipsFrom["n1"]
	})
	tn.setCut("n1", "n2", true)
	eventually(t, 2*time.Second, "the attached connection to be sent to resume", func() bool {
		_, closed := remote.state()
		return closed == int(protocol.CloseMoved)
	})
}

// TestQuietAttachedConnectionStaysOpen: with the links healthy, tips keep
// an attached connection that gets no messages open, and it is not sent to
// resume when it has everything.
func TestQuietAttachedConnectionStaysOpen(t *testing.T) {
	// Tips every 150 ms: at the test net's usual 50 ms, silence (4 beats)
	// was 200 ms, which a loaded machine under -race sometimes exceeded.
	tn := newTestNet(t, 3, func(c *Config) { c.Heartbeat = 150 * time.Millisecond })
	local, remote := attachedPair(t, tn, "u")
	time.Sleep(20 * tn.broker("n2").cfg.Heartbeat)
	if _, err := tn.publish("n1", "u", "m2"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*testSink{local, remote} {
		missedOrResumed(t, s, 2)
		if last, closed := s.state(); last != 2 || closed != 0 {
			t.Fatalf("connection has seq %d, closed %d; want seq 2, open", last, closed)
		}
	}
}

// TestStalledAttachedNodeDelaysNoOtherStream: an attached node stops
// reading its link. Deliveries to it wait in its outbox, never under a
// stream's lock: a batch publish to its stream and to another stream is
// answered, and the other stream's connection served, while it stalls.
func TestStalledAttachedNodeDelaysNoOtherStream(t *testing.T) {
	tn := newTestNet(t, 3)
	_, remote := attachedPair(t, tn, "a")
	other, err := tn.hello("n1", "b", &protocol.Resume{})
	if err != nil {
		t.Fatal(err)
	}
	release := tn.setStall("n1", "n2")
	done := make(chan []PublishResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		done <- tn.broker("n1").Publish(ctx, []PublishRequest{
			{Key: session.UserKey("a"), ID: "a2", Data: []byte(`{}`)},
			{Key: session.UserKey("b"), ID: "b1", Data: []byte(`{}`)},
			{Key: session.UserKey("a"), ID: "a3", Data: []byte(`{}`)},
		})
	}()
	var res []PublishResult
	select {
	case res = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the publish waits for the stalled node")
	}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("result %d: %v", i, r.Err)
		}
	}
	if last, closed := other.state(); last != 1 || closed != 0 {
		t.Fatalf("the other stream's connection has seq %d (closed %d), want seq 1 while n2 stalls", last, closed)
	}
	release()
	missedOrResumed(t, remote, 3)
}

// TestStaleDetachLeavesTheNextAttachmentAlone: the last connection of a
// user at a node leaves while the node's link to the owner is slow, so the
// detach waits in its outbox; the user connects there again at once and
// the new attach (a direct call) reaches the owner first. The late detach
// must not end the new attachment: its connection gets what follows.
func TestStaleDetachLeavesTheNextAttachmentAlone(t *testing.T) {
	tn := newTestNet(t, 3, func(c *Config) { c.Heartbeat = time.Hour }) // no tips: silence would go unnoticed
	local, err := tn.hello("n1", "u", &protocol.Resume{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := tn.hello("n2", "u", &protocol.Resume{})
	if err != nil {
		t.Fatal(err)
	}
	release := tn.setStall("n2", "n1")
	tn.broker("n2").Gone(first)
	again, err := tn.hello("n2", "u", &protocol.Resume{Seq: 0})
	if err != nil {
		t.Fatal(err)
	}
	release()
	tn.sent("n2", "n1")
	if _, err := tn.publish("n1", "u", "m1"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*testSink{local, again} {
		eventually(t, 2*time.Second, "both connections to get seq 1", func() bool { l, _ := s.state(); return l == 1 })
	}
}

// TestAttachedConnectionsOfALostSessionAreTold: the owner restarts (too
// fast for gossip) with its backup gone too, so its next claim starts a
// new session. A connection attached elsewhere to the old session must be
// told continuity is lost (4011), not fed the new session's messages as
// its continuation when a second connection there attaches to the new one.
func TestAttachedConnectionsOfALostSessionAreTold(t *testing.T) {
	tn := newTestNet(t, 3, func(c *Config) { c.Heartbeat = time.Hour })
	if _, err := tn.hello("n1", "u", &protocol.Resume{}); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.publish("n1", "u", "old1"); err != nil {
		t.Fatal(err)
	}
	backup := tn.entry("u").Backup
	at := "n2"
	if backup == at {
		at = "n3"
	}
	old, err := tn.hello(at, "u", &protocol.Resume{Seq: 0})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "the attached connection to have seq 1", func() bool { l, _ := old.state(); return l == 1 })
	oldSess := tn.entry("u").Session
	tn.stop("n1")
	tn.start("n1")
	tn.stop(backup)
	tn.propose(session.Command{Kind: session.KindNodeFailed, Node: backup})
	if _, err := tn.hello("n1", "u", &protocol.Resume{}); err != nil {
		t.Fatal(err)
	}
	if tn.entry("u").Session == oldSess {
		t.Fatal("the owner's new claim kept the old session")
	}
	if _, err := tn.hello(at, "u", &protocol.Resume{Seq: 0}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if _, err := tn.publish("n1", "u", fmt.Sprintf("new%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := closedWith(t, old); got != protocol.CloseContinuityLost {
		old.mu.Lock()
		defer old.mu.Unlock()
		t.Fatalf("old-session connection closed with %d (seqs %v), want 4011", got, old.seqs)
	}
}

// TestTipsToAStalledNodeDoNotPileUp: while a node reads its link slowly,
// each round of tips replaces the one still waiting for it instead of
// queueing behind it.
func TestTipsToAStalledNodeDoNotPileUp(t *testing.T) {
	tn := newTestNet(t, 3, func(c *Config) { c.Heartbeat = time.Hour })
	attachedPair(t, tn, "u")
	tn.setStall("n1", "n2")
	b := tn.broker("n1")
	for range 10 {
		b.sendTips()
	}
	o := b.outbox("n2")
	b.mu.Lock()
	queued := len(o.q)
	b.mu.Unlock()
	if queued > 1 {
		t.Fatalf("%d frames wait for the stalled node after 10 rounds of tips, want at most 1 (one more in flight)", queued)
	}
}

// slowTips makes the tips too slow to matter: what a test sees is the
// link's doing.
func slowTips(c *Config) { c.Heartbeat = time.Minute }

// A link to the owner that breaks while the owner lives (it answers on a
// new link) changes nothing: the attached connection stays, and goes on
// receiving.
func TestAttachedLinkDownToALiveOwnerKeepsTheConnection(t *testing.T) {
	tn := newTestNet(t, 2, slowTips)
	_, remote := attachedPair(t, tn, "alice")
	tn.broker("n2").LinkDown("n1")
	time.Sleep(100 * time.Millisecond)
	if _, err := tn.publish("n1", "alice", "m2"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "the attached connection to get seq 2", func() bool {
		last, _ := remote.state()
		return last >= 2
	})
	if _, closed := remote.state(); closed != 0 {
		t.Fatalf("attached connection closed %d after a link to a live owner broke", closed)
	}
}

// A link to the owner that breaks and cannot be made again (its process
// died) sends the attached connections to resume at once, not after the
// tips' silence or gossip's verdict.
func TestAttachedLinkDownToADeadOwnerSendsToResume(t *testing.T) {
	tn := newTestNet(t, 2, slowTips)
	_, remote := attachedPair(t, tn, "alice")
	tn.setCut("n2", "n1", true) // n1 still runs: gossip would call it alive
	tn.broker("n2").LinkDown("n1")
	eventually(t, time.Second, "the attached connection to be sent to resume", func() bool {
		_, closed := remote.state()
		return closed == int(protocol.CloseMoved)
	})
}
