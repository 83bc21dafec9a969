package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// jwksVerifier returns a verifier of srv's set on clk, after its first
// fetch ended.
func jwksVerifier(t *testing.T, srv *jwksServer, clk *clock, set func(*Config)) *Verifier {
	t.Helper()
	cfg := testConfig(t, clk)
	cfg.JWKSURL = srv.URL
	if srv.TLS != nil {
		cfg.HTTPClient = srv.Client()
	}
	if set != nil {
		set(&cfg)
	}
	v := newVerifier(t, cfg)
	waitFetches(t, srv, v, 1)
	return v
}

// jwksSetup serves a set holding k as kid "k1" and returns the server, the
// clock and a verifier of that set, its first fetch done.
func jwksSetup(t *testing.T, k signer, set func(*Config)) (*jwksServer, *clock, *Verifier) {
	t.Helper()
	srv := newJWKSServer(t, false)
	srv.publish(t, jwkOf(t, k.public(), "k1"))
	clk := newClock()
	return srv, clk, jwksVerifier(t, srv, clk, set)
}

func TestJWKS(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "https"}[tlsOn], func(t *testing.T) {
			rsaKey, ecKey, edKey := testKey(t, "rsa", 0), testKey(t, "ec", 0), testKey(t, "ed", 0)
			srv := newJWKSServer(t, tlsOn)
			srv.publish(t, jwkOf(t, rsaKey.public(), "r1"), jwkOf(t, ecKey.public(), "e1"), jwkOf(t, edKey.public(), "d1"))
			v := jwksVerifier(t, srv, newClock(), nil)

			wantOK(t, v, sign(t, rsaKey, "r1", claims(nil)))
			wantOK(t, v, sign(t, ecKey, "e1", claims(nil)))
			wantOK(t, v, sign(t, edKey, "d1", claims(nil)))
			// No kid: every key of the token's algorithm is tried.
			wantOK(t, v, sign(t, rsaKey, "", claims(nil)))
			// A kid of another key's algorithm is no key for this one.
			wantRefused(t, v, sign(t, rsaKey, "e1", claims(nil)), "no key for the token's algorithm and kid")
			wantRefused(t, v, sign(t, testKey(t, "rsa", 1), "r1", claims(nil)), "signature invalid")
			if n := srv.fetches.Load(); n != 1 {
				t.Errorf("%d fetches; tokens of known kids need none after the first", n)
			}
		})
	}
}

// TestJWKSKeyRotation follows an issuer rotating from k1 to k2: k2 is
// published while k1 stays, then k1 is withdrawn.
func TestJWKSKeyRotation(t *testing.T) {
	k1, k2 := testKey(t, "rsa", 0), testKey(t, "rsa", 1)
	srv, clk, v := jwksSetup(t, k1, nil)
	old := sign(t, k1, "k1", claims(nil))
	wantOK(t, v, old)

	// k2 is published; its first token brings the new set in.
	srv.publish(t, jwkOf(t, k1.public(), "k1"), jwkOf(t, k2.public(), "k2"))
	clk.Advance(5 * time.Second)
	wantOK(t, v, sign(t, k2, "k2", claims(nil)))
	wantOK(t, v, old)
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}

	// k1 is withdrawn. The cache still has it until something refetches:
	// here a token with a kid nobody published.
	srv.publish(t, jwkOf(t, k2.public(), "k2"))
	clk.Advance(5 * time.Second)
	wantOK(t, v, old)
	wantRefused(t, v, sign(t, k2, "k-unknown", claims(nil)), "no key")
	wantRefused(t, v, old, "no key for the token's algorithm and kid")
	wantOK(t, v, sign(t, k2, "k2", claims(nil)))
	if n := srv.fetches.Load(); n != 3 {
		t.Fatalf("%d fetches, want 3 (k1's refusal is within the 5 s of the last)", n)
	}
}

// TestJWKSMaxAge: a set older than JWKSMaxAge is refetched in the
// background, so a withdrawn key stops working without any unknown kid.
func TestJWKSMaxAge(t *testing.T) {
	k1, k2 := testKey(t, "ec", 0), testKey(t, "ec", 1)
	srv := newJWKSServer(t, false)
	srv.publish(t, jwkOf(t, k1.public(), "k1"), jwkOf(t, k2.public(), "k2"))
	clk := newClock()
	v := jwksVerifier(t, srv, clk, nil)
	old := sign(t, k1, "k1", claims(nil))
	wantOK(t, v, old)

	srv.publish(t, jwkOf(t, k2.public(), "k2"))
	clk.Advance(DefaultConfig().JWKSMaxAge - time.Second)
	wantOK(t, v, old)
	clk.Advance(time.Second)
	// Any verification starts the refetch, and does not wait for it.
	_, _ = v.Verify(context.Background(), sign(t, k2, "k2", claims(nil)))
	waitFetches(t, srv, v, 2)
	wantRefused(t, v, old, "no key")
	wantOK(t, v, sign(t, k2, "k2", claims(nil)))
}

// TestKidFloodFetchesAtMostOncePerInterval: tokens with random kids, many
// at once, cost the JWKS server one request per JWKSMinInterval.
func TestKidFloodFetchesAtMostOncePerInterval(t *testing.T) {
	k := testKey(t, "ed", 0)
	srv, clk, v := jwksSetup(t, k, nil)

	flood := func() {
		var wg sync.WaitGroup
		for g := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 20 {
					_, err := v.Verify(context.Background(), sign(t, k, fmt.Sprintf("random-%d-%d-%d", clk.Now().Unix(), g, i), claims(nil)))
					if err == nil || !strings.Contains(err.Error(), "no key") {
						t.Errorf("a token with a random kid: %v", err)
					}
				}
			}()
		}
		wg.Wait()
	}
	for _, step := range []struct {
		advance time.Duration
		fetches int64
	}{
		{0, 1},                       // within 5 s of the first fetch: none
		{5 * time.Second, 2},         // one
		{4900 * time.Millisecond, 2}, // none
		{100 * time.Millisecond, 3},  // one
		{time.Minute, 4},             // one, however long the pause was
	} {
		clk.Advance(step.advance)
		flood()
		if n := srv.fetches.Load(); n != step.fetches {
			t.Fatalf("after a flood at +%v: %d fetches, want %d", clk.Now().Sub(t0), n, step.fetches)
		}
	}
	wantOK(t, v, sign(t, k, "k1", claims(nil)))
}

// TestJWKSFailureKeepsTheCachedKeys: whatever the server does wrong, the
// keys already fetched stay in force and the bad answer costs a bounded
// wait.
func TestJWKSFailureKeepsTheCachedKeys(t *testing.T) {
	k1, k2 := testKey(t, "rsa", 0), testKey(t, "rsa", 1)
	for _, tc := range []struct {
		name  string
		fault func(t *testing.T, s *jwksServer)
	}{
		{"status 500", func(t *testing.T, s *jwksServer) { s.fail(http.StatusInternalServerError) }},
		{"status 404", func(t *testing.T, s *jwksServer) { s.fail(http.StatusNotFound) }},
		{"not JSON", func(t *testing.T, s *jwksServer) { s.serve([]byte("<html>oops</html>")) }},
		{"JSON, not a set", func(t *testing.T, s *jwksServer) { s.serve([]byte(`{"keys":"none"}`)) }},
		{"empty set", func(t *testing.T, s *jwksServer) { s.serve([]byte(`{"keys":[]}`)) }},
		{"no usable key", func(t *testing.T, s *jwksServer) {
			s.serve([]byte(`{"keys":[{"kty":"RSA","kid":"k2","n":"!!","e":"AQAB"},{"kty":"oct","kid":"k2","k":"c2VjcmV0"}]}`))
		}},
		{"too large", func(t *testing.T, s *jwksServer) {
			body, err := json.Marshal(map[string]any{"keys": []any{jwkOf(t, k2.public(), "k2")}, "pad": strings.Repeat("x", 300<<10)})
			if err != nil {
				t.Fatal(err)
			}
			s.serve(body)
		}},
		{"hangs", func(t *testing.T, s *jwksServer) { s.hangs() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, clk, v := jwksSetup(t, k1, func(c *Config) { c.JWKSTimeout = 200 * time.Millisecond })
			old := sign(t, k1, "k1", claims(nil))

			tc.fault(t, srv)
			clk.Advance(5 * time.Second)
			start := time.Now()
			wantRefused(t, v, sign(t, k2, "k2", claims(nil)), "no key for the token's algorithm and kid")
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("the refused token waited %v for the JWKS; want about JWKSTimeout", d)
			}
			wantOK(t, v, old)
			if n := srv.fetches.Load(); n != 2 {
				t.Errorf("%d fetches, want 2", n)
			}

			// The server recovers; the next interval brings k2 in.
			srv.publish(t, jwkOf(t, k1.public(), "k1"), jwkOf(t, k2.public(), "k2"))
			clk.Advance(5 * time.Second)
			wantOK(t, v, sign(t, k2, "k2", claims(nil)))
			wantOK(t, v, old)
		})
	}
}

// TestJWKSDownAtStart: New does not wait for the JWKS, and tokens work
// once it answers.
func TestJWKSDownAtStart(t *testing.T) {
	k := testKey(t, "ec", 0)
	srv := newJWKSServer(t, false)
	srv.fail(http.StatusServiceUnavailable)
	clk := newClock()
	v := jwksVerifier(t, srv, clk, nil)
	tok := sign(t, k, "k1", claims(nil))
	wantRefused(t, v, tok, "no key")
	srv.publish(t, jwkOf(t, k.public(), "k1"))
	wantRefused(t, v, tok, "no key") // within 5 s of the failed fetch
	clk.Advance(5 * time.Second)
	wantOK(t, v, tok)
}

// TestFetchInFlight: while a fetch hangs, tokens of known keys verify at
// once, tokens that wait for it give up when their context ends, and
// tokens that arrive meanwhile wait for that one fetch instead of
// starting another.
func TestFetchInFlight(t *testing.T) {
	k1, k2 := testKey(t, "ed", 0), testKey(t, "ed", 1)
	srv, clk, v := jwksSetup(t, k1, func(c *Config) { c.JWKSTimeout = time.Minute })

	srv.hangs()
	clk.Advance(5 * time.Second)
	waiting := make(chan error, 10)
	for range cap(waiting) {
		go func() {
			_, err := v.Verify(context.Background(), sign(t, k2, "k2", claims(nil)))
			waiting <- err
		}()
	}
	<-srv.hung

	start := time.Now()
	wantOK(t, v, sign(t, k1, "k1", claims(nil)))
	if d := time.Since(start); d > time.Second {
		t.Errorf("a known kid waited %v behind the fetch in flight", d)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := v.Verify(ctx, sign(t, k2, "k2", claims(nil))); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("Verify with an ended context: %v, want ErrUnauthorized", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Error("Verify did not return when its context ended")
	}

	// The fetch comes back with k2: everyone waiting gets it.
	srv.publish(t, jwkOf(t, k1.public(), "k1"), jwkOf(t, k2.public(), "k2"))
	srv.release <- struct{}{} // this request answers with nothing: a failed fetch
	for range cap(waiting) {
		if err := <-waiting; !errors.Is(err, ErrUnauthorized) {
			t.Errorf("a waiter of a failed fetch: %v", err)
		}
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2: the waiters shared one", n)
	}
	clk.Advance(5 * time.Second)
	wantOK(t, v, sign(t, k2, "k2", claims(nil)))
}

func TestCloseStopsFetching(t *testing.T) {
	k := testKey(t, "ed", 0)
	srv, clk, v := jwksSetup(t, k, nil)

	srv.hangs()
	clk.Advance(5 * time.Second)
	done := make(chan error)
	go func() {
		_, err := v.Verify(context.Background(), sign(t, k, "k2", claims(nil)))
		done <- err
	}()
	<-srv.hung
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("the waiter of a cancelled fetch: %v", err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	clk.Advance(time.Hour)
	wantRefused(t, v, sign(t, k, "k3", claims(map[string]any{"exp": t0.Add(2 * time.Hour).Unix()})), "no key")
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after Close, want none (2 in all)", n)
	}
}

func TestParseJWKS(t *testing.T) {
	rsaJWK := jwkOf(t, testKey(t, "rsa", 0).public(), "r")
	ecJWK := jwkOf(t, testKey(t, "ec", 0).public(), "e")
	edJWK := jwkOf(t, testKey(t, "ed", 0).public(), "d")
	with := func(k map[string]any, set map[string]any) map[string]any {
		c := map[string]any{}
		for n, v := range k {
			c[n] = v
		}
		for n, v := range set {
			c[n] = v
		}
		return c
	}
	for _, tc := range []struct {
		name string
		key  map[string]any
		ok   bool
	}{
		{"RSA", rsaJWK, true},
		{"RSA alg RS256 use sig", with(rsaJWK, map[string]any{"alg": "RS256", "use": "sig", "key_ops": []string{"verify"}}), true},
		{"EC", ecJWK, true},
		{"OKP", edJWK, true},
		{"padded base64", with(edJWK, map[string]any{"x": edJWK["x"].(string) + "="}), true},
		{"private members ignored", with(ecJWK, map[string]any{"d": "AAAA"}), true},
		{"use enc", with(rsaJWK, map[string]any{"use": "enc"}), false},
		{"key_ops sign only", with(rsaJWK, map[string]any{"key_ops": []string{"sign"}}), false},
		{"alg RS512", with(rsaJWK, map[string]any{"alg": "RS512"}), false},
		{"alg PS256", with(rsaJWK, map[string]any{"alg": "PS256"}), false},
		{"alg HS256 on an RSA key", with(rsaJWK, map[string]any{"alg": "HS256"}), false},
		{"oct", map[string]any{"kty": "oct", "k": "c2VjcmV0"}, false},
		{"P-384", with(ecJWK, map[string]any{"crv": "P-384"}), false},
		{"X25519", with(edJWK, map[string]any{"crv": "X25519"}), false},
		{"n not base64url", with(rsaJWK, map[string]any{"n": "a+b/"}), false},
		{"e of five bytes", with(rsaJWK, map[string]any{"e": "AQAAAAE"}), false},
		{"e even", with(rsaJWK, map[string]any{"e": "AQAC"}), false},
		{"e missing", with(rsaJWK, map[string]any{"e": ""}), false},
		{"RSA 1024", with(rsaJWK, map[string]any{"n": rsaJWK["n"].(string)[:171]}), false},
		{"x too short", with(ecJWK, map[string]any{"x": "AAAA"}), false},
		{"point off the curve", with(ecJWK, map[string]any{"y": ecJWK["x"]}), false},
		{"Ed25519 x too long", with(edJWK, map[string]any{"x": edJWK["x"].(string) + "AAAA"}), false},
		{"kid not a string", with(rsaJWK, map[string]any{"kid": 7}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, err := json.Marshal(map[string]any{"keys": []any{tc.key, edJWK}})
			if err != nil {
				t.Fatal(err)
			}
			keys, skipped, err := parseJWKS(body)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(keys) == 2; got != tc.ok || skipped+len(keys) != 2 {
				t.Fatalf("%d keys kept, %d skipped; want the key kept: %v", len(keys), skipped, tc.ok)
			}
		})
	}
	for _, tc := range []struct{ name, body, want string }{
		{"not JSON", "nope", "malformed JSON"},
		{"keys not an array", `{"keys":{}}`, "malformed JSON"},
		{"no keys", `{}`, "no usable key among 0"},
		{"none usable", `{"keys":[{"kty":"oct"},{"kty":"RSA"}]}`, "no usable key among 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := parseJWKS([]byte(tc.body)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parseJWKS: %v, want %q", err, tc.want)
			}
		})
	}
	t.Run("too many keys", func(t *testing.T) {
		many := make([]any, maxKeys+1)
		for i := range many {
			many[i] = with(edJWK, map[string]any{"kid": fmt.Sprint(i)})
		}
		body, _ := json.Marshal(map[string]any{"keys": many})
		if _, _, err := parseJWKS(body); err == nil || !strings.Contains(err.Error(), "more than 64") {
			t.Fatalf("parseJWKS of %d keys: %v", len(many), err)
		}
	})
}

// TestRefreshSeesAFetchThatEndedMeanwhile: a verification that read the
// cached set just before another's fetch replaced it, and then finds no
// fetch allowed, still retries with the new set.
func TestRefreshSeesAFetchThatEndedMeanwhile(t *testing.T) {
	k := testKey(t, "ed", 0)
	srv, clk, v := jwksSetup(t, k, nil)
	ctx := context.Background()

	seen := v.jwks.snapshot()
	clk.Advance(5 * time.Second)
	if !v.jwks.refresh(ctx, seen) {
		t.Fatal("a fetch that ended well: refresh = false")
	}
	if !v.jwks.refresh(ctx, seen) {
		t.Fatal("a set newer than the one seen is in force, but refresh = false")
	}
	if v.jwks.refresh(ctx, v.jwks.snapshot()) {
		t.Fatal("no fetch allowed and nothing new, but refresh = true")
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
}
