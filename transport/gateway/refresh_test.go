package gateway

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/switchboard/switchboard/internal/testenv"
	"github.com/switchboard/switchboard/protocol"
)

// gwExpectExpiry waits for the close that ends a connection whose token
// expires at exp, and checks it came neither before exp nor much after
// it (DESIGN.md §7: within a second; the bound here is generous).
func gwExpectExpiry(t *testing.T, ws *websocket.Conn, exp time.Time) {
	t.Helper()
	gwExpectClose(t, ws, protocol.CloseUnauthorized, "token_expired")
	now := time.Now()
	if now.Before(exp) {
		t.Errorf("closed %v before the token expired", exp.Sub(now))
	}
	if late := now.Sub(exp); late > 2*time.Second {
		t.Errorf("closed %v after the token expired, want within a second", late)
	}
}

func TestGatewayTokenExpiryCloses(t *testing.T) {
	testenv.NoLeaks(t)
	h := startGW(t, Config{}, nil)
	check := h.startWellBehaved(nil, "good") // whose token never expires
	ws := h.dial(nil)
	exp := time.Now().Add(700 * time.Millisecond).Truncate(time.Millisecond)
	gwSend(t, ws, `{"type":"hello","token":"`+gwToken("alice", exp)+`"}`)
	gwMustRead(t, ws, protocol.TypeWelcome)
	gwExpectExpiry(t, ws, exp)
	check()
}

func TestGatewayRefresh(t *testing.T) {
	testenv.NoLeaks(t)
	const life = 800 * time.Millisecond
	tests := []struct {
		name  string
		token func(exp time.Time) string // the refresh's token, given the current expiry
		later time.Duration              // > 0: accepted, the token now expires this much later
	}{
		{name: "same user, later", token: func(exp time.Time) string { return gwToken("alice", exp.Add(time.Second)) }, later: time.Second},
		{name: "invalid", token: func(time.Time) string { return "forged" }},
		{name: "expired", token: func(time.Time) string { return "expired" }},
		{name: "other user", token: func(exp time.Time) string { return gwToken("mallory", exp.Add(time.Second)) }},
		{name: "same expiry", token: func(exp time.Time) string { return gwToken("alice", exp) }},
		{name: "earlier", token: func(exp time.Time) string { return gwToken("alice", exp.Add(-100*time.Millisecond)) }},
		{name: "no token", token: func(time.Time) string { return "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startGW(t, Config{}, nil)
			ws := h.dial(nil)
			exp := time.Now().Add(life).Truncate(time.Millisecond)
			gwSend(t, ws, `{"type":"hello","token":"`+gwToken("alice", exp)+`"}`)
			gwMustRead(t, ws, protocol.TypeWelcome)
			gwSend(t, ws, `{"type":"refresh","token":"`+tt.token(exp)+`"}`)
			f, err := gwRead(t, ws)
			if err != nil {
				t.Fatalf("no answer to the refresh: %v", err)
			}
			if tt.later == 0 {
				// Refused: an error frame, and the connection goes on
				// with its old token.
				if f.Type != protocol.TypeError || f.Code != "unauthorized" || f.Message == "" {
					t.Fatalf("got %s, want an unauthorized error frame", f.raw)
				}
				gwSend(t, ws, `{"type":"ping","id":"alive"}`)
				if p := gwMustRead(t, ws, protocol.TypePong); string(p.ID) != `"alive"` {
					t.Fatalf("got %s", p.raw)
				}
				gwExpectExpiry(t, ws, exp)
				return
			}
			var r protocol.Refreshed
			if err := json.Unmarshal(f.raw, &r); err != nil || r.Type != protocol.TypeRefreshed {
				t.Fatalf("got %s, want refreshed", f.raw)
			}
			newExp := exp.Add(tt.later)
			if r.Exp != newExp.Unix() {
				t.Errorf("refreshed exp %d, want %d", r.Exp, newExp.Unix())
			}
			// Past the old expiry the connection lives on, until the new one.
			time.Sleep(time.Until(exp.Add(300 * time.Millisecond)))
			gwSend(t, ws, `{"type":"ping","id":"alive"}`)
			gwMustRead(t, ws, protocol.TypePong)
			gwExpectExpiry(t, ws, newExp)
		})
	}
}

// An Authenticator that blocks (a key fetch) holds up the connection that
// refreshes, not the others.
func TestGatewayBlockingRefreshHoldsNoOtherConnection(t *testing.T) {
	testenv.NoLeaks(t)
	release := make(chan struct{})
	auth := func(token string) (Identity, error) {
		if u, ok := strings.CutPrefix(token, "slow-"); ok {
			<-release
			return Identity{User: u, Expires: time.Now().Add(time.Hour)}, nil
		}
		return gwFakeAuth(token)
	}
	h := startGWAuth(t, Config{}, nil, auth)
	slow := h.dial(nil)
	gwSend(t, slow, `{"type":"hello","token":"`+gwToken("alice", time.Now().Add(time.Minute))+`"}`)
	gwMustRead(t, slow, protocol.TypeWelcome)
	gwSend(t, slow, `{"type":"refresh","token":"slow-alice"}`)
	gwSend(t, slow, `{"type":"ping","id":"queued"}`) // waits for the refresh

	other := h.dial(nil)
	gwHello(t, other, "bob")
	for range 3 {
		gwSend(t, other, `{"type":"ping","id":1}`)
		gwMustRead(t, other, protocol.TypePong)
	}
	close(release)
	gwMustRead(t, slow, protocol.TypeRefreshed)
	if p := gwMustRead(t, slow, protocol.TypePong); string(p.ID) != `"queued"` {
		t.Errorf("got %s", p.raw)
	}
}
