package broker

import (
	"errors"
	"fmt"
	"testing"

	"github.com/switchboard/switchboard/protocol"
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
