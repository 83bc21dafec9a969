package broker

import (
	"errors"
	"testing"

	"github.com/switchboard/switchboard/internal/wire"
	"github.com/switchboard/switchboard/session"
)

func TestHandoffRequestRoundTrip(t *testing.T) {
	for _, want := range []handoffRequest{
		{User: "u1", Epoch: 7},
		{User: "u2", Epoch: 1 << 40, Keep: true},
	} {
		got, err := decodeHandoff(encodeHandoff(want))
		if err != nil || got != want {
			t.Fatalf("decodeHandoff(encodeHandoff(%+v)) = %+v, %v", want, got, err)
		}
	}
	// Without Keep the request is byte for byte what nodes that predate it
	// send, and they ignore the trailing byte a new node adds.
	old := wire.AppendUvarint(wire.AppendString(nil, "u"), 3)
	if got := encodeHandoff(handoffRequest{User: "u", Epoch: 3}); string(got) != string(old) {
		t.Fatalf("request without Keep = %x, want the old encoding %x", got, old)
	}
}

func TestHandoffReplyRoundTrip(t *testing.T) {
	msgs := []session.Message{{Seq: 4, ID: "a", TS: 9, Data: []byte(`{"x":1}`)}, {Seq: 5, Data: []byte("2")}}
	for _, want := range []handoffReply{
		{Session: "s", Last: 0},
		{Session: "s", Last: 5, Msgs: msgs},
		{Session: "s", Last: 5, Msgs: msgs, Kept: true},
		{Session: "s", Last: 9, Kept: true},
	} {
		got, err := decodeHandoffReply(encodeHandoffReply(want))
		if err != nil {
			t.Fatal(err)
		}
		if got.Session != want.Session || got.Last != want.Last || got.Kept != want.Kept || len(got.Msgs) != len(want.Msgs) {
			t.Fatalf("round trip of %+v = %+v", want, got)
		}
		for i := range got.Msgs {
			if got.Msgs[i].Seq != want.Msgs[i].Seq || string(got.Msgs[i].Data) != string(want.Msgs[i].Data) {
				t.Fatalf("message %d = %+v, want %+v", i, got.Msgs[i], want.Msgs[i])
			}
		}
	}
	// A reply from a node that predates Kept (no trailing byte) means the
	// replica was not kept: the new owner copies the stream in full.
	old := session.AppendMessages(wire.AppendUvarint(wire.AppendString(nil, "s"), 5), msgs)
	if got, err := decodeHandoffReply(old); err != nil || got.Kept || len(got.Msgs) != 2 {
		t.Fatalf("old-format reply = %+v, %v", got, err)
	}
	if _, err := decodeHandoffReply(append(encodeHandoffReply(handoffReply{Session: "s", Kept: true}), 0)); !errors.Is(err, ErrBadPayload) {
		t.Fatalf("reply with trailing bytes: err = %v, want ErrBadPayload", err)
	}
	if _, err := decodeHandoffReply(old[:len(old)-1]); !errors.Is(err, ErrBadPayload) {
		t.Fatalf("truncated reply: err = %v, want ErrBadPayload", err)
	}
}

func TestReplicateBatchRoundTrip(t *testing.T) {
	msgs := []session.Message{{Seq: 4, ID: "a", TS: 9, Data: []byte(`{"x":1}`)}, {Seq: 5, Data: []byte("2")}}
	want := []replicateRequest{
		{User: "u1", Session: "s1", Epoch: 3, Last: 5, Msgs: msgs},
		{User: "u2", Session: "s2", Epoch: 1, Last: 0, Full: true},
	}
	got, err := decodeReplicateBatch(encodeReplicateBatch(want))
	if err != nil || len(got) != len(want) {
		t.Fatalf("decodeReplicateBatch = %+v, %v", got, err)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.User != w.User || g.Session != w.Session || g.Epoch != w.Epoch || g.Last != w.Last || g.Full != w.Full || len(g.Msgs) != len(w.Msgs) {
			t.Fatalf("request %d = %+v, want %+v", i, g, w)
		}
	}
	enc := encodeReplicateBatch(want)
	for _, bad := range [][]byte{enc[:len(enc)-1], append(enc, 0), wire.AppendUvarint(nil, 1<<40)} {
		if _, err := decodeReplicateBatch(bad); !errors.Is(err, ErrBadPayload) {
			t.Fatalf("decodeReplicateBatch(%x): err = %v, want ErrBadPayload", bad, err)
		}
	}
}

func TestReplicateResultsRoundTrip(t *testing.T) {
	in := []error{nil, session.ErrStaleEpoch, errors.New("disk full"), session.ErrGap, nil}
	got, err := decodeReplicateResults(encodeReplicateResults(in), len(in))
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range in {
		switch {
		case e == nil && got[i] != nil, e != nil && got[i] == nil:
			t.Fatalf("result %d = %v, want %v", i, got[i], e)
		case errors.Is(e, session.ErrStaleEpoch) != errors.Is(got[i], session.ErrStaleEpoch),
			errors.Is(e, session.ErrGap) != errors.Is(got[i], session.ErrGap):
			t.Fatalf("result %d = %v, want it to match %v", i, got[i], e)
		}
	}
	if _, err := decodeReplicateResults(encodeReplicateResults(in), 4); !errors.Is(err, ErrBadPayload) {
		t.Fatalf("results for the wrong count: err = %v, want ErrBadPayload", err)
	}
}

func FuzzDecodeReplicateBatch(f *testing.F) {
	f.Add(encodeReplicateBatch([]replicateRequest{{User: "u", Session: "s", Epoch: 1, Last: 1, Msgs: []session.Message{{Seq: 1, Data: []byte("1")}}}}))
	f.Add(encodeReplicateResults([]error{nil, session.ErrGap}))
	f.Fuzz(func(t *testing.T, p []byte) {
		reqs, err := decodeReplicateBatch(p)
		if err == nil {
			if _, err := decodeReplicateBatch(encodeReplicateBatch(reqs)); err != nil {
				t.Fatalf("re-encoding a decoded batch fails: %v", err)
			}
		}
		_, _ = decodeReplicateResults(p, 2)
	})
}

func TestTipsRoundTrip(t *testing.T) {
	want := []tip{{User: "u1", Last: 0}, {User: "u2", Last: 1 << 40}}
	got, err := decodeTips(encodeTips(want))
	if err != nil || len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("decodeTips(encodeTips(%+v)) = %+v, %v", want, got, err)
	}
	enc := encodeTips(want)
	for _, bad := range [][]byte{enc[:len(enc)-1], wire.AppendUvarint(nil, 1<<40)} {
		if _, err := decodeTips(bad); !errors.Is(err, ErrBadPayload) {
			t.Fatalf("decodeTips(%x): err = %v, want ErrBadPayload", bad, err)
		}
	}
}
