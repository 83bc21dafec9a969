package node_test

// The edge's security through a whole node (DESIGN.md §7): client tokens
// signed with keys of a JWKS the test serves, their issuer, audience and
// expiry on a live connection; and every limit's answer while a
// well-behaved client on the same node keeps receiving (G6, G8).

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/node"
	"github.com/switchboard/switchboard/protocol"
)

// jwksServer serves a JWK Set the test changes, counting fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	keys    []map[string]any
	fetches atomic.Int64
}

func newJWKSServer(t *testing.T) *jwksServer {
	s := &jwksServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		body, _ := json.Marshal(map[string]any{"keys": s.keys})
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

// serve replaces the set with the public halves of keys, by kid.
func (s *jwksServer) serve(keys map[string]*rsa.PrivateKey) {
	b64 := base64.RawURLEncoding.EncodeToString
	var set []map[string]any
	for kid, k := range keys {
		set = append(set, map[string]any{
			"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
			"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes()),
		})
	}
	s.mu.Lock()
	s.keys = set
	s.mu.Unlock()
}

func rsaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rs256 signs claims with key under kid.
func rs256(t *testing.T, key *rsa.PrivateKey, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// closeOf reads until the server closes ws and returns the code of the
// error frame before the close ("" if none) and the close code.
func closeOf(t *testing.T, ws *websocket.Conn, within time.Duration) (errCode string, closeCode int) {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(within))
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("want a close, got %v", err)
			}
			return errCode, ce.Code
		}
		var f wsFrame
		_ = json.Unmarshal(b, &f)
		if f.Type == "error" {
			errCode = f.Code
		}
	}
}

// hello sends a hello with tok on a new connection to id and returns the
// connection with the server's first frame that is not a heartbeat.
func hello(t *testing.T, c *clustertest.Cluster, id, tok string) (*websocket.Conn, wsFrame) {
	t.Helper()
	ws := dialWS(t, c.ConnectURL(id), nil)
	writeText(t, ws, helloFrame(tok))
	return ws, readFrame(t, ws, true)
}

func TestTokensFromAJWKS(t *testing.T) {
	const minInterval = 200 * time.Millisecond
	jwks := newJWKSServer(t)
	k1, k2 := rsaKey(t), rsaKey(t)
	jwks.serve(map[string]*rsa.PrivateKey{"k1": k1})
	claims := func(user string, exp time.Time, set map[string]any) jwt.MapClaims {
		m := jwt.MapClaims{"sub": user, "exp": exp.Unix(), "iss": "https://issuer.example", "aud": "switchboard"}
		for k, v := range set {
			m[k] = v
		}
		return m
	}
	hour := time.Now().Add(time.Hour)
	// Issuer and audience apply to every token, the token secret's too.
	hs256 := func(user string) string {
		return mint(t, jwt.SigningMethodHS256, []byte(clustertest.TokenSecret), claims(user, hour, nil))
	}
	c := clustertest.Start(t, 2, clustertest.Options{Token: hs256, Configure: func(cfg *node.Config) {
		cfg.Tokens.JWKSURL = jwks.URL
		cfg.Tokens.Issuer, cfg.Tokens.Audience = "https://issuer.example", "switchboard"
		// The contract's 5 s between fetches, shortened so that the
		// rotation below does not wait for it; auth's tests hold the bound.
		cfg.Tokens.JWKSMinInterval = minInterval
	}})
	b := newBystander(t, c, "n1") // HS256 of the token secret, beside the JWKS

	t.Run("accepted", func(t *testing.T) {
		for name, tok := range map[string]string{
			"RS256 of the set": rs256(t, k1, "k1", claims("alice", hour, nil)),
			"aud in an array":  rs256(t, k1, "k1", claims("alice", hour, map[string]any{"aud": []string{"other", "switchboard"}})),
		} {
			if _, w := hello(t, c, "n1", tok); w.Type != "welcome" {
				t.Errorf("%s: got %s, want welcome", name, w.raw)
			}
		}
	})
	t.Run("refused", func(t *testing.T) {
		for name, tok := range map[string]string{
			"wrong iss":          rs256(t, k1, "k1", claims("alice", hour, map[string]any{"iss": "https://evil.example"})),
			"no iss":             rs256(t, k1, "k1", claims("alice", hour, map[string]any{"iss": nil})),
			"wrong aud":          rs256(t, k1, "k1", claims("alice", hour, map[string]any{"aud": "other"})),
			"aud array without":  rs256(t, k1, "k1", claims("alice", hour, map[string]any{"aud": []string{"a", "b"}})),
			"key not in the set": rs256(t, k2, "k1", claims("alice", hour, nil)),
			"expired":            rs256(t, k1, "k1", claims("alice", time.Now().Add(-time.Minute), nil)),
			"HS256 without iss":  mint(t, jwt.SigningMethodHS256, []byte(clustertest.TokenSecret), claims("alice", hour, map[string]any{"iss": nil})),
		} {
			ws := dialWS(t, c.ConnectURL("n1"), nil)
			writeText(t, ws, helloFrame(tok))
			if code, cl := closeOf(t, ws, 10*time.Second); code != "unauthorized" || cl != int(protocol.CloseUnauthorized) {
				t.Errorf("%s: error %q close %d, want unauthorized 4001", name, code, cl)
			}
		}
		b.check(t)
	})
	t.Run("kid rotation", func(t *testing.T) {
		// The issuer starts signing with k2 and drops k1 from its set: the
		// first token naming k2 makes each node fetch the set again (once
		// the interval since its last fetch has passed).
		time.Sleep(minInterval)
		jwks.serve(map[string]*rsa.PrivateKey{"k2": k2})
		for _, id := range []string{"n1", "n2"} {
			before := jwks.fetches.Load()
			if _, w := hello(t, c, id, rs256(t, k2, "k2", claims("bob", hour, nil))); w.Type != "welcome" {
				t.Fatalf("token of the new kid on %s: got %s, want welcome", id, w.raw)
			}
			if jwks.fetches.Load() == before {
				t.Errorf("%s accepted the new kid without fetching the set", id)
			}
		}
		// k1 is no longer in the set the node holds.
		ws := dialWS(t, c.ConnectURL("n1"), nil)
		writeText(t, ws, helloFrame(rs256(t, k1, "k1", claims("bob", hour, nil))))
		if code, cl := closeOf(t, ws, 10*time.Second); code != "unauthorized" || cl != int(protocol.CloseUnauthorized) {
			t.Errorf("token of the dropped kid: error %q close %d, want unauthorized 4001", code, cl)
		}
		b.check(t)
	})
	t.Run("expiry on a live connection", func(t *testing.T) {
		exp := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second)
		lapses, w1 := hello(t, c, "n1", rs256(t, k2, "k2", claims("carol", exp, nil)))
		refreshes, w2 := hello(t, c, "n2", rs256(t, k2, "k2", claims("dave", exp, nil)))
		if w1.Type != "welcome" || w2.Type != "welcome" {
			t.Fatalf("hellos: got %s and %s, want welcomes", w1.raw, w2.raw)
		}

		// A refresh for another user, or one that does not expire later,
		// is refused without closing.
		for _, tok := range []string{
			rs256(t, k2, "k2", claims("mallory", hour, nil)),
			rs256(t, k2, "k2", claims("dave", exp, nil)),
		} {
			writeText(t, refreshes, []byte(`{"type":"refresh","token":"`+tok+`"}`))
			if f := readFrame(t, refreshes, true); f.Type != "error" || f.Code != "unauthorized" {
				t.Fatalf("bad refresh: got %s, want error unauthorized", f.raw)
			}
		}
		later := time.Now().Add(time.Hour)
		writeText(t, refreshes, []byte(`{"type":"refresh","token":"`+rs256(t, k2, "k2", claims("dave", later, nil))+`"}`))
		var refreshed struct {
			Type string `json:"type"`
			Exp  int64  `json:"exp"`
		}
		if f := readFrame(t, refreshes, true); json.Unmarshal(f.raw, &refreshed) != nil || refreshed.Type != "refreshed" || refreshed.Exp != later.Unix() {
			t.Fatalf("refresh: got %s, want refreshed with exp %d", f.raw, later.Unix())
		}

		// The refreshed connection is read throughout, so that it answers
		// the node's pings while the other one lapses.
		frames := make(chan wsFrame, 16)
		go func() {
			defer close(frames)
			for {
				_ = refreshes.SetReadDeadline(time.Now().Add(20 * time.Second))
				_, raw, err := refreshes.ReadMessage()
				if err != nil {
					return
				}
				var f wsFrame
				if json.Unmarshal(raw, &f) == nil && f.Type != "heartbeat" {
					f.raw = raw
					frames <- f
				}
			}
		}()

		code, cl := closeOf(t, lapses, 10*time.Second)
		closed := time.Now()
		if code != "token_expired" || cl != int(protocol.CloseUnauthorized) {
			t.Fatalf("at exp: error %q close %d, want token_expired 4001", code, cl)
		}
		// Within a second after exp by the contract; the margin is for a
		// loaded test machine.
		if closed.Before(exp) || closed.After(exp.Add(3*time.Second)) {
			t.Errorf("closed at %v, want within a second after exp %v", closed.Format(time.StampMilli), exp.Format(time.StampMilli))
		}
		// The refreshed connection outlives the old exp and still receives.
		time.Sleep(time.Until(exp.Add(1500 * time.Millisecond)))
		if st, _, body := c.Publish("n1", "dave", map[string]string{"after": "exp"}, "dave-1"); st != http.StatusOK {
			t.Fatalf("publish: %d %s", st, body)
		}
		select {
		case f, ok := <-frames:
			if !ok || f.Type != "message" || f.Seq != 1 {
				t.Fatalf("refreshed connection: got %s (open %v), want message 1", f.raw, ok)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("refreshed connection: no message")
		}
		refreshes.Close()
		for range frames {
		}
		b.check(t)
	})
}

// dialFrom dials url from a local address of 127.0.0.0/8, with hdr.
func dialFrom(local byte, url string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDial: func(network, addr string) (net.Conn, error) {
		return (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, local)}, Timeout: 5 * time.Second}).Dial(network, addr)
	}}
	return d.Dial(url, hdr)
}

// wantRefused checks an upgrade refused with status (and Retry-After when
// retry) and a JSON error body.
func wantRefused(t *testing.T, what string, resp *http.Response, err error, status int, retry bool) {
	t.Helper()
	if resp == nil {
		t.Fatalf("%s: %v, want an HTTP %d", what, err, status)
	}
	defer resp.Body.Close()
	var e protocol.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode != status || e.Error == "" {
		t.Errorf("%s: %d %q, want %d with a JSON error", what, resp.StatusCode, e.Error, status)
	}
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); retry != (ra > 0) {
		t.Errorf("%s: Retry-After %q", what, resp.Header.Get("Retry-After"))
	}
}

// TestLimitsAnswerThroughANode sets every limit on n1 (from its flags'
// config) and shows each one's answer while a bystander on n1 keeps
// receiving every message.
func TestLimitsAnswerThroughANode(t *testing.T) {
	const (
		maxConns    = 16
		perUser     = 2
		connectRate = 10
		frameRate   = 50
	)
	c := clustertest.Start(t, 2, clustertest.Options{Configure: func(cfg *node.Config) {
		if cfg.NodeID != "n1" {
			return
		}
		cfg.AllowedOrigins = []string{"https://app.example.com"}
		cfg.Gateway.MaxConnections = maxConns
		cfg.Gateway.MaxConnectionsPerUser = perUser
		cfg.Gateway.ConnectRate = connectRate
		cfg.Gateway.FrameRate = frameRate
		cfg.API.MaxInflight = 1
	}})
	b := newBystander(t, c, "n1")
	url := c.ConnectURL("n1")

	t.Run("origin 403", func(t *testing.T) {
		_, resp, err := dialFrom(1, url, http.Header{"Origin": {"https://evil.example"}})
		wantRefused(t, "foreign origin", resp, err, http.StatusForbidden, false)
		ws, _, err := dialFrom(1, url, http.Header{"Origin": {"https://app.example.com"}})
		if err != nil {
			t.Fatalf("allowed origin: %v", err)
		}
		ws.Close()
		b.check(t)
	})
	t.Run("connections per user 4029", func(t *testing.T) {
		for range perUser {
			if _, w := hello(t, c, "n1", c.Token("erin")); w.Type != "welcome" {
				t.Fatalf("got %s, want welcome", w.raw)
			}
		}
		ws := dialWS(t, url, nil)
		writeText(t, ws, helloFrame(c.Token("erin")))
		if code, cl := closeOf(t, ws, 10*time.Second); code != "too_many_connections" || cl != int(protocol.CloseRateLimited) {
			t.Errorf("error %q close %d, want too_many_connections 4029", code, cl)
		}
		b.check(t)
	})
	t.Run("frame rate 4029", func(t *testing.T) {
		ws, _ := connect(t, c, "n1", "frank")
		for i := range 4 * frameRate {
			_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"type":"ping","id":%d}`, i))) != nil {
				break
			}
		}
		if code, cl := closeOf(t, ws, 10*time.Second); code != "rate_limited" || cl != int(protocol.CloseRateLimited) {
			t.Errorf("error %q close %d, want rate_limited 4029", code, cl)
		}
		b.check(t)
	})
	t.Run("connect rate 429", func(t *testing.T) {
		refused := false
		for i := 0; i < 4*connectRate && !refused; i++ {
			ws, resp, err := dialFrom(2, url, nil)
			if err == nil {
				ws.Close()
				continue
			}
			wantRefused(t, "past the connect rate", resp, err, http.StatusTooManyRequests, true)
			refused = true
		}
		if !refused {
			t.Fatalf("%d connections from one address within a second at --connect-rate %d", 4*connectRate, connectRate)
		}
		ws, _, err := dialFrom(3, url, nil) // another address is not affected
		if err != nil {
			t.Fatalf("from another address: %v", err)
		}
		ws.Close()
		b.check(t)
	})
	t.Run("connections 503", func(t *testing.T) {
		var open []*websocket.Conn
		defer func() {
			for _, ws := range open {
				ws.Close()
			}
		}()
		for i := 0; ; i++ {
			ws, resp, err := dialFrom(byte(10+i), url, nil) // each from its own address: the connect rate stays out of it
			if err == nil {
				open = append(open, ws)
				if len(open) > maxConns {
					t.Fatalf("%d connections open at --max-connections %d", len(open)+1, maxConns)
				}
				continue
			}
			wantRefused(t, "past --max-connections", resp, err, http.StatusServiceUnavailable, true)
			break
		}
		b.check(t)
	})
	t.Run("inflight publishes 503", func(t *testing.T) {
		// Publishers race one another at a bound of one message in
		// flight: some are turned away with 503 and Retry-After, and
		// every one acknowledged reaches the subscriber, once, in order.
		sub, _ := connect(t, c, "n2", "grace")
		var mu sync.Mutex
		acked := map[string]uint64{}
		var refusedN atomic.Int64
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() {
				for i := range 40 {
					id := fmt.Sprintf("g-%d-%d", w, i)
					body := fmt.Sprintf(`{"user":"grace","id":%q,"data":1}`, id)
					st, hdr, raw := httpDo(t, http.MethodPost, c.URL("n1")+"/v1/publish", clustertest.APIKey, strings.NewReader(body))
					switch st {
					case http.StatusOK:
						var pr protocol.PublishResult
						_ = json.Unmarshal(raw, &pr)
						mu.Lock()
						acked[id] = pr.Seq
						mu.Unlock()
					case http.StatusServiceUnavailable:
						if hdr.Get("Retry-After") == "" {
							t.Errorf("503 without Retry-After: %s", raw)
						}
						refusedN.Add(1)
					default:
						t.Errorf("publish: %d %s", st, raw)
					}
				}
			})
		}
		wg.Wait()
		if refusedN.Load() == 0 {
			t.Fatal("640 concurrent publishes at --max-inflight-publishes 1: none refused")
		}
		seen := map[string]bool{}
		var last uint64
		for len(seen) < len(acked) {
			f := readFrame(t, sub, true)
			id := strings.Trim(string(f.ID), `"`)
			if f.Type != "message" || seen[id] || f.Seq <= last || acked[id] != f.Seq {
				t.Fatalf("after %d of %d: got %s (last seq %d)", len(seen), len(acked), f.raw, last)
			}
			seen[id], last = true, f.Seq
		}
		t.Logf("%d acknowledged and delivered, %d refused", len(acked), refusedN.Load())
		b.check(t)
	})
	t.Run("refusals are counted", func(t *testing.T) {
		st, body := c.Get("n1", "/metrics", "")
		if st != http.StatusOK {
			t.Fatalf("/metrics: %d", st)
		}
		for _, l := range []string{"origin", "connect_rate", "connections", "connections_per_user", "frame_rate", "inflight_publishes"} {
			line := ""
			for _, s := range strings.Split(string(body), "\n") {
				if strings.HasPrefix(s, `switchboard_limit_refusals_total{limit="`+l+`"}`) {
					line = s
				}
			}
			f := strings.Fields(line)
			if len(f) != 2 {
				t.Errorf("limit %s: no metric line", l)
				continue
			}
			if n, err := strconv.ParseFloat(f[1], 64); err != nil || n < 1 {
				t.Errorf("limit %s: metric line %q, want a count of at least 1", l, line)
			}
		}
	})
}
