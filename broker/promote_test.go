package broker

import (
	"context"
	"testing"
	"time"

	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
)

// ownedAtN1 connects user at n1, which takes the stream over, publishes
// one message, and returns the backup the registry names.
func ownedAtN1(t *testing.T, tn *testNet, user string) string {
	t.Helper()
	if _, err := tn.hello("n1", user, &protocol.Resume{}); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.publish("n1", user, "m1"); err != nil {
		t.Fatal(err)
	}
	e := tn.entry(user)
	if e.Owner != "n1" || e.Backup == "" || e.Backup == "n1" {
		t.Fatalf("entry %+v, want owner n1 and a backup", e)
	}
	return e.Backup
}

// TestBackupPromotesStreamNodeFailedOrphaned: the leader's node-failed
// cleared the dead owner before the backup heard of the death. The
// backup still takes the stream over at once.
func TestBackupPromotesStreamNodeFailedOrphaned(t *testing.T) {
	tn := newTestNet(t, 3)
	backup := ownedAtN1(t, tn, "u")
	tn.stop("n1")
	tn.propose(session.Command{Kind: session.KindNodeFailed, Node: "n1"})
	if e := tn.entry("u"); e.Owner != "" || e.Backup != backup {
		t.Fatalf("after node-failed: %+v, want no owner, backup %s", e, backup)
	}
	tn.broker(backup).NodeDown("n1")
	eventually(t, 2*time.Second, "the backup to own the stream", func() bool {
		seq, ok := tn.broker(backup).Seq(session.UserKey("u"))
		return ok && seq == 1 && tn.entry("u").Owner == backup
	})
}

// TestStreamLeftWithoutBackupGetsOne: every other node was unreachable
// when an append was replicated, so the stream dropped its backup, and
// nothing was appended after the links healed. The stream must not stay
// on one node: the periodic repair copies it to a new backup, which the
// registry names.
func TestStreamLeftWithoutBackupGetsOne(t *testing.T) {
	tn := newTestNet(t, 3, func(c *Config) { c.ExpiryInterval = 50 * time.Millisecond })
	ownedAtN1(t, tn, "u")
	tn.setCut("n1", "n2", true)
	tn.setCut("n1", "n3", true)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	r := tn.broker("n1").Publish(ctx, []PublishRequest{{Key: session.UserKey("u"), ID: "m2", Data: []byte(`{}`)}})[0]
	cancel()
	if r.Err == nil {
		t.Fatal("a publish with no reachable backup was acknowledged")
	}
	tn.setCut("n1", "n2", false)
	tn.setCut("n1", "n3", false)
	eventually(t, 5*time.Second, "the stream to have a backup again, holding both messages", func() bool {
		e := tn.entry("u")
		if e.Owner != "n1" || (e.Backup != "n2" && e.Backup != "n3") {
			return false
		}
		rep := tn.broker(e.Backup).replicaFor(session.UserKey("u"))
		if rep == nil {
			return false
		}
		rep.mu.Lock()
		defer rep.mu.Unlock()
		return rep.stream.Last() == 2
	})
}
