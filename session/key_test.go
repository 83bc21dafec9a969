package session

import (
	"errors"
	"testing"
)

func TestKeyRoundTrip(t *testing.T) {
	for _, k := range []Key{UserKey("alice"), UserKey(""), {Kind: ChannelStream, Name: "ticker:BTC"}, {Kind: ChannelStream, Name: "alice"}} {
		got, err := ParseKey(k.String())
		if err != nil || got != k {
			t.Errorf("ParseKey(%q) = %+v, %v; want %+v", k.String(), got, err, k)
		}
	}
	// A user's key is the user id itself: registry entries and peer
	// payloads of user streams are what they were before streams had kinds.
	if s := UserKey("bob").String(); s != "bob" {
		t.Errorf("user key %q, want the bare user id", s)
	}
	if UserKey("x").String() == (Key{Kind: ChannelStream, Name: "x"}).String() {
		t.Error("a user and a channel of the same name share a key")
	}
	if _, err := ParseKey("\x02odd"); !errors.Is(err, ErrBadKey) {
		t.Errorf("ParseKey of an unknown kind = %v, want ErrBadKey", err)
	}
}
