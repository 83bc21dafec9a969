package protocol

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestValidChannel(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"ticker:BTC", true},
		{"room/42#a", true},
		{"x", true},
		{strings.Repeat("a", 255), true},
		{"", false},
		{strings.Repeat("a", 256), false},
		{"$sys", false},
		{"a b", false},
		{"tab\there", false},
		{"caf\u00e9", false},
		{"del\x7f", false},
	} {
		err := ValidChannel(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidChannel(%q) = %v, want ok %v", tc.name, err, tc.ok)
		}
		if err != nil && (!errors.Is(err, ErrBadChannel) || !errors.Is(err, ErrBadRequest) || ChannelSlugOf(err) != "bad_channel") {
			t.Errorf("ValidChannel(%q) = %v: not a bad_channel", tc.name, err)
		}
	}
}

func TestChannelAllowed(t *testing.T) {
	for _, tc := range []struct {
		patterns []string
		name     string
		ok       bool
	}{
		{nil, "a", false},
		{[]string{"*"}, "anything", true},
		{[]string{"ticker:*"}, "ticker:BTC", true},
		{[]string{"ticker:*"}, "ticker:", true},
		{[]string{"ticker:*"}, "tick", false},
		{[]string{"room:42"}, "room:42", true},
		{[]string{"room:42"}, "room:420", false},
		{[]string{"room:4", "room:42"}, "room:42", true},
	} {
		if got := ChannelAllowed(tc.patterns, tc.name); got != tc.ok {
			t.Errorf("ChannelAllowed(%q, %q) = %v, want %v", tc.patterns, tc.name, got, tc.ok)
		}
	}
}

func TestDecodeSubscribeTellsAbsentSeqFromZero(t *testing.T) {
	f, err := DecodeClientFrame([]byte(`{"type":"subscribe","channel":"c","presence":true,"join_leave":true}`))
	if err != nil || f.Sub == nil || f.Sub.Seq != nil || f.Sub.Channel != "c" || !f.Sub.Presence || !f.Sub.JoinLeave {
		t.Fatalf("live subscribe: %+v %v", f.Sub, err)
	}
	f, err = DecodeClientFrame([]byte(`{"type":"subscribe","channel":"c","seq":0}`))
	if err != nil || f.Sub == nil || f.Sub.Seq == nil || *f.Sub.Seq != 0 {
		t.Fatalf("subscribe from 0: %+v %v", f.Sub, err)
	}
	if _, err := DecodeClientFrame([]byte(`{"type":"subscribe","channel":"c","seq":-1}`)); !errors.Is(err, ErrBadFrame) {
		t.Fatalf("negative seq: %v", err)
	}
	f, err = DecodeClientFrame([]byte(`{"type":"hello","token":"t","subscriptions":[{"channel":"a","seq":3},{"channel":"b"}]}`))
	if err != nil || len(f.Subscriptions) != 2 || *f.Subscriptions[0].Seq != 3 || f.Subscriptions[1].Seq != nil {
		t.Fatalf("hello subscriptions: %+v %v", f.Subscriptions, err)
	}
	for _, typ := range []string{TypeUnsubscribe, TypePresence} {
		f, err = DecodeClientFrame([]byte(`{"type":"` + typ + `","channel":"c"}`))
		if err != nil || f.Channel != "c" {
			t.Fatalf("%s: %+v %v", typ, f, err)
		}
	}
}

func TestChannelFramesAreTheirTypes(t *testing.T) {
	data := json.RawMessage(`{"px":1.5}`)
	var m Message
	if err := json.Unmarshal(AppendChannelMessage(nil, `a"b`, 7, "id\n", 9, data), &m); err != nil {
		t.Fatal(err)
	}
	if m.Channel != `a"b` || m.Seq != 7 || m.ID != "id\n" || m.TS != 9 || string(m.Data) != string(data) {
		t.Fatalf("channel message: %+v", m)
	}
	if pm, ok := ParseMessage(AppendChannelMessage(nil, "ticker:BTC", 3, "i", 1, data)); !ok || pm.Channel != "ticker:BTC" || pm.Seq != 3 || pm.ID != "i" || string(pm.Data) != string(data) {
		t.Fatalf("fast path on a channel message: %+v %v", pm, ok)
	}
	if _, ok := ParseMessage(AppendChannelMessage(nil, `a"b`, 3, "i", 1, data)); ok {
		t.Fatal("the fast path took a channel name with an escape")
	}
	var s Subscribed
	if err := json.Unmarshal(AppendSubscribed(nil, "c", 12, true), &s); err != nil || s != (Subscribed{TypeSubscribed, "c", 12, true}) {
		t.Fatalf("subscribed: %+v %v", s, err)
	}
	for _, join := range []bool{true, false} {
		var jl JoinLeave
		if err := json.Unmarshal(AppendJoinLeave(nil, join, "c", "u\u2028"), &jl); err != nil || jl.Channel != "c" || jl.User != "u\u2028" {
			t.Fatalf("join/leave: %+v %v", jl, err)
		}
		if want := map[bool]string{true: TypeJoin, false: TypeLeave}[join]; jl.Type != want {
			t.Fatalf("type %q, want %q", jl.Type, want)
		}
	}
	var e ChannelError
	if err := json.Unmarshal(EncodeChannelError("c", Errorf(ErrTooManyChannels, "over 2")), &e); err != nil || e.Code != "too_many_channels" || e.Channel != "c" || e.Type != TypeError {
		t.Fatalf("channel error: %+v %v", e, err)
	}
	var p Presence
	if err := json.Unmarshal(EncodePresence(Presence{Channel: "c"}), &p); err != nil || p.Type != TypePresence || p.Members == nil {
		t.Fatalf("presence: %+v %v", p, err)
	}
}
