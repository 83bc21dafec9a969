package broker

import (
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
