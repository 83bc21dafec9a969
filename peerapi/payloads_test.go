package peerapi

import (
	"bytes"
	"errors"
	"testing"

	"github.com/switchboard/switchboard/internal/wire"
	"github.com/switchboard/switchboard/membership"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/peer"
)

func TestHandoffRequestRoundTrip(t *testing.T) {
	for _, want := range []HandoffRequest{
		{Key: session.UserKey("u1"), Epoch: 7},
		{Key: session.UserKey("u2"), Epoch: 1 << 40, Keep: true},
	} {
		got, err := handoffRequestCodec.Decode(handoffRequestCodec.Append(nil, want))
		if err != nil || got != want {
			t.Fatalf("decodeHandoff(handoffRequestCodec.Append(nil, %+v)) = %+v, %v", want, got, err)
		}
	}
	// Without Keep the request is byte for byte what nodes that predate it
	// send, and they ignore the trailing byte a new node adds.
	old := wire.AppendUvarint(wire.AppendString(nil, "u"), 3)
	if got := handoffRequestCodec.Append(nil, HandoffRequest{Key: session.UserKey("u"), Epoch: 3}); string(got) != string(old) {
		t.Fatalf("request without Keep = %x, want the old encoding %x", got, old)
	}
}

func TestHandoffReplyRoundTrip(t *testing.T) {
	msgs := []session.Message{{Seq: 4, ID: "a", TS: 9, Data: []byte(`{"x":1}`)}, {Seq: 5, Data: []byte("2")}}
	for _, want := range []session.Tail{
		{Session: "s", Last: 0},
		{Session: "s", Last: 5, Msgs: msgs},
		{Session: "s", Last: 5, Msgs: msgs, Kept: true},
		{Session: "s", Last: 9, Kept: true},
	} {
		got, err := tailCodec.Decode(tailCodec.Append(nil, want))
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
	if got, err := tailCodec.Decode(old); err != nil || got.Kept || len(got.Msgs) != 2 {
		t.Fatalf("old-format reply = %+v, %v", got, err)
	}
	if _, err := tailCodec.Decode(append(tailCodec.Append(nil, session.Tail{Session: "s", Kept: true}), 0)); !errors.Is(err, ErrBadPayload) {
		t.Fatalf("reply with trailing bytes: err = %v, want ErrBadPayload", err)
	}
	if _, err := tailCodec.Decode(old[:len(old)-1]); !errors.Is(err, ErrBadPayload) {
		t.Fatalf("truncated reply: err = %v, want ErrBadPayload", err)
	}
}

func TestReplicateBatchRoundTrip(t *testing.T) {
	msgs := []session.Message{{Seq: 4, ID: "a", TS: 9, Data: []byte(`{"x":1}`)}, {Seq: 5, Data: []byte("2")}}
	want := []session.Replication{
		{Key: session.UserKey("u1"), Session: "s1", Epoch: 3, Last: 5, Msgs: msgs},
		{Key: session.UserKey("u2"), Session: "s2", Epoch: 1, Last: 0, Full: true},
	}
	got, err := replicationsCodec.Decode(replicationsCodec.Append(nil, want))
	if err != nil || len(got) != len(want) {
		t.Fatalf("decodeReplicateBatch = %+v, %v", got, err)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Key != w.Key || g.Session != w.Session || g.Epoch != w.Epoch || g.Last != w.Last || g.Full != w.Full || len(g.Msgs) != len(w.Msgs) {
			t.Fatalf("request %d = %+v, want %+v", i, g, w)
		}
	}
	enc := replicationsCodec.Append(nil, want)
	for _, bad := range [][]byte{enc[:len(enc)-1], append(enc, 0), wire.AppendUvarint(nil, 1<<40)} {
		if _, err := replicationsCodec.Decode(bad); !errors.Is(err, ErrBadPayload) {
			t.Fatalf("replicationsCodec.Decode(%x): err = %v, want ErrBadPayload", bad, err)
		}
	}
}

func TestReplicateResultsRoundTrip(t *testing.T) {
	in := []error{nil, session.ErrStaleEpoch, errors.New("disk full"), session.ErrGap, nil}
	got, err := replicationResultsCodec.Decode(replicationResultsCodec.Append(nil, in))
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
}

func FuzzDecodeReplicateBatch(f *testing.F) {
	f.Add(replicationsCodec.Append(nil, []session.Replication{{Key: session.UserKey("u"), Session: "s", Epoch: 1, Last: 1, Msgs: []session.Message{{Seq: 1, Data: []byte("1")}}}}))
	f.Add(replicationResultsCodec.Append(nil, []error{nil, session.ErrGap}))
	f.Fuzz(func(t *testing.T, p []byte) {
		reqs, err := replicationsCodec.Decode(p)
		if err == nil {
			if _, err := replicationsCodec.Decode(replicationsCodec.Append(nil, reqs)); err != nil {
				t.Fatalf("re-encoding a decoded batch fails: %v", err)
			}
		}
		_, _ = replicationResultsCodec.Decode(p)
	})
}

func TestTipsRoundTrip(t *testing.T) {
	want := []Tip{{Key: session.UserKey("u1"), Last: 0}, {Key: session.UserKey("u2"), Last: 1 << 40}}
	got, err := tipsCodec.Decode(tipsCodec.Append(nil, want))
	if err != nil || len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("tipsCodec.Decode(tipsCodec.Append(nil, %+v)) = %+v, %v", want, got, err)
	}
	enc := tipsCodec.Append(nil, want)
	for _, bad := range [][]byte{enc[:len(enc)-1], wire.AppendUvarint(nil, 1<<40)} {
		if _, err := tipsCodec.Decode(bad); !errors.Is(err, ErrBadPayload) {
			t.Fatalf("tipsCodec.Decode(%x): err = %v, want ErrBadPayload", bad, err)
		}
	}
}

func TestGossipKeyPayloadsRoundTrip(t *testing.T) {
	keys := []membership.KeyInfo{{Fingerprint: "0123456789abcdef", Primary: true}, {Fingerprint: "fedcba9876543210"}}
	got, err := keyInfosCodec.Decode(keyInfosCodec.Append(nil, keys))
	if err != nil || len(got) != 2 || got[0] != keys[0] || got[1] != keys[1] {
		t.Fatalf("keyInfosCodec round trip = %+v, %v", got, err)
	}
	if got, err := keyInfosCodec.Decode(keyInfosCodec.Append(nil, nil)); err != nil || len(got) != 0 {
		t.Fatalf("empty keyring = %+v, %v", got, err)
	}
	ch := KeyChange{Op: membership.KeyRemove, Key: []byte("0123456789abcdef")}
	gotCh, err := keyChangeCodec.Decode(keyChangeCodec.Append(nil, ch))
	if err != nil || gotCh.Op != ch.Op || !bytes.Equal(gotCh.Key, ch.Key) {
		t.Fatalf("keyChangeCodec round trip = %+v, %v", gotCh, err)
	}
	encKeys, encCh := keyInfosCodec.Append(nil, keys), keyChangeCodec.Append(nil, ch)
	for _, bad := range [][]byte{encKeys[:len(encKeys)-1], wire.AppendUvarint(nil, 1<<40)} {
		if _, err := keyInfosCodec.Decode(bad); !errors.Is(err, ErrBadPayload) {
			t.Fatalf("keyInfosCodec.Decode(%x): err = %v, want ErrBadPayload", bad, err)
		}
	}
	for _, bad := range [][]byte{nil, encCh[:len(encCh)-1]} {
		if _, err := keyChangeCodec.Decode(bad); !errors.Is(err, ErrBadPayload) {
			t.Fatalf("keyChangeCodec.Decode(%x): err = %v, want ErrBadPayload", bad, err)
		}
	}
}

// codecs is every payload codec of the method table, as a decoder of bytes
// from another node and the encoder that must reproduce what it decoded.
var codecs = map[string]func(p []byte) (again []byte, err error){
	"publish items":       roundTrip(publishItemsCodec),
	"publish outcomes":    roundTrip(publishOutcomesCodec),
	"attach request":      roundTrip(attachRequestCodec),
	"attach reply":        roundTrip(attachReplyCodec),
	"key/node":            roundTrip(keyNodeCodec),
	"delivery":            roundTrip(deliveryCodec),
	"handoff request":     roundTrip(handoffRequestCodec),
	"tail":                roundTrip(tailCodec),
	"tips":                roundTrip(tipsCodec),
	"replication":         roundTrip(replicationCodec),
	"replications":        roundTrip(replicationsCodec),
	"replication results": roundTrip(replicationResultsCodec),
	"stream key":          roundTrip(keyCodec),
	"uvarint":             roundTrip(uvarintCodec),
	"gossip keys":         roundTrip(keyInfosCodec),
	"gossip key op":       roundTrip(keyChangeCodec),
	"presence report":     roundTrip(presenceReportCodec),
	"presence reports":    roundTrip(presenceReportsCodec),
	"members":             roundTrip(membersCodec),
	"presence events":     roundTrip(presenceEventsCodec),
	"history request":     roundTrip(historyRequestCodec),
	"history reply":       roundTrip(historyReplyCodec),
	"fault":               roundTrip(faultCodec),
}

func roundTrip[T any](c peer.Codec[T]) func([]byte) ([]byte, error) {
	return func(p []byte) ([]byte, error) {
		v, err := c.Decode(p)
		if err != nil {
			return nil, err
		}
		return c.Append(nil, v), nil
	}
}

// FuzzPeerPayloads feeds every payload decoder the same bytes: none may
// panic, a refusal must be ErrBadPayload, and what one accepts must
// re-encode into bytes it accepts again, meaning the same (their second
// encoding is identical to the first).
func FuzzPeerPayloads(f *testing.F) {
	msgs := []session.Message{{Seq: 4, ID: "a", TS: 9, Data: []byte(`{"x":1}`)}, {Seq: 5, Data: []byte("2")}}
	k := session.UserKey("alice")
	for _, seed := range [][]byte{
		publishItemsCodec.Append(nil, []PublishItem{{Key: k, ID: "i", Data: []byte("1")}}),
		publishOutcomesCodec.Append(nil, []PublishOutcome{{Code: PublishOK, Seq: 3, Msg: "x"}}),
		attachRequestCodec.Append(nil, AttachRequest{Key: k, Node: "n2", Session: "s", After: 4, Release: true}),
		attachRequestCodec.Append(nil, AttachRequest{Key: k, Node: "n2", Session: "s", After: 4, Nonce: 1 << 40}),
		keyNodeCodec.Append(nil, KeyNode{Key: k, Node: "n2", Nonce: 77}),
		attachReplyCodec.Append(nil, AttachReply{Session: "s", Epoch: 2, Last: 5, Resumed: true, Msgs: msgs}),
		keyNodeCodec.Append(nil, KeyNode{Key: session.Key{Kind: session.ChannelStream, Name: "c"}, Node: "n1", Lost: true}),
		deliveryCodec.Append(nil, Delivery{Key: k, Epoch: 3, Msgs: msgs}),
		handoffRequestCodec.Append(nil, HandoffRequest{Key: k, Epoch: 7, Keep: true}),
		tailCodec.Append(nil, session.Tail{Session: "s", Last: 5, Msgs: msgs, Kept: true}),
		tipsCodec.Append(nil, []Tip{{Key: k, Last: 9}}),
		replicationsCodec.Append(nil, []session.Replication{{Key: k, Session: "s", Epoch: 1, Last: 5, Msgs: msgs}}),
		replicationResultsCodec.Append(nil, []error{nil, session.ErrGap}),
		keyInfosCodec.Append(nil, []membership.KeyInfo{{Fingerprint: "0123456789abcdef", Primary: true}, {Fingerprint: "fedcba9876543210"}}),
		keyChangeCodec.Append(nil, KeyChange{Op: membership.KeyUse, Key: make([]byte, 32)}),
		presenceReportCodec.Append(nil, PresenceReport{Key: session.ChannelKey("c"), Node: "n2", Gen: 9, Members: []session.Member{{User: "a", Conns: 2}}}),
		presenceReportsCodec.Append(nil, []PresenceReport{{Key: session.ChannelKey("c"), Node: "n2", Gen: 9, Members: []session.Member{{User: "a", Conns: 2}}}, {Key: session.ChannelKey("d"), Node: "n2", Gen: 10}}),
		presenceEventsCodec.Append(nil, []PresenceEvent{{Key: session.ChannelKey("c"), User: "a", Join: true}}),
		historyRequestCodec.Append(nil, HistoryRequest{Key: session.ChannelKey("c"), Since: 3, Limit: 100}),
		historyReplyCodec.Append(nil, HistoryReply{Last: 5, Msgs: msgs}),
		faultCodec.Append(nil, protocol.Fault{Kind: protocol.FaultSlow, DurationMS: 5000, LatencyMS: 200}),
		{}, {0}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		for name, codec := range codecs {
			again, err := codec(p)
			if err != nil {
				if !errors.Is(err, ErrBadPayload) {
					t.Fatalf("%s: refused %x with %v, want ErrBadPayload", name, p, err)
				}
				continue
			}
			third, err := codec(again)
			if err != nil {
				t.Fatalf("%s: accepted %x but not its own encoding %x: %v", name, p, again, err)
			}
			// Error texts gain a "remote:" prefix on every trip; only
			// their class (nil, stale, gap, other) must survive.
			if !bytes.Equal(again, third) && name != "replication results" {
				t.Fatalf("%s: encodings differ: %x then %x", name, again, third)
			}
		}
	})
}

func TestFaultRoundTrip(t *testing.T) {
	for _, f := range []protocol.Fault{
		{Kind: protocol.FaultCrash},
		{Kind: protocol.FaultIsolate, DurationMS: 8000},
		{Kind: protocol.FaultSlow, DurationMS: 1, LatencyMS: protocol.MaxFaultLatencyMS},
	} {
		got, err := faultCodec.Decode(faultCodec.Append(nil, f))
		if err != nil || got != f {
			t.Fatalf("faultCodec round trip of %+v = %+v, %v", f, got, err)
		}
	}
	if _, err := faultCodec.Decode([]byte{5, 'c'}); !errors.Is(err, ErrBadPayload) {
		t.Fatalf("truncated fault: err = %v, want ErrBadPayload", err)
	}
}

// Fields added after the first version travel as optional trailing values:
// without them a payload is byte for byte the old one, and with them a
// node that predates them still reads the fields it knows.
func TestTrailingFieldsKeepOldEncodings(t *testing.T) {
	k := session.UserKey("u")
	old := wire.AppendUvarint(wire.AppendString(wire.AppendString(wire.AppendString(nil, "u"), "n2"), "s"), 4)
	if got := attachRequestCodec.Append(nil, AttachRequest{Key: k, Node: "n2", Session: "s", After: 4}); string(got) != string(old) {
		t.Fatalf("attach request without new fields = %x, want the old %x", got, old)
	}
	for _, want := range []AttachRequest{
		{Key: k, Node: "n2", Session: "s", After: 4, Release: true},
		{Key: k, Node: "n2", Session: "s", After: 4, Nonce: 9},
		{Key: k, Node: "n2", Session: "s", After: 4, Release: true, Nonce: 9},
		{Key: session.ChannelKey("c"), Node: "n2", Nonce: 9, Live: true},
		{Key: k, Node: "n2", Live: true},
	} {
		got, err := attachRequestCodec.Decode(attachRequestCodec.Append(nil, want))
		if err != nil || got != want {
			t.Fatalf("attach request round trip %+v = %+v, %v", want, got, err)
		}
	}
	for _, want := range []KeyNode{{Key: k, Node: "n2"}, {Key: k, Lost: true}, {Key: k, Node: "n2", Nonce: 3}} {
		got, err := keyNodeCodec.Decode(keyNodeCodec.Append(nil, want))
		if err != nil || got != want {
			t.Fatalf("key/node round trip %+v = %+v, %v", want, got, err)
		}
	}
}
