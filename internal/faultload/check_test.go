package faultload

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/switchboard/switchboard/client"
	"github.com/switchboard/switchboard/internal/testenv"
	"github.com/switchboard/switchboard/protocol"
)

func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }

// ackedUser is a user whose publishers had ids m1..mn acknowledged as seqs
// 1..n, the last one begun after the fault.
func ackedUser(n int) *user {
	u := newUser("alice", "n1")
	for k := 1; k <= n; k++ {
		id := fmt.Sprintf("m%d", k)
		u.record(id, protocol.PublishResult{User: "alice", ID: id, Seq: uint64(k)}, k == n)
	}
	return u
}

// receive makes u's subscriber receive the given ids as the given seqs.
func (u *user) receiveAs(seqs []uint64, ids ...string) {
	for i, s := range seqs {
		u.got = append(u.got, client.Message{Seq: s, ID: ids[i]})
	}
}

// TestCheckFindsEveryBrokenGuarantee: a checker that never fails proves
// nothing, so each way a run can break G1–G3 is shown to it once, and it
// must name it; a run that breaks nothing must pass.
func TestCheckFindsEveryBrokenGuarantee(t *testing.T) {
	ids := []string{"m1", "m2", "m3"}
	cases := []struct {
		name  string
		spoil func(u *user) // on a user with m1..m3 acknowledged and received
		want  string        // in a violation; "" for none at all
	}{
		{"nothing broken", func(*user) {}, ""},
		{"a gap", func(u *user) { u.got = nil; u.receiveAs([]uint64{1, 3}, "m1", "m3") }, "message 1 has seq 3: gap"},
		{"the rest after a gap still checked", func(u *user) { u.got = nil; u.receiveAs([]uint64{1, 3}, "m1", "m3") }, "1 acknowledged messages never received (G2), e.g. [m2@2]"},
		{"disorder", func(u *user) { u.got = nil; u.receiveAs([]uint64{2, 1, 3}, "m2", "m1", "m3") }, "message 0 has seq 2"},
		{"a duplicate delivered", func(u *user) { u.receiveAs([]uint64{3}, "m3") }, "message 3 has seq 3"},
		{"a duplicate on the wire", func(u *user) { u.sdk.dups.Add(2) }, "the server sent 2 duplicate messages"},
		{"an acknowledged message lost", func(u *user) { u.got = u.got[:2] }, "1 acknowledged messages never received (G2), e.g. [m3@3]"},
		{"an acknowledged message under another seq", func(u *user) {
			u.got = nil
			u.receiveAs([]uint64{1, 2, 3, 4}, "m1", "m2", "x", "m3")
		}, "acknowledged m3 as seq 3, received as seq 4"},
		{"another id under an acknowledged seq", func(u *user) { u.got[2].ID = "x" }, "seq 3 delivered with id x, acknowledged for id m3"},
		{"one id stored twice", func(u *user) { u.receiveAs([]uint64{4}, "m1") }, "id m1 stored twice, as seq 1 and 4"},
		{"one seq acknowledged for two ids", func(u *user) {
			u.record("m4", protocol.PublishResult{User: "alice", ID: "m4", Seq: 3}, true)
		}, "seq 3 acknowledged for m3 and m4"},
		{"one id acknowledged under two seqs", func(u *user) {
			u.record("m3", protocol.PublishResult{User: "alice", ID: "m3", Seq: 4}, true)
		}, "id m3 acknowledged as seq 3 and 4"},
		{"an answer for another user", func(u *user) {
			u.record("m4", protocol.PublishResult{User: "bob", ID: "m4", Seq: 4}, true)
		}, `publish m4 answered for user "bob" id "m4"`},
		{"a publish never acknowledged", func(u *user) { u.giveUp("m4", errors.New("503 no quorum")) }, "publish never acknowledged: m4 (last: 503 no quorum)"},
		{"continuity lost", func(u *user) {
			u.events = append(u.events, client.Event{Kind: client.EventContinuityLost, Node: "n2"})
		}, "client event continuity_lost from node n2"},
		{"a seq anomaly", func(u *user) {
			u.events = append(u.events, client.Event{Kind: client.EventSequenceAnomaly, Node: "n3"})
		}, "client event sequence_anomaly from node n3"},
		{"events the SDK dropped", func(u *user) { u.sdk.droppedEvents.Add(1) }, "the SDK dropped 1 events"},
		{"nothing after the fault", func(u *user) { u.afterFault = 0 }, "no publish begun after the fault was acknowledged"},
		{"nothing acknowledged", func(u *user) {
			u.acks, u.bySeq, u.got = map[string]uint64{}, map[uint64]string{}, nil
		}, "nothing acknowledged"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := ackedUser(3)
			u.receiveAs([]uint64{1, 2, 3}, ids...)
			tc.spoil(u)
			var maxAcked uint64
			for s := range u.bySeq {
				maxAcked = max(maxAcked, s)
			}
			got := u.violations(maxAcked)
			if tc.want == "" {
				if len(got) > 0 {
					t.Fatalf("violations of a clean run: %q", got)
				}
				return
			}
			for _, v := range got {
				if strings.Contains(v, tc.want) {
					return
				}
			}
			t.Fatalf("want a violation with %q, got %q", tc.want, got)
		})
	}
}

// TestRegistryCheckFindsEveryBrokenGuarantee does the same for G4: the
// entry after the fault against the entry before it.
func TestRegistryCheckFindsEveryBrokenGuarantee(t *testing.T) {
	before := protocol.Session{Session: "s1", Owner: "n1", Backup: "n2", Epoch: 3}
	live := []string{"n2", "n3"}
	cases := []struct {
		name              string
		after             protocol.Session
		violation, placed string // wanted in entryViolation and unplaced; "" for none
	}{
		{"taken over", protocol.Session{Session: "s1", Owner: "n2", Backup: "n3", Epoch: 4}, "", ""},
		{"owner still the dead node", protocol.Session{Session: "s1", Owner: "n1", Backup: "n2", Epoch: 3}, "", `owner "n1" is not a live node`},
		{"backup the dead node", protocol.Session{Session: "s1", Owner: "n2", Backup: "n1", Epoch: 4}, "", `backup "n1" is not another live node`},
		{"backup the owner", protocol.Session{Session: "s1", Owner: "n2", Backup: "n2", Epoch: 4}, "", `backup "n2" is not another live node`},
		{"a new session", protocol.Session{Session: "s2", Owner: "n2", Backup: "n3", Epoch: 4}, "session changed from s1 to s2", ""},
		{"epoch back", protocol.Session{Session: "s1", Owner: "n2", Backup: "n3", Epoch: 2}, "epoch went back from 3 to 2", ""},
		{"new owner, old epoch", protocol.Session{Session: "s1", Owner: "n2", Backup: "n3", Epoch: 3}, "owner changed from n1 to n2 under the same epoch 3", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range []struct{ got, want string }{
				{entryViolation(before, tc.after), tc.violation},
				{unplaced(tc.after, live), tc.placed},
			} {
				if c.want == "" && c.got != "" || !strings.Contains(c.got, c.want) {
					t.Errorf("got %q, want %q", c.got, c.want)
				}
			}
		})
	}
}

// The channel checker names each way a subscriber's deliveries break G7,
// and passes a run that breaks nothing.
func TestChannelCheckFindsEveryBrokenGuarantee(t *testing.T) {
	for _, tc := range []struct {
		name string
		seqs []uint64
		lost []string
		want string // "" for no error
	}{
		{"nothing broken", []uint64{1, 2, 3}, nil, ""},
		{"more than acknowledged (the last publish's answer was lost)", []uint64{1, 2, 3, 4}, nil, ""},
		{"a gap", []uint64{1, 3}, nil, "message 1 has seq 3"},
		{"a duplicate", []uint64{1, 2, 2, 3}, nil, "message 2 has seq 2"},
		{"disorder", []uint64{2, 1, 3}, nil, "message 0 has seq 2"},
		{"an acknowledged message lost at the end", []uint64{1, 2}, nil, "received 1..2 of 1..3 acknowledged"},
		{"continuity lost", []uint64{1, 2, 3}, []string{"continuity lost: channel c"}, "continuity lost"},
	} {
		err := checkChannel(tc.seqs, tc.lost, 3)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want it to say %q", tc.name, err, tc.want)
		}
	}
}
