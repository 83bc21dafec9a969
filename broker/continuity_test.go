package broker

import (
	"testing"
	"time"

	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
)

// closedWith waits until s is closed and returns its close code.
func closedWith(t *testing.T, s *testSink) protocol.CloseCode {
	t.Helper()
	var code int
	eventually(t, 2*time.Second, "the connection to be closed", func() bool {
		_, code = s.state()
		return code != 0
	})
	return protocol.CloseCode(code)
}

// A connection attached at a node whose owner dies resumes elsewhere (4010)
// while the registry names a node that may hold the stream, and is told
// continuity is lost (4011) once the leader has recorded the owner and the
// backup as failed: no node left holds the stream.
func TestAttachedConnectionToldWhetherTheStreamSurvivedItsOwner(t *testing.T) {
	for _, tt := range []struct {
		name       string
		backupDies bool
		want       protocol.CloseCode
	}{
		{name: "backup alive", want: protocol.CloseMoved},
		{name: "backup dead too", backupDies: true, want: protocol.CloseContinuityLost},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tn := newTestNet(t, 4)
			backup := ownedAtN1(t, tn, "u")
			at := "n2"
			if backup == at {
				at = "n3"
			}
			attached, err := tn.hello(at, "u", &protocol.Resume{Seq: 1})
			if err != nil {
				t.Fatal(err)
			}
			if e := tn.entry("u"); e.Owner != "n1" {
				t.Fatalf("entry %+v after the second hello, want n1 still the owner", e)
			}
			tn.stop("n1")
			tn.propose(session.Command{Kind: session.KindNodeFailed, Node: "n1"})
			if tt.backupDies {
				tn.stop(backup)
				tn.propose(session.Command{Kind: session.KindNodeFailed, Node: backup})
			}
			tn.broker(at).NodeDown("n1")
			if got := closedWith(t, attached); got != tt.want {
				t.Fatalf("attached connection closed with %d, want %d", got, tt.want)
			}
		})
	}
}

// An owner that learns from the registry that another node claimed its
// stream sends its connections to resume there (4010) when the claim kept
// the session, and tells them continuity is lost (4011) when the claim
// started a new session: the stream was given up for lost elsewhere (a
// partition that outlived the holders' reachability), so resuming from
// the old session's position would be a lie.
func TestOwnerToldOfAClaimElsewhereSendsItsConnectionsAway(t *testing.T) {
	for _, tt := range []struct {
		name       string
		newSession bool
		want       protocol.CloseCode
	}{
		{name: "same session", want: protocol.CloseMoved},
		{name: "new session", newSession: true, want: protocol.CloseContinuityLost},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tn := newTestNet(t, 3)
			local, err := tn.hello("n1", "u", &protocol.Resume{})
			if err != nil {
				t.Fatal(err)
			}
			e := tn.entry("u")
			sess := e.Session
			if tt.newSession {
				sess = "another-session"
			}
			res := tn.propose(session.Command{Kind: session.KindClaim, User: "u", Node: "n2", Session: sess, Epoch: e.Epoch})
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if got := closedWith(t, local); got != tt.want {
				t.Fatalf("local connection closed with %d, want %d", got, tt.want)
			}
		})
	}
}
