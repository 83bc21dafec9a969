package broker

import (
	"testing"
	"time"

	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
)

// TestQuietReplicaKeptWhileNamedBackup: a user stays connected and
// receives nothing for longer than the resume window, so its replica
// holds no message. The backup keeps it while the registry names it, and
// the owner's crash loses no continuity.
func TestQuietReplicaKeptWhileNamedBackup(t *testing.T) {
	tn := newTestNet(t, 3)
	backup := ownedAtN1(t, tn, "u")
	b := tn.broker(backup)
	later := time.Now().Add(2 * time.Duration(b.cfg.Stream.Window) * time.Millisecond)
	b.expireReplicas(later)
	r := b.replicaFor(session.UserKey("u"))
	if r == nil {
		t.Fatal("replica dropped while the registry names this node the backup")
	}
	r.mu.Lock()
	n, last := r.stream.Len(), r.stream.Last()
	r.mu.Unlock()
	if n != 0 || last != 1 {
		t.Fatalf("replica holds %d messages up to seq %d, want none (trimmed) up to 1", n, last)
	}
	sess := tn.entry("u").Session
	tn.stop("n1")
	tn.propose(session.Command{Kind: session.KindNodeFailed, Node: "n1"})
	s, err := tn.hello(backup, "u", &protocol.Resume{Session: sess, Seq: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !s.welcome.Resumed || s.welcome.Session != sess || s.welcome.Seq != 1 {
		t.Fatalf("welcome %+v, want session %s resumed at seq 1", s.welcome, sess)
	}
}
