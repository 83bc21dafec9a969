package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
)

// TestFailedFetchKeepsTheOldOwnerFindable: a node takes a stream over, but
// cannot reach the old owner for the fetch, and the backup the registry
// names holds nothing (it restarted faster than gossip noticed). The old
// owner, sealed by the claim, still holds every acknowledged message. A
// later attempt must recover them from it, not start a new session.
func TestFailedFetchKeepsTheOldOwnerFindable(t *testing.T) {
	tn := newTestNet(t, 3)
	if _, err := tn.hello("n1", "u", &protocol.Resume{}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if _, err := tn.publish("n1", "u", fmt.Sprintf("m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	before := tn.entry("u")
	backup, taker := before.Backup, "n2"
	if backup == taker {
		taker = "n3"
	}
	tn.stop(backup)
	tn.start(backup)

	// The taker cannot reach n1: its attach fails, and so does the fetch.
	tn.setCut(taker, "n1", true)
	resume := &protocol.Resume{Session: before.Session, Seq: 0}
	if _, err := tn.hello(taker, "u", resume); !errors.Is(err, protocol.ErrUnavailable) {
		t.Fatalf("hello at %s with n1 unreachable and %s empty: err = %v, want ErrUnavailable", taker, backup, err)
	}
	tn.setCut(taker, "n1", false)

	// Retries are answered "unavailable" until n1 can be asked again;
	// none may give up on the stream.
	var s *testSink
	eventually(t, 3*downFor, "a hello to succeed", func() bool {
		var err error
		s, err = tn.hello(taker, "u", resume)
		if err != nil && !errors.Is(err, protocol.ErrUnavailable) {
			t.Fatalf("hello: %v", err)
		}
		return err == nil
	})
	s.mu.Lock()
	w, got := s.welcome, fmt.Sprint(s.seqs)
	s.mu.Unlock()
	if !w.Resumed || w.Session != before.Session || got != "[1 2]" {
		t.Fatalf("welcome %+v with replay %s; want session %s resumed with [1 2]", w, got, before.Session)
	}
}

// dieAfterHandoff makes node `victim` stop talking to everyone right after
// its Handoff call returns, as a process that crashed there would; it
// blocks the victim's goroutine until the test ends.
func dieAfterHandoff(t *testing.T, tn *testNet) (arm func(victim string)) {
	var armed atomic.Value
	armed.Store("")
	frozen := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(frozen) }) })
	tn.afterCall = func(from, _ string, method uint8, err error) {
		if method != peerapi.Handoff.ID || err != nil || from != armed.Load().(string) {
			return
		}
		for _, other := range tn.order {
			if other != from {
				tn.setCut(from, other, true)
			}
		}
		<-frozen
	}
	return func(victim string) { armed.Store(victim) }
}

// failNode records node as failed, as the leader and gossip would.
func failNode(tn *testNet, node string) {
	tn.stop(node)
	tn.propose(session.Command{Kind: session.KindNodeFailed, Node: node})
	for _, id := range tn.order {
		if b := tn.broker(id); b != nil {
			b.NodeDown(node)
		}
	}
}

// resumesWith connects user at node resuming session from seq 0 and
// checks that it continues the stream with exactly want replayed.
func resumesWith(t *testing.T, tn *testNet, node, user, sess string, want string) {
	t.Helper()
	s, err := tn.hello(node, user, &protocol.Resume{Session: sess, Seq: 0})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	w, got := s.welcome, fmt.Sprint(s.seqs)
	s.mu.Unlock()
	if !w.Resumed || w.Session != sess || got != want {
		t.Fatalf("acknowledged messages lost: welcome session changed %v, resumed %v, replay %s; want %s", w.Session != sess, w.Resumed, got, want)
	}
}

// TestTakeoverByTheBackupSurvivesItsCrash: a connection arrives at the
// stream's backup while the owner's stream is idle, so the backup takes it
// over: its claim names the old owner as backup, the old owner hands the
// stream over, and the new owner drops its replica. The new owner crashing
// before it copied the stream anywhere is one failure: the old owner still
// holds every acknowledged message (it keeps the handed-over stream,
// retired), and a resume finds them.
func TestTakeoverByTheBackupSurvivesItsCrash(t *testing.T) {
	tn := newTestNet(t, 3)
	arm := dieAfterHandoff(t, tn)
	s1, err := tn.hello("n1", "u", &protocol.Resume{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tn.publish("n1", "u", "m1"); err != nil {
		t.Fatal(err)
	}
	before := tn.entry("u")
	backup := before.Backup
	tn.broker("n1").Gone(s1)
	eventually(t, 2*time.Second, "the registry to say detached", func() bool { return tn.entry("u").State == session.Detached })
	arm(backup)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = tn.broker(backup).Hello(ctx, newTestSink("u"), "u", &protocol.Resume{Session: before.Session, Seq: 1})
	}()
	eventually(t, 2*time.Second, "the backup's claim", func() bool { return tn.entry("u").Owner == backup })
	failNode(tn, backup)
	resumesWith(t, tn, "n1", "u", before.Session, "[1]")
}

// TestDrainHandoverSurvivesTheTakersCrash: the same window on a drain,
// where the draining owner hands each stream to its backup first.
func TestDrainHandoverSurvivesTheTakersCrash(t *testing.T) {
	tn := newTestNet(t, 3)
	arm := dieAfterHandoff(t, tn)
	if _, err := tn.hello("n1", "u", &protocol.Resume{}); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.publish("n1", "u", "m1"); err != nil {
		t.Fatal(err)
	}
	before := tn.entry("u")
	backup := before.Backup
	arm(backup)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = tn.broker("n1").Drain(ctx)
	}()
	eventually(t, 2*time.Second, "the backup's claim", func() bool { return tn.entry("u").Owner == backup })
	failNode(tn, backup)
	other := "n2"
	if backup == other {
		other = "n3"
	}
	resumesWith(t, tn, other, "u", before.Session, "[1]")
}

// TestTakeoverDoesNotTakeFromTheNodeThatTookOverFirst: the nodes attached
// to a dead owner all find it gone at once and race to take its stream
// over. One that decided on the old entry, but claims after another won,
// must go to the winner, not take the stream from a live owner (a second
// takeover would, for a channel, also lose the first new owner's pending
// presence reconciliation).
func TestTakeoverDoesNotTakeFromTheNodeThatTookOverFirst(t *testing.T) {
	tn := newTestNet(t, 3)
	if _, err := tn.hello("n1", "u", &protocol.Resume{}); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.publish("n1", "u", "m1"); err != nil {
		t.Fatal(err)
	}
	seen := tn.entry("u")
	tn.stop("n1")
	key := session.UserKey("u")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	avoid := func() map[string]bool { return map[string]bool{"n1": true} }
	if _, err := tn.broker("n2").takeover(ctx, key, avoid(), true, &seen); err != nil {
		t.Fatalf("first takeover: %v", err)
	}
	won := tn.entry("u")
	_, err := tn.broker("n3").takeover(ctx, key, avoid(), true, &seen)
	var oe *ownedElsewhere
	if !errors.As(err, &oe) || oe.entry.Owner != "n2" {
		t.Fatalf("second takeover on the old entry: err = %v, want ownedElsewhere naming n2", err)
	}
	if e := tn.entry("u"); e.Owner != "n2" || e.Epoch != won.Epoch {
		t.Fatalf("entry after the second attempt %+v, want n2's %+v", e, won)
	}
}

// TestAttachDuringAClaimIsBusy: a node asked to attach to a stream it has
// claimed but does not serve yet answers "busy" (ask again), not "not
// here", which would have the asker take the stream from it.
func TestAttachDuringAClaimIsBusy(t *testing.T) {
	tn := newTestNet(t, 1)
	b := tn.broker("n1")
	key := session.ChannelKey("room")
	b.mu.Lock()
	b.claiming[key] = true
	b.mu.Unlock()
	_, err := b.serveAttach(peerapi.AttachRequest{Key: key, Node: "n2"})
	if !errors.Is(err, protocol.ErrUnavailable) || errors.Is(err, peerapi.ErrNotHere) {
		t.Fatalf("attach during a claim: %v, want busy (ErrUnavailable)", err)
	}
}
