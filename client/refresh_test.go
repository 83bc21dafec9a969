package client

import (
	"context"
	"encoding/base64"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard/switchboard/protocol"
)

func TestTokenExpiry(t *testing.T) {
	payload := func(s string) string {
		return "eyJhbGciOiJIUzI1NiJ9." + b64(s) + ".sig"
	}
	tests := []struct {
		name  string
		token string
		want  time.Time // zero: no exp
	}{
		{"not a JWT", "tok", time.Time{}},
		{"two parts", "a." + b64(`{"exp":1700000000}`), time.Time{}},
		{"payload not base64url", "a.!!!.c", time.Time{}},
		{"payload not JSON", payload(`exp`), time.Time{}},
		{"payload not an object", payload(`[1700000000]`), time.Time{}},
		{"no exp", payload(`{"sub":"alice"}`), time.Time{}},
		{"exp null", payload(`{"exp":null}`), time.Time{}},
		{"exp a string", payload(`{"exp":"1700000000"}`), time.Time{}},
		{"exp zero", payload(`{"exp":0}`), time.Time{}},
		{"exp negative", payload(`{"exp":-5}`), time.Time{}},
		{"exp past any real date", payload(`{"exp":1e300}`), time.Time{}},
		{"exp", payload(`{"sub":"alice","exp":1700000000}`), time.Unix(1700000000, 0)},
		{"exp with a fraction", payload(`{"exp":1700000000.5}`), time.Unix(1700000000, 5e8)},
		{"padded payload", "a." + b64(`{"exp":1700000000}`) + "==.c", time.Unix(1700000000, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tokenExpiry(tt.token)
			if ok != !tt.want.IsZero() || !got.Equal(tt.want) {
				t.Fatalf("tokenExpiry(%q) = %v, %v; want %v", tt.token, got, ok, tt.want)
			}
		})
	}
}

func TestRefreshDelay(t *testing.T) {
	now := time.Unix(1700000000, 0)
	tests := []struct {
		name   string
		left   time.Duration // until exp
		before time.Duration
		want   time.Duration
	}{
		{"long-lived token: before ahead of exp", time.Hour, 30 * time.Second, time.Hour - 30*time.Second},
		{"just over before: at once", 31 * time.Second, 30 * time.Second, time.Second},
		{"exactly before: half of what is left", 30 * time.Second, 30 * time.Second, 15 * time.Second},
		{"short-lived token: half of what is left", 2 * time.Second, 30 * time.Second, time.Second},
		{"two seconds, refresh one before", 2 * time.Second, time.Second, time.Second},
		{"almost expired: not sooner than the minimum", 50 * time.Millisecond, time.Second, minRefreshDelay},
		{"expired by our clock: the minimum, not a loop", -time.Minute, time.Second, minRefreshDelay},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := refreshDelay(now, now.Add(tt.left), tt.before); got != tt.want {
				t.Fatalf("refreshDelay(exp in %v, before %v) = %v, want %v", tt.left, tt.before, got, tt.want)
			}
		})
	}
}

// expiringTokens returns a Config.Token whose every token is a distinct JWT
// expiring life from the call, and the number of calls so far.
func expiringTokens(t *testing.T, life time.Duration) (func() (string, error), *atomic.Int32) {
	var n atomic.Int32
	return func() (string, error) {
		i := n.Add(1)
		return fakeJWT(t, map[string]any{"sub": "alice", "n": i, "exp": time.Now().Add(life).Unix()}), nil
	}, &n
}

func TestTokenIsRefreshedBeforeExpiryWithoutReconnect(t *testing.T) {
	fs := newFake(t, func(fc *fakeConn) {
		fc.welcome(protocol.Welcome{Session: "s1", Resumed: true})
		fc.holdExpiring(false)
	})
	cfg := testConfig(fs.url)
	cfg.Token, _ = expiringTokens(t, 2*time.Second)
	cfg.RefreshBefore = time.Second
	c := dial(t, cfg)

	first := fs.nextHello(t).Token
	exp := time.Unix(fakeExpiry(first), 0)
	if got := fs.nextRefresh(t); got == first || fakeExpiry(got) <= exp.Unix() {
		t.Fatalf("refresh sent %q, want a token expiring after the first", got)
	}
	// The refreshed token is refreshed in turn, before it expires.
	fs.nextRefresh(t)
	// The fake closes a connection expiryGrace after its token's exp: be
	// well past the first token's.
	time.Sleep(time.Until(exp.Add(expiryGrace + time.Second)))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping after the first token expired: %v", err)
	}
	if n := fs.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want the first one kept", n)
	}
	for len(c.Events()) > 0 {
		if e := <-c.Events(); e.Kind != EventConnected {
			t.Fatalf("unexpected event %v: %v", e.Kind, e.Err)
		}
	}
}

func TestRefreshFailureIsReportedAndExpiryReconnects(t *testing.T) {
	errIdP := errors.New("identity provider down")
	tests := []struct {
		name   string
		second func(first string) (string, error) // Token's answer at the refresh
		refuse bool                               // the server refuses refreshes
		want   error
	}{
		{"Token fails", func(string) (string, error) { return "", errIdP }, false, errIdP},
		{"Token returns the token in use", func(first string) (string, error) { return first, nil }, false, ErrToken},
		{"server refuses the token", nil, true, ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFake(t, func(fc *fakeConn) {
				fc.welcome(protocol.Welcome{Session: "s1", Resumed: true})
				fc.holdExpiring(tt.refuse)
			})
			fresh, _ := expiringTokens(t, 2*time.Second)
			var n atomic.Int32
			var first string
			cfg := testConfig(fs.url)
			cfg.RefreshBefore = time.Second
			cfg.Token = func() (string, error) {
				switch n.Add(1) {
				case 1:
					first, _ = fresh()
					return first, nil
				case 2:
					if tt.second != nil {
						return tt.second(first)
					}
				}
				return fresh()
			}
			c := dial(t, cfg)
			hello := fs.nextHello(t).Token

			ev := waitEvent(t, c, EventRefreshFailed)
			if !errors.Is(ev.Err, tt.want) || ev.Endpoint != fs.url || ev.Session != "s1" {
				t.Fatalf("event %+v, want Err wrapping %v", ev, tt.want)
			}
			if tt.want != ErrUnauthorized {
				select {
				case tok := <-fs.refreshes:
					t.Fatalf("refresh sent with %q", tok)
				default:
				}
			}
			// The client does not close the connection itself: the server
			// does at exp, and the client reconnects with a new token.
			if ev := waitEvent(t, c, EventDisconnected); ev.Code != int(protocol.CloseUnauthorized) {
				t.Fatalf("disconnected %+v, want the server's 4001", ev)
			}
			if again := fs.nextHello(t).Token; again == hello {
				t.Fatal("reconnected with the expired token")
			}
			waitEvent(t, c, EventResumed)
		})
	}
}

func TestNoRefreshWithoutExp(t *testing.T) {
	for _, tok := range []string{"tok", "a." + b64(`{"sub":"alice"}`) + ".c"} {
		t.Run(tok, func(t *testing.T) {
			fs := newFake(t, func(fc *fakeConn) {
				fc.welcome(protocol.Welcome{Session: "s1", Resumed: true})
				fc.holdExpiring(false)
			})
			var n atomic.Int32
			cfg := testConfig(fs.url)
			cfg.RefreshBefore = time.Hour // any exp would be refreshed at once
			cfg.Token = func() (string, error) { n.Add(1); return tok, nil }
			c := dial(t, cfg)
			time.Sleep(time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := c.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-fs.refreshes:
				t.Fatalf("refresh sent with %q", r)
			default:
			}
			if got := n.Load(); got != 1 {
				t.Fatalf("Token called %d times, want once (the hello)", got)
			}
		})
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestCloseDuringRefreshWaitsForTokenAndReportsNothing(t *testing.T) {
	fs := newFake(t, func(fc *fakeConn) {
		fc.welcome(protocol.Welcome{Session: "s1", Resumed: true})
		fc.holdExpiring(false)
	})
	fresh, _ := expiringTokens(t, 2*time.Second)
	called, release := make(chan struct{}), make(chan struct{})
	var n atomic.Int32
	cfg := testConfig(fs.url)
	cfg.RefreshBefore = time.Second
	cfg.Token = func() (string, error) {
		if n.Add(1) == 1 {
			return fresh()
		}
		close(called) // the refresh; no further call may come
		<-release
		return "", errors.New("too late")
	}
	c := dial(t, cfg)
	select {
	case <-called:
	case <-time.After(10 * time.Second):
		t.Fatal("no refresh")
	}
	closed := make(chan struct{})
	go func() { _ = c.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while Token was running")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after Token did")
	}
	for e := range c.Events() {
		if e.Kind == EventRefreshFailed {
			t.Fatalf("refresh failure reported after Close: %v", e.Err)
		}
	}
}
