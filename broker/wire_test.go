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
