package session

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

// ownedFixture is an owned stream with a known backup, under epoch 3,
// whose first copy to the backup has been made.
func ownedFixture(t *testing.T) *Owned {
	t.Helper()
	s := NewStream("u", "s1", 3, DefaultStreamConfig())
	o := NewOwned(UserKey("u"), s, "b", false, false, 1)
	flush(t, o, nil)
	return o
}

// flush runs one replication to the backup, which answers err.
func flush(t *testing.T, o *Owned, err error) (Replication, Effects, error) {
	t.Helper()
	needBackup, ok := o.BeginFlush()
	if !ok || needBackup {
		t.Fatalf("BeginFlush = needBackup %v, ok %v; want a flush to the known backup", needBackup, ok)
	}
	defer o.EndFlush()
	r := o.Replication()
	eff, ferr := o.Replicated(r, o.Backup(), err)
	return r, eff, ferr
}

func appendN(t *testing.T, o *Owned, n int) {
	t.Helper()
	for range n {
		if _, err := o.Append("", []byte("1"), 10); err != nil {
			t.Fatal(err)
		}
	}
}

// An append is acknowledged — delivered, shown to clients — only once the
// backup holds it; a failed or refused replication acknowledges nothing.
func TestOwnedAcknowledgesOnlyWhatTheBackupHolds(t *testing.T) {
	tests := []struct {
		name      string
		answer    error
		wantAcked uint64
		wantErr   error // nil, or what the flush reports
		sealed    bool
		fullCopy  bool // the next replication carries everything
		backup    string
	}{
		{name: "backup stored it", answer: nil, wantAcked: 2, backup: "b"},
		{name: "backup unreachable", answer: errors.New("link down"), wantAcked: 0, wantErr: errors.New(""), backup: ""},
		{name: "backup has a gap", answer: fmt.Errorf("%w: replica at 0", ErrGap), wantAcked: 0, wantErr: ErrGap, fullCopy: true, backup: "b"},
		{name: "backup fenced: taken over", answer: fmt.Errorf("%w: sealed at 4", ErrStaleEpoch), wantAcked: 0, wantErr: ErrSealed, sealed: true, backup: "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ownedFixture(t)
			o.AddLocal(1, 20)
			appendN(t, o, 2)
			if o.Acked() != 0 {
				t.Fatalf("acked %d before any replication", o.Acked())
			}
			_, eff, err := flush(t, o, tt.answer)
			if o.Acked() != tt.wantAcked {
				t.Errorf("acked %d, want %d", o.Acked(), tt.wantAcked)
			}
			if got := seqs(eff.Deliver); uint64(len(got)) != tt.wantAcked {
				t.Errorf("delivered %v, want seqs 1..%d", got, tt.wantAcked)
			}
			switch {
			case tt.wantErr == nil && err != nil:
				t.Errorf("flush error %v", err)
			case tt.wantErr != nil && err == nil:
				t.Errorf("flush reported success, want %v", tt.wantErr)
			case tt.wantErr != nil && tt.wantErr.Error() != "" && !errors.Is(err, tt.wantErr):
				t.Errorf("flush error %v, want %v", err, tt.wantErr)
			}
			if o.Sealed() != tt.sealed {
				t.Errorf("sealed %v, want %v", o.Sealed(), tt.sealed)
			}
			if o.Backup() != tt.backup {
				t.Errorf("backup %q, want %q", o.Backup(), tt.backup)
			}
			if tt.backup == "" {
				if o.LastFailed() != "b" {
					t.Errorf("last failed backup %q, want b (the next choice avoids it)", o.LastFailed())
				}
				if needBackup, ok := o.BeginFlush(); !ok || !needBackup {
					t.Errorf("next flush: needBackup %v, ok %v; want a new backup chosen first", needBackup, ok)
				}
				if err := o.UseBackup("c", 4); err != nil || !o.Replication().Full || o.Epoch() != 4 {
					t.Errorf("new backup c: %v; want a full copy under epoch 4 (epoch %d)", err, o.Epoch())
				}
				return
			}
			if !o.Sealed() {
				if r := o.Replication(); r.Full != tt.fullCopy {
					t.Errorf("next replication full=%v, want %v", r.Full, tt.fullCopy)
				}
			}
		})
	}
}

// A stream just taken over acknowledges nothing it brought along until its
// first copy to a backup, unless that backup kept the very same content.
func TestOwnedTakenOverStreamWaitsForItsFirstCopy(t *testing.T) {
	s := NewStream("u", "s1", 5, DefaultStreamConfig())
	if err := s.Load(3, []Message{{Seq: 2, TS: 1}, {Seq: 3, TS: 1}}); err != nil {
		t.Fatal(err)
	}
	o := NewOwned(UserKey("u"), s, "b", false, true, 1)
	if o.Acked() != 1 || !o.CatchingUp("s1", 3, true) {
		t.Fatalf("acked %d, catching up to 3: %v; want 1 and true", o.Acked(), o.CatchingUp("s1", 3, true))
	}
	if resumed, _ := o.ResumePoint("s1", 3, true); resumed {
		t.Fatal("a resume beyond what the backup holds continued the stream")
	}
	r, _, err := flush(t, o, nil)
	if err != nil || !r.Full || seqsEqual(r.Msgs, 2, 3) != nil || o.Acked() != 3 {
		t.Fatalf("first copy %+v (err %v), acked %d; want a full copy of 2..3 and acked 3", r, err, o.Acked())
	}

	kept := NewOwned(UserKey("u"), NewStream("u", "s1", 5, DefaultStreamConfig()), "b", true, true, 1)
	if kept.NeedsReplication() {
		t.Fatal("a stream whose backup kept its replica needs a copy")
	}
}

func seqsEqual(msgs []Message, want ...uint64) error {
	if got := seqs(msgs); !slices.Equal(got, want) {
		return fmt.Errorf("seqs %v, want %v", got, want)
	}
	return nil
}

// Every acknowledgement delivers the newly acknowledged messages, in seq
// order, once: to the local connections and to each live attached node.
// A node a delivery failed to reach gets no more until it attaches again.
func TestOwnedDeliversInSeqOrderToAttachedNodes(t *testing.T) {
	o := ownedFixture(t)
	o.AddRemote("n2", 1, 20)
	o.AddRemote("n3", 1, 20)
	o.AddLocal(7, 20)
	steps := []struct {
		appends   int
		failNode  string // a delivery to it failed before this step
		reattach  string
		wantSeqs  []uint64
		wantNodes []string
	}{
		{appends: 2, wantSeqs: []uint64{1, 2}, wantNodes: []string{"n2", "n3"}},
		{appends: 1, failNode: "n3", wantSeqs: []uint64{3}, wantNodes: []string{"n2"}},
		{appends: 3, wantSeqs: []uint64{4, 5, 6}, wantNodes: []string{"n2"}},
		{appends: 1, reattach: "n3", wantSeqs: []uint64{7}, wantNodes: []string{"n2", "n3"}},
		{appends: 0, wantSeqs: nil},
	}
	var delivered []uint64
	for i, st := range steps {
		if st.failNode != "" {
			o.DeliveryFailed(st.failNode)
		}
		if st.reattach != "" {
			o.AddRemote(st.reattach, 1, 30)
		}
		appendN(t, o, st.appends)
		_, eff, err := flush(t, o, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := seqs(eff.Deliver); !slices.Equal(got, st.wantSeqs) && len(got)+len(st.wantSeqs) > 0 {
			t.Errorf("step %d: delivered %v, want %v", i, got, st.wantSeqs)
		}
		if len(eff.Deliver) > 0 && !slices.Equal(eff.To, st.wantNodes) {
			t.Errorf("step %d: delivered to %v, want %v", i, eff.To, st.wantNodes)
		}
		delivered = append(delivered, seqs(eff.Deliver)...)
	}
	for i, seq := range delivered {
		if seq != uint64(i+1) {
			t.Fatalf("deliveries %v are not 1, 2, 3, … each once", delivered)
		}
	}
	// The tips go to every attached node, the one that missed a delivery
	// included: that is how it learns to send its connections to resume.
	if got := o.Remotes(); !slices.Equal(got, []string{"n2", "n3"}) {
		t.Errorf("tips go to %v, want n2 and n3", got)
	}
}

// A seal must be for a newer epoch than the stream's own: stale news
// changes nothing. A newer one fences the stream: nothing more is appended
// or acknowledged, and every connection is sent away.
func TestOwnedSealRefusesOlderEpochs(t *testing.T) {
	tests := []struct {
		epoch     uint64
		lost      bool
		wantSeal  bool
		wantClose []uint64
		wantEvict []string
	}{
		{epoch: 2},
		{epoch: 3},
		{epoch: 4, wantSeal: true, wantClose: []uint64{1, 2}, wantEvict: []string{"n2"}},
		{epoch: 9, lost: true, wantSeal: true, wantClose: []uint64{1, 2}, wantEvict: []string{"n2"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("epoch %d", tt.epoch), func(t *testing.T) {
			o := ownedFixture(t)
			o.AddLocal(1, 20)
			o.AddLocal(2, 20)
			o.AddRemote("n2", 1, 20)
			appendN(t, o, 1)
			eff, sealed := o.Seal(tt.epoch, tt.lost)
			if sealed != tt.wantSeal || o.Sealed() != tt.wantSeal {
				t.Fatalf("Seal(%d) = %v (Sealed %v), want %v", tt.epoch, sealed, o.Sealed(), tt.wantSeal)
			}
			if !slices.Equal(eff.Close, tt.wantClose) || !slices.Equal(eff.Evict, tt.wantEvict) || eff.Lost != tt.lost {
				t.Errorf("effects %+v, want close %v, evict %v, lost %v", eff, tt.wantClose, tt.wantEvict, tt.lost)
			}
			if !tt.wantSeal {
				return
			}
			if _, err := o.Append("", []byte("2"), 30); !errors.Is(err, ErrSealed) {
				t.Errorf("append after the seal: %v, want ErrSealed", err)
			}
			if _, ok := o.BeginFlush(); ok {
				t.Error("a sealed stream starts a flush")
			}
			r := Replication{Key: UserKey("u"), Session: "s1", Epoch: 3, Last: 1}
			if eff, err := o.Replicated(r, "b", nil); !errors.Is(err, ErrSealed) || len(eff.Deliver) > 0 || o.Acked() != 0 {
				t.Errorf("a late backup answer acknowledged %d (err %v)", o.Acked(), err)
			}
			if again, _ := o.Seal(tt.epoch+1, false); len(again.Close)+len(again.Evict) > 0 {
				t.Errorf("a second seal sent connections away again: %+v", again)
			}
		})
	}
}

// Handing over returns everything the stream holds — acknowledged or not,
// so publishers waiting here find their ids at the new owner — and fences
// the stream; a handoff not newer than the stream's epoch is refused.
func TestOwnedHandsOverEverythingItHolds(t *testing.T) {
	o := ownedFixture(t)
	o.AddLocal(1, 20)
	appendN(t, o, 2)
	if _, _, err := flush(t, o, nil); err != nil {
		t.Fatal(err)
	}
	appendN(t, o, 1) // not on the backup yet
	if _, _, err := o.Handoff(3); !errors.Is(err, ErrStaleEpoch) || o.Sealed() {
		t.Fatalf("handoff at the stream's own epoch: %v (sealed %v), want ErrStaleEpoch", err, o.Sealed())
	}
	tail, eff, err := o.Handoff(4)
	if err != nil {
		t.Fatal(err)
	}
	if tail.Session != "s1" || tail.Last != 3 || seqsEqual(tail.Msgs, 1, 2, 3) != nil {
		t.Errorf("tail %+v, want session s1, messages 1..3", tail)
	}
	if !o.Sealed() || !slices.Equal(eff.Close, []uint64{1}) || eff.Lost {
		t.Errorf("after handoff: sealed %v, effects %+v; want sealed, connection 1 sent to resume", o.Sealed(), eff)
	}
	// The new owner loads the tail and numbering continues.
	next := NewStream("u", "s1", 4, DefaultStreamConfig())
	if err := next.Load(tail.Last, tail.Msgs); err != nil {
		t.Fatal(err)
	}
	n := NewOwned(UserKey("u"), next, "c", false, true, 40)
	m, err := n.Append("", []byte("4"), 41)
	if err != nil || m.Seq != 4 {
		t.Fatalf("first append at the new owner: seq %d, %v; want 4", m.Seq, err)
	}
}

// Resume points: a connection continues the stream only from a point
// within what is acknowledged and still kept, of this session.
func TestOwnedResumePoint(t *testing.T) {
	o := ownedFixture(t)
	appendN(t, o, 3)
	if _, _, err := flush(t, o, nil); err != nil {
		t.Fatal(err)
	}
	appendN(t, o, 1) // seq 4, not acknowledged
	tests := []struct {
		sess        string
		after       uint64
		asked       bool
		wantResumed bool
		wantReplay  []uint64
	}{
		{asked: false},
		{sess: "s1", after: 1, asked: true, wantResumed: true, wantReplay: []uint64{2, 3}},
		{sess: "", after: 0, asked: true, wantResumed: true, wantReplay: []uint64{1, 2, 3}},
		{sess: "s1", after: 3, asked: true, wantResumed: true},
		{sess: "s1", after: 4, asked: true},
		{sess: "other", after: 1, asked: true},
	}
	for _, tt := range tests {
		resumed, replay := o.ResumePoint(tt.sess, tt.after, tt.asked)
		if resumed != tt.wantResumed || !slices.Equal(seqs(replay), tt.wantReplay) && len(replay)+len(tt.wantReplay) > 0 {
			t.Errorf("ResumePoint(%q, %d, %v) = %v %v, want %v %v", tt.sess, tt.after, tt.asked, resumed, seqs(replay), tt.wantResumed, tt.wantReplay)
		}
	}
}

// The registry is told attached when the first connection comes and
// detached when the last goes; an idle stream may be released to another
// node's takeover, a connected one may not.
func TestOwnedRecordsAttachAndDetachAndReleasesOnlyWhenIdle(t *testing.T) {
	o := ownedFixture(t) // idle since 1
	if eff := o.AddRemote("n2", 1, 10); eff.Record != KindAttach {
		t.Errorf("first connection records %v, want attach", eff.Record)
	}
	if eff := o.AddLocal(1, 11); eff.Record != 0 {
		t.Errorf("second connection records %v, want nothing", eff.Record)
	}
	if o.Release(12, 100) {
		t.Error("a stream with connections was released")
	}
	if eff := o.RemoveRemote("n2", 0, 13); eff.Record != 0 {
		t.Errorf("a connection left with one remaining: records %v", eff.Record)
	}
	if eff := o.RemoveLocal(1, 14); eff.Record != KindDetach {
		t.Errorf("last connection gone records %v, want detach", eff.Record)
	}
	if !o.Release(15, 100) || !o.Released(50) || o.Released(100) {
		t.Error("an idle stream is released until the given time, and only until then")
	}
	if eff := o.AddLocal(2, 60); eff.Record != KindAttach || o.Released(61) {
		t.Errorf("a connection attached while released: records %v, released %v", eff.Record, o.Released(61))
	}
}

// A detach names the attachment it ends (a nonce): one that a newer
// attachment of the same node overtook on its way leaves the newer alone.
func TestOwnedStaleDetachLeavesANewerAttachment(t *testing.T) {
	o := ownedFixture(t)
	o.AddRemote("n2", 5, 10) // the first attachment
	o.AddRemote("n2", 6, 11) // its connection left, the detach (5) is still on its way; a new one came
	if eff := o.RemoveRemote("n2", 5, 12); eff.Record != 0 || !slices.Equal(o.Remotes(), []string{"n2"}) {
		t.Fatalf("the stale detach removed the newer attachment: remotes %v, effects %+v", o.Remotes(), eff)
	}
	appendN(t, o, 1)
	if _, eff, _ := flush(t, o, nil); !slices.Equal(eff.To, []string{"n2"}) {
		t.Fatalf("delivered to %v, want n2", eff.To)
	}
	if eff := o.RemoveRemote("n2", 6, 13); eff.Record != KindDetach || len(o.Remotes()) != 0 {
		t.Fatalf("the newer attachment's own detach: remotes %v, effects %+v", o.Remotes(), eff)
	}
	o.AddRemote("n3", 0, 14) // a node that predates nonces
	if o.RemoveRemote("n3", 0, 15); len(o.Remotes()) != 0 {
		t.Fatal("a detach without a nonce must remove any attachment")
	}
}
