package gateway

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard/switchboard/protocol"
)

// Channel frames the gateway answers itself (DESIGN.md §3a): bad names,
// channels the token does not allow, the per-connection limit, and
// frames about channels the connection lacks; each with an error frame
// naming the channel while the connection keeps working.
func TestChannelFramesAreCheckedAndTheConnectionGoesOn(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxChannelsPerConn = 2
	auth := func(token string) (Identity, error) {
		return Identity{User: token, Channels: []string{"ticker:*", "room:42", "fail"}}, nil
	}
	h := startGWAuth(t, cfg, newGwFakeHub(), auth)
	ws := h.dial(nil)
	send := func(v any) {
		t.Helper()
		if err := ws.WriteJSON(v); err != nil {
			t.Fatal(err)
		}
	}
	next := func() map[string]any {
		t.Helper()
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	expectErr := func(channel, code string) {
		t.Helper()
		m := next()
		if m["type"] != "error" || m["code"] != code || m["channel"] != channel {
			t.Fatalf("got %v, want error %s on %q", m, code, channel)
		}
	}
	sub := func(ch string) map[string]any {
		return map[string]any{"type": "subscribe", "channel": ch}
	}
	send(map[string]any{"type": "hello", "token": "alice", "subscriptions": []any{sub("ticker:A"), sub("nope")}})
	if m := next(); m["type"] != "welcome" {
		t.Fatalf("got %v, want welcome", m)
	}
	if m := next(); m["type"] != "subscribed" || m["channel"] != "ticker:A" || m["resumed"] != true {
		t.Fatalf("hello subscription answered %v", m)
	}
	expectErr("nope", "forbidden")

	send(sub("$sys"))
	expectErr("$sys", "bad_channel")
	send(sub(strings.Repeat("x", 256)))
	expectErr(strings.Repeat("x", 256), "bad_channel")
	send(sub("a b"))
	expectErr("a b", "bad_channel")
	send(sub("fail"))
	expectErr("fail", "unavailable")
	send(sub("room:42"))
	if m := next(); m["type"] != "subscribed" || m["channel"] != "room:42" {
		t.Fatalf("got %v", m)
	}
	send(sub("ticker:B"))
	expectErr("ticker:B", "too_many_channels")
	send(sub("room:42")) // again: replaces, counts once
	if m := next(); m["type"] != "subscribed" || m["channel"] != "room:42" {
		t.Fatalf("got %v", m)
	}
	send(map[string]any{"type": "presence", "channel": "ticker:B"})
	expectErr("ticker:B", "not_subscribed")
	send(map[string]any{"type": "presence", "channel": "room:42"})
	if m := next(); m["type"] != "presence" || m["count"] != float64(1) {
		t.Fatalf("presence answered %v", m)
	}
	send(map[string]any{"type": "unsubscribe", "channel": "room:42"})
	if m := next(); m["type"] != "unsubscribed" || m["channel"] != "room:42" {
		t.Fatalf("got %v", m)
	}
	send(map[string]any{"type": "unsubscribe", "channel": "room:42"})
	expectErr("room:42", "not_subscribed")
	send(sub("ticker:B")) // a slot is free again
	if m := next(); m["type"] != "subscribed" || m["channel"] != "ticker:B" {
		t.Fatalf("got %v", m)
	}
	send(map[string]any{"type": "ping", "id": 1})
	if m := next(); m["type"] != "pong" {
		t.Fatalf("the connection stopped working: %v", m)
	}
	// A frame that breaks the protocol still closes it.
	send(map[string]any{"type": "subscribe", "channel": 7})
	for {
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := ws.ReadMessage(); err != nil {
			if !websocket.IsCloseError(err, int(protocol.CloseProtocol)) {
				t.Fatalf("close: %v, want 4002", err)
			}
			break
		}
	}
}
