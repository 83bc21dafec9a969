package node_test

// Contract tests: exactly what DESIGN.md §3 (client protocol), §4 (publish
// API) and §5 (admin API) promise, above all to a peer that sends bad
// input, checked with raw gorilla/websocket and net/http against an
// in-process cluster. Every bad input must get its exact answer while a
// well-behaved client on the same node keeps receiving (G6).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/node"
	"github.com/switchboard/switchboard/protocol"
)

// Timing of the protocol cluster: n1 has a short hello timeout and
// heartbeat, n3 a tiny send queue; n2 keeps the harness defaults.
const (
	shortHello     = 300 * time.Millisecond
	shortHeartbeat = 200 * time.Millisecond
	tinySendQueue  = 4
	frameLimit     = 64 << 10 // §3 default
	bodyLimit      = 1 << 20  // §4 default
)

// wsFrame is any server frame, decoded loosely.
type wsFrame struct {
	Type    string          `json:"type"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Seq     uint64          `json:"seq"`
	ID      json.RawMessage `json:"id"`
	Session string          `json:"session"`
	Node    string          `json:"node"`
	Data    json.RawMessage `json:"data"`
	raw     []byte
}

func decodeFrame(t testing.TB, b []byte) wsFrame {
	t.Helper()
	var f wsFrame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("server sent a frame that is not JSON: %q: %v", b, err)
	}
	if f.Type == "" {
		t.Fatalf("server frame without type: %s", b)
	}
	f.raw = b
	return f
}

func dialWS(t testing.TB, url string, hdr http.Header) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial(url, hdr)
	if err != nil {
		t.Fatalf("dial %s: %v (response %v)", url, err, resp)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

func writeText(t testing.TB, ws *websocket.Conn, b []byte) {
	t.Helper()
	_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func helloFrame(tok string) []byte {
	h := map[string]any{"type": "hello", "resume": map[string]any{"seq": 0}}
	if tok != "" {
		h["token"] = tok
	}
	b, _ := json.Marshal(h)
	return b
}

// readFrame reads the next frame, skipping heartbeats when skipHB is set.
func readFrame(t testing.TB, ws *websocket.Conn, skipHB bool) wsFrame {
	t.Helper()
	for {
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		f := decodeFrame(t, b)
		if skipHB && f.Type == "heartbeat" {
			continue
		}
		return f
	}
}

// connect opens a client of user on node id with hello in the first frame
// and returns it with its welcome.
func connect(t testing.TB, c *clustertest.Cluster, id, user string) (*websocket.Conn, wsFrame) {
	t.Helper()
	ws := dialWS(t, c.ConnectURL(id), nil)
	writeText(t, ws, helloFrame(c.Token(user)))
	w := readFrame(t, ws, true)
	if w.Type != "welcome" {
		t.Fatalf("%s on %s: want welcome, got %s", user, id, w.raw)
	}
	return ws, w
}

// expectClose reads until the server closes and checks §3: an error frame
// (with code and message) is the last frame before the close, and the
// close carries code want; a close that fails the connection at the
// WebSocket layer (1002, 1003, 1007, 1009) comes alone instead, its slug
// as the reason. It returns the frames seen before the error.
func expectClose(t testing.TB, ws *websocket.Conn, want int) []wsFrame {
	t.Helper()
	var before []wsFrame
	var errFrame *wsFrame
	deadline := time.Now().Add(10 * time.Second)
	for {
		_ = ws.SetReadDeadline(deadline)
		_, b, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				last := "none"
				if len(before) > 0 {
					last = string(before[len(before)-1].raw[:min(80, len(before[len(before)-1].raw))])
				}
				t.Fatalf("want close %d, got %v after %d frames (last %s; error frame %v)", want, err, len(before), last, errFrame)
			}
			if ce.Code != want {
				t.Fatalf("want close %d, got %d %q (error frame %v)", want, ce.Code, ce.Text, errFrame)
			}
			if code := protocol.CloseCode(want); code.Failed() {
				if errFrame != nil || ce.Text != code.Slug() {
					t.Fatalf("close %d %q after error frame %v, want it alone with reason %q", want, ce.Text, errFrame, code.Slug())
				}
				return before
			}
			if errFrame == nil {
				t.Fatalf("close %d came without an error frame before it", want)
			}
			return before
		}
		f := decodeFrame(t, b)
		switch {
		case errFrame != nil:
			t.Fatalf("frame after the error frame: %s", b)
		case f.Type == "error":
			if f.Code == "" || f.Message == "" {
				t.Fatalf("error frame without code or message: %s", b)
			}
			errFrame = &f
		default:
			before = append(before, f)
		}
	}
}

// bystander is a well-behaved client whose deliveries are checked after
// every abuse of its node.
type bystander struct {
	c      *clustertest.Cluster
	node   string
	user   string
	frames chan wsFrame
	done   chan struct{}
	err    error // set before done closes
	sent   int
}

func newBystander(t *testing.T, c *clustertest.Cluster, id string) *bystander {
	t.Helper()
	b := &bystander{c: c, node: id, user: "bystander-" + id, frames: make(chan wsFrame, 256), done: make(chan struct{})}
	ws, _ := connect(t, c, id, b.user)
	go func() {
		defer close(b.done)
		for {
			// Reading answers the server's pings, so the idle client stays.
			_ = ws.SetReadDeadline(time.Now().Add(time.Minute))
			_, raw, err := ws.ReadMessage()
			if err != nil {
				b.err = err
				return
			}
			var f wsFrame
			_ = json.Unmarshal(raw, &f)
			if f.Type == "heartbeat" {
				continue
			}
			f.raw = raw
			select {
			case b.frames <- f:
			default:
				b.err = fmt.Errorf("bystander buffer full at %s", raw)
				return
			}
		}
	}()
	t.Cleanup(func() {
		ws.Close()
		<-b.done
	})
	return b
}

// check publishes one message to the bystander through another node and
// waits for it: the node under abuse still serves everyone else.
func (b *bystander) check(t testing.TB) {
	t.Helper()
	b.sent++
	via := "n2"
	if b.node == "n2" {
		via = "n1"
	}
	id := fmt.Sprintf("%s-%d", b.user, b.sent)
	st, pr, body := b.c.Publish(via, b.user, map[string]int{"n": b.sent}, id)
	if st != http.StatusOK || pr.Seq != uint64(b.sent) {
		t.Fatalf("bystander on %s: publish %d: %d %s", b.node, b.sent, st, body)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f := <-b.frames:
			if f.Type != "message" {
				t.Fatalf("bystander on %s got %s", b.node, f.raw)
			}
			if f.Seq != uint64(b.sent) || string(f.ID) != `"`+id+`"` {
				t.Fatalf("bystander on %s: want seq %d id %s, got %s", b.node, b.sent, id, f.raw)
			}
			return
		case <-b.done:
			t.Fatalf("bystander on %s lost its connection: %v", b.node, b.err)
		case <-timeout:
			t.Fatalf("bystander on %s did not receive message %d", b.node, b.sent)
		}
	}
}

// mint signs claims with method and key, for tokens the node must refuse.
func mint(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func protocolCluster(t *testing.T) *clustertest.Cluster {
	return clustertest.Start(t, 3, clustertest.Options{
		// n1 and n3 share region r1, n2 is alone in r2: welcome endpoints
		// must put the same-region node first.
		Zones:  []string{"r1/a", "r2/a", "r1/b"},
		Logger: clustertest.Verbose(),
		Configure: func(cfg *node.Config) {
			switch cfg.NodeID {
			case "n1":
				cfg.Gateway.HelloTimeout, cfg.Gateway.Heartbeat = shortHello, shortHeartbeat
			case "n3":
				cfg.Gateway.SendQueue = tinySendQueue
			}
		},
	})
}

func TestClientProtocolContract(t *testing.T) {
	c := protocolCluster(t)
	by1 := newBystander(t, c, "n1")
	by3 := newBystander(t, c, "n3")
	// Each case runs on a node with its own client; afterwards both
	// bystanders must still receive.
	run := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			f(t)
			by1.check(t)
			by3.check(t)
		})
	}
	users := 0
	nextUser := func() string {
		users++
		return fmt.Sprintf("u%d", users)
	}

	run("hello timeout closes 4003", func(t *testing.T) {
		ws := dialWS(t, c.ConnectURL("n1"), nil)
		expectClose(t, ws, 4003)
	})

	tooLarge := func() []byte {
		b := []byte(`{"type":"ping","id":7,"pad":"`)
		b = append(b, bytes.Repeat([]byte("x"), frameLimit)...)
		return append(b, `"}`...)
	}
	badFrames := []struct {
		name  string
		msgT  int
		frame []byte
		close int
	}{
		{"not JSON", websocket.TextMessage, []byte(`hello there`), 4002},
		{"JSON but not an object", websocket.TextMessage, []byte(`[1,2]`), 4002},
		{"missing type", websocket.TextMessage, []byte(`{"token":"x","id":1}`), 4002},
		{"unknown type", websocket.TextMessage, []byte(`{"type":"bogus"}`), 4002},
		{"binary frame", websocket.BinaryMessage, []byte(`{"type":"ping","id":1}`), 1003},
		{"invalid UTF-8", websocket.TextMessage, []byte("{\"type\":\"ping\",\"id\":\"\xff\xfe\"}"), 1007},
		{"frame over 64 KiB", websocket.TextMessage, tooLarge(), 1009},
	}
	for _, bf := range badFrames {
		for _, after := range []bool{false, true} {
			where := "as first frame"
			if after {
				where = "after welcome"
			}
			for _, id := range []string{"n1", "n3"} {
				run(fmt.Sprintf("%s %s on %s closes %d", bf.name, where, id, bf.close), func(t *testing.T) {
					var ws *websocket.Conn
					if after {
						ws, _ = connect(t, c, id, nextUser())
					} else {
						ws = dialWS(t, c.ConnectURL(id), nil)
					}
					_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
					if err := ws.WriteMessage(bf.msgT, bf.frame); err != nil {
						t.Fatal(err)
					}
					expectClose(t, ws, bf.close)
				})
			}
		}
	}

	run("first frame not hello closes 4002", func(t *testing.T) {
		ws := dialWS(t, c.ConnectURL("n1"), nil)
		writeText(t, ws, []byte(`{"type":"ping","id":1}`))
		expectClose(t, ws, 4002)
	})

	secret := []byte(clustertest.TokenSecret)
	future := time.Now().Add(time.Hour).Unix()
	badTokens := []struct{ name, token string }{
		{"no token", ""},
		{"garbage", "not-a-jwt"},
		{"bad signature", mint(t, jwt.SigningMethodHS256, []byte("some-other-secret"), jwt.MapClaims{"sub": "mallory", "exp": future})},
		{"expired", mint(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "mallory", "exp": time.Now().Add(-time.Minute).Unix()})},
		{"without sub", mint(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": future})},
		{"empty sub", mint(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "", "exp": future})},
		{"without exp", mint(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "mallory"})},
		{"not yet valid", mint(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "mallory", "exp": future, "nbf": future - 60})},
		{"alg none", mint(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "mallory", "exp": future})},
		{"HS512 with the right secret", mint(t, jwt.SigningMethodHS512, secret, jwt.MapClaims{"sub": "mallory", "exp": future})},
	}
	for _, bt := range badTokens {
		run("hello with "+bt.name+" token closes 4001", func(t *testing.T) {
			ws := dialWS(t, c.ConnectURL("n1"), nil)
			writeText(t, ws, helloFrame(bt.token))
			expectClose(t, ws, 4001)
		})
		if bt.token != "" {
			run("bearer header with "+bt.name+" token closes 4001", func(t *testing.T) {
				ws := dialWS(t, c.ConnectURL("n3"), http.Header{"Authorization": {"Bearer " + bt.token}})
				writeText(t, ws, []byte(`{"type":"hello","resume":{"seq":0}}`))
				expectClose(t, ws, 4001)
			})
		}
	}

	run("token in Authorization header is accepted", func(t *testing.T) {
		user := nextUser()
		ws := dialWS(t, c.ConnectURL("n3"), http.Header{"Authorization": {"Bearer " + c.Token(user)}})
		writeText(t, ws, []byte(`{"type":"hello","resume":{"seq":0}}`))
		w := readFrame(t, ws, true)
		if w.Type != "welcome" || w.Node != "n3" {
			t.Fatalf("want welcome from n3, got %s", w.raw)
		}
		if st, _, body := c.Publish("n1", user, "hi", "h1"); st != http.StatusOK {
			t.Fatalf("publish: %d %s", st, body)
		}
		if m := readFrame(t, ws, true); m.Type != "message" || m.Seq != 1 || string(m.Data) != `"hi"` {
			t.Fatalf("want message 1 \"hi\", got %s", m.raw)
		}
	})

	run("frame of exactly 64 KiB is accepted", func(t *testing.T) {
		ws, _ := connect(t, c, "n1", nextUser())
		f := []byte(`{"type":"ping","id":7,"pad":"`)
		f = append(f, bytes.Repeat([]byte("x"), frameLimit-len(f)-2)...)
		f = append(f, `"}`...)
		if len(f) != frameLimit {
			t.Fatalf("built %d bytes", len(f))
		}
		writeText(t, ws, f)
		if p := readFrame(t, ws, true); p.Type != "pong" || string(p.ID) != "7" {
			t.Fatalf("want pong 7, got %s", p.raw)
		}
	})

	run("ping is answered with pong and the same id", func(t *testing.T) {
		ws, _ := connect(t, c, "n2", nextUser())
		for _, tc := range []struct {
			before     []string // frames sent first, answered by nothing
			ping, pong string
		}{
			{nil, `{"type":"ping","id":7}`, `{"type":"pong","id":7}`},
			{nil, `{"type":"ping","id":"abc"}`, `{"type":"pong","id":"abc"}`},
			{[]string{`{"type":"ack","seq":0}`}, `{"type":"ping","id":8}`, `{"type":"pong","id":8}`},
		} {
			for _, f := range tc.before {
				writeText(t, ws, []byte(f))
			}
			writeText(t, ws, []byte(tc.ping))
			got := readFrame(t, ws, true)
			var a, b any
			_ = json.Unmarshal(got.raw, &a)
			_ = json.Unmarshal([]byte(tc.pong), &b)
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("ping %s: want %s, got %s", tc.ping, tc.pong, got.raw)
			}
		}
	})

	run("resume of an unknown session is resumed:false", func(t *testing.T) {
		ws := dialWS(t, c.ConnectURL("n2"), nil)
		b, _ := json.Marshal(map[string]any{"type": "hello", "token": c.Token(nextUser()), "resume": map[string]any{"session": "no-such-session", "seq": 5}})
		writeText(t, ws, b)
		w := readFrame(t, ws, true)
		var m map[string]any
		_ = json.Unmarshal(w.raw, &m)
		if w.Type != "welcome" || m["resumed"] != false {
			t.Fatalf("want welcome with resumed:false, got %s", w.raw)
		}
	})

	run("idle connection gets heartbeats with the highest seq", func(t *testing.T) {
		user := nextUser()
		ws, w := connect(t, c, "n1", user)
		var wm map[string]any
		_ = json.Unmarshal(w.raw, &wm)
		if wm["heartbeat_ms"] != float64(shortHeartbeat.Milliseconds()) {
			t.Fatalf("welcome heartbeat_ms: want %d, got %s", shortHeartbeat.Milliseconds(), w.raw)
		}
		for i := 1; i <= 2; i++ {
			if st, _, body := c.Publish("n2", user, i, ""); st != http.StatusOK {
				t.Fatalf("publish: %d %s", st, body)
			}
			if m := readFrame(t, ws, true); m.Type != "message" || m.Seq != uint64(i) {
				t.Fatalf("want message %d, got %s", i, m.raw)
			}
		}
		hb := readFrame(t, ws, false)
		var m map[string]any
		_ = json.Unmarshal(hb.raw, &m)
		if hb.Type != "heartbeat" || m["seq"] != float64(2) {
			t.Fatalf(`want {"type":"heartbeat","seq":2}, got %s`, hb.raw)
		}
	})

	run("welcome carries every field", func(t *testing.T) {
		want := map[string]struct {
			region, zone string
			hbMS         int64
			endpoints    []string
		}{
			"n1": {"r1", "a", shortHeartbeat.Milliseconds(), []string{c.ConnectURL("n3"), c.ConnectURL("n2")}},
			"n2": {"r2", "a", time.Second.Milliseconds(), []string{c.ConnectURL("n1"), c.ConnectURL("n3")}},
			"n3": {"r1", "b", time.Second.Milliseconds(), []string{c.ConnectURL("n1"), c.ConnectURL("n2")}},
		}
		for _, id := range c.IDs() {
			_, w := connect(t, c, id, nextUser())
			var m map[string]any
			if err := json.Unmarshal(w.raw, &m); err != nil {
				t.Fatal(err)
			}
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			wantKeys := []string{"endpoints", "heartbeat_ms", "node", "region", "resumed", "seq", "session", "type", "zone"}
			if !slices.Equal(keys, wantKeys) {
				t.Errorf("%s welcome keys %v, want %v: %s", id, keys, wantKeys, w.raw)
			}
			s, _ := m["session"].(string)
			_, isBool := m["resumed"].(bool)
			seq, isNum := m["seq"].(float64)
			var eps []string
			list, _ := m["endpoints"].([]any)
			for _, e := range list {
				s, _ := e.(string)
				eps = append(eps, s)
			}
			exp := want[id]
			switch {
			case s == "", m["node"] != id, m["region"] != exp.region, m["zone"] != exp.zone, !isBool, !isNum || seq != 0,
				m["heartbeat_ms"] != float64(exp.hbMS):
				t.Errorf("%s welcome: %s", id, w.raw)
			case !slices.Equal(eps, exp.endpoints):
				t.Errorf("%s welcome endpoints %v, want %v (other nodes, same region first)", id, eps, exp.endpoints)
			}
		}
	})

	run("slow consumer is closed 4008", func(t *testing.T) {
		user := nextUser()
		// A client that reads nothing while more than the send queue and
		// both socket buffers hold is published to it. Its receive buffer
		// is fixed (not autotuned) but above the loopback MSS, so the
		// close still travels promptly once it reads again.
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				_ = conn.(*net.TCPConn).SetReadBuffer(256 << 10)
			}
			return conn, err
		}}
		ws, _, err := d.Dial(c.ConnectURL("n3"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		writeText(t, ws, helloFrame(c.Token(user)))
		if w := readFrame(t, ws, true); w.Type != "welcome" {
			t.Fatalf("want welcome, got %s", w.raw)
		}
		pad := strings.Repeat("s", 48<<10)
		seq := 0
		for batch := 0; batch < 10; batch++ {
			var msgs []map[string]any
			for i := 0; i < 20; i++ {
				msgs = append(msgs, map[string]any{"user": user, "data": pad})
			}
			st, body := postJSON(t, c.URL("n3")+"/v1/publish/batch", clustertest.APIKey, map[string]any{"messages": msgs})
			if st != http.StatusOK {
				t.Fatalf("batch: %d %s", st, body)
			}
			seq += len(msgs)
		}
		before := expectClose(t, ws, 4008)
		next := uint64(1)
		for _, f := range before {
			if f.Type != "message" {
				continue
			}
			if f.Seq != next {
				t.Fatalf("before the close: want seq %d, got %d", next, f.Seq)
			}
			next++
		}
		if next > uint64(seq) {
			t.Fatalf("all %d messages were delivered: no overflow happened", seq)
		}
	})
}

// httpDo sends a request and returns status, headers and body.
func httpDo(t testing.TB, method, url, key string, body io.Reader) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	client := http.Client{Timeout: 15 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func postJSON(t testing.TB, url, key string, v any) (int, []byte) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	st, _, out := httpDo(t, http.MethodPost, url, key, bytes.NewReader(b))
	return st, out
}

// wantErrorJSON checks an error answer: the status and a JSON body
// {"error":"<text>"}.
func wantErrorJSON(t testing.TB, what string, st int, body []byte, want int) {
	t.Helper()
	if st != want {
		t.Errorf("%s: status %d, want %d: %s", what, st, want, body)
		return
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Errorf("%s: error body is not JSON: %q", what, body)
		return
	}
	if s, ok := m["error"].(string); !ok || s == "" {
		t.Errorf(`%s: error body has no "error" text: %s`, what, body)
	}
}

// wantKeys checks that a JSON object has exactly the given keys.
func wantKeys(t testing.TB, what string, m map[string]any, keys ...string) {
	t.Helper()
	var got []string
	for k := range m {
		got = append(got, k)
	}
	sort.Strings(got)
	sort.Strings(keys)
	if !slices.Equal(got, keys) {
		t.Errorf("%s: keys %v, want %v", what, got, keys)
	}
}

func TestPublishAPIContract(t *testing.T) {
	c := clustertest.Start(t, 3)
	url := c.URL("n2") + "/v1/publish"
	batchURL := c.URL("n2") + "/v1/publish/batch"
	raw := func(s string) io.Reader { return strings.NewReader(s) }

	t.Run("errors", func(t *testing.T) {
		bigData := `"` + strings.Repeat("d", frameLimit+1) + `"`
		bigBody := `{"user":"u","data":"` + strings.Repeat("b", bodyLimit) + `"}`
		for _, tc := range []struct {
			name, method, url, key, body string
			want                         int
		}{
			{"no key", "POST", url, "", `{"user":"u","data":1}`, 401},
			{"wrong key", "POST", url, "nope", `{"user":"u","data":1}`, 401},
			{"admin key is not the API key", "POST", url, clustertest.AdminKey, `{"user":"u","data":1}`, 401},
			{"batch without key", "POST", batchURL, "", `{"messages":[]}`, 401},
			{"not JSON", "POST", url, clustertest.APIKey, `{"user":`, 400},
			{"JSON array", "POST", url, clustertest.APIKey, `[{"user":"u","data":1}]`, 400},
			{"empty body", "POST", url, clustertest.APIKey, ``, 400},
			{"missing user", "POST", url, clustertest.APIKey, `{"data":1}`, 400},
			{"empty user", "POST", url, clustertest.APIKey, `{"user":"","data":1}`, 400},
			{"missing data", "POST", url, clustertest.APIKey, `{"user":"u"}`, 400},
			{"body over 1 MiB", "POST", url, clustertest.APIKey, bigBody, 413},
			{"data over the frame limit", "POST", url, clustertest.APIKey, `{"user":"u","data":` + bigData + `}`, 413},
			{"GET publish", "GET", url, clustertest.APIKey, ``, 405},
			{"PUT publish", "PUT", url, clustertest.APIKey, `{"user":"u","data":1}`, 405},
			{"GET batch", "GET", batchURL, clustertest.APIKey, ``, 405},
			{"batch not JSON", "POST", batchURL, clustertest.APIKey, `{"messages":[`, 400},
			{"batch without messages", "POST", batchURL, clustertest.APIKey, `{}`, 400},
			{"batch body over 1 MiB", "POST", batchURL, clustertest.APIKey, `{"messages":[` + bigBody + `]}`, 413},
		} {
			t.Run(tc.name, func(t *testing.T) {
				st, _, body := httpDo(t, tc.method, tc.url, tc.key, raw(tc.body))
				wantErrorJSON(t, tc.name, st, body, tc.want)
			})
		}
	})

	t.Run("answer shape", func(t *testing.T) {
		for i, tc := range []struct{ body, id string }{
			{`{"user":"shape","data":{"a":[1,2]},"id":"given-1"}`, "given-1"},
			{`{"user":"shape","data":"no id"}`, ""},
			{`{"user":"shape","data":null}`, ""},
		} {
			st, _, body := httpDo(t, "POST", url, clustertest.APIKey, raw(tc.body))
			if st != http.StatusOK {
				t.Fatalf("%s: %d %s", tc.body, st, body)
			}
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatal(err)
			}
			wantKeys(t, tc.body, m, "user", "seq", "id", "node")
			id, _ := m["id"].(string)
			switch {
			case m["user"] != "shape", m["seq"] != float64(i+1), !slices.Contains(c.IDs(), fmt.Sprint(m["node"])):
				t.Errorf("%s: answer %s", tc.body, body)
			case tc.id != "" && id != tc.id:
				t.Errorf("%s: id %q, want %q", tc.body, id, tc.id)
			case tc.id == "" && (id == "" || id == "given-1"):
				t.Errorf("%s: want a generated id, got %q", tc.body, id)
			}
		}
		// The answer's node is the owner the registry names.
		st, pr, body := c.Publish("n3", "shape", 4, "")
		if st != http.StatusOK {
			t.Fatalf("publish: %d %s", st, body)
		}
		c.Eventually(10*time.Second, "n3's registry naming "+pr.Node+" as owner", func() bool {
			si, sst := c.Session("n3", "shape")
			return sst == http.StatusOK && si.Owner == pr.Node
		})
		// Generated ids differ; a retried id gets its first seq (G3).
		_, a, _ := c.Publish("n1", "shape", 5, "")
		_, b, _ := c.Publish("n1", "shape", 6, "")
		if a.ID == b.ID {
			t.Errorf("two publishes without id got the same id %q", a.ID)
		}
		if st, again, body := c.Publish("n1", "shape", "retry", "given-1"); st != http.StatusOK || again.Seq != 1 {
			t.Errorf("retry of id given-1: %d %s, want seq 1", st, body)
		}
	})

	t.Run("batch shape and order", func(t *testing.T) {
		body := `{"messages":[
			{"user":"ba","data":1,"id":"x1"},
			{"data":2},
			{"user":"bb","data":3},
			{"user":"ba","data":4},
			{"user":"ba","data":"` + strings.Repeat("d", frameLimit+1) + `"},
			{"user":"ba","data":5,"id":"x1"}
		]}`
		st, _, out := httpDo(t, "POST", batchURL, clustertest.APIKey, raw(body))
		if st != http.StatusOK {
			t.Fatalf("batch: %d %s", st, out)
		}
		var res map[string][]map[string]any
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("batch answer %s: %v", out, err)
		}
		rs := res["results"]
		if len(rs) != 6 {
			t.Fatalf("want 6 results, got %s", out)
		}
		ok := func(i int, user string, seq int) {
			wantKeys(t, fmt.Sprintf("result %d", i), rs[i], "user", "seq", "id", "node")
			if rs[i]["user"] != user || rs[i]["seq"] != float64(seq) || rs[i]["id"] == "" {
				t.Errorf("result %d: want user %s seq %d, got %v", i, user, seq, rs[i])
			}
		}
		failed := func(i int) {
			wantKeys(t, fmt.Sprintf("result %d", i), rs[i], "error")
		}
		ok(0, "ba", 1)
		failed(1)
		ok(2, "bb", 1)
		ok(3, "ba", 2)
		failed(4)
		ok(5, "ba", 1) // same id as result 0: stored once
		if rs[0]["id"] != "x1" || rs[5]["id"] != "x1" {
			t.Errorf("ids: %v %v", rs[0]["id"], rs[5]["id"])
		}
		// The stream holds exactly what was answered, in order.
		ws, w := connect(t, c, "n1", "ba")
		if w.Seq != 2 {
			t.Fatalf("welcome seq %d, want 2: %s", w.Seq, w.raw)
		}
		for i, data := range []string{"1", "4"} {
			if m := readFrame(t, ws, true); m.Type != "message" || m.Seq != uint64(i+1) || string(m.Data) != data {
				t.Fatalf("replay %d: %s", i+1, m.raw)
			}
		}
	})

	t.Run("batch with undecodable messages", func(t *testing.T) {
		// Messages that are not publish bodies at all get their own
		// error; the others are still published, in order.
		body := `{"messages":[{"user":"bc","data":1},5,{"user":7,"data":1},{"user":"bc","data":2,"id":[1]},{"user":"bc","data":3}]}`
		st, _, out := httpDo(t, "POST", batchURL, clustertest.APIKey, raw(body))
		if st != http.StatusOK {
			t.Fatalf("batch: %d %s", st, out)
		}
		var res struct {
			Results []map[string]any `json:"results"`
		}
		if err := json.Unmarshal(out, &res); err != nil || len(res.Results) != 5 {
			t.Fatalf("batch answer %s: %v", out, err)
		}
		for i, want := range []float64{1, 0, 0, 0, 2} {
			r := res.Results[i]
			if want == 0 {
				wantKeys(t, fmt.Sprintf("result %d", i), r, "error")
				continue
			}
			if r["user"] != "bc" || r["seq"] != want {
				t.Errorf("result %d = %v, want seq %v for bc", i, r, want)
			}
		}
	})

	t.Run("no quorum is 503 with Retry-After", func(t *testing.T) {
		c.Kill("n1")
		c.Kill("n3")
		st, hdr, body := httpDo(t, "POST", url, clustertest.APIKey, raw(`{"user":"nobody-yet","data":1}`))
		wantErrorJSON(t, "publish without quorum", st, body, 503)
		if hdr.Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After: %v", hdr)
		}
	})
}

func TestAdminAPIContract(t *testing.T) {
	c := clustertest.Start(t, 3)

	t.Run("admin key required", func(t *testing.T) {
		for _, ep := range []struct{ method, path string }{
			{"GET", "/v1/cluster"},
			{"GET", "/v1/sessions/x"},
			{"POST", "/v1/nodes/n2/drain"},
			{"POST", "/v1/raft/transfer-leadership"},
			{"GET", "/v1/gossip/keys"},
			{"POST", "/v1/gossip/keys"},
		} {
			for _, key := range []string{"", "wrong", clustertest.APIKey} {
				st, _, body := httpDo(t, ep.method, c.URL("n1")+ep.path, key, nil)
				wantErrorJSON(t, fmt.Sprintf("%s %s with key %q", ep.method, ep.path, key), st, body, 401)
			}
		}
		// Nothing was drained or moved by the refused calls.
		if st, _ := c.Get("n2", "/readyz", ""); st != http.StatusOK {
			t.Errorf("n2 not ready after refused drain: %d", st)
		}
	})

	t.Run("health, readiness and metrics need no key", func(t *testing.T) {
		for _, id := range c.IDs() {
			for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
				st, hdr, body := httpDo(t, "GET", c.URL(id)+p, "", nil)
				if st != http.StatusOK {
					t.Errorf("%s %s: %d %s", id, p, st, body)
				}
				if p == "/metrics" && (!strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") || !bytes.Contains(body, []byte("# TYPE "))) {
					t.Errorf("%s /metrics is not Prometheus text: %s %.200s", id, hdr.Get("Content-Type"), body)
				}
			}
		}
	})

	t.Run("cluster shape", func(t *testing.T) {
		st, _, body := httpDo(t, "GET", c.URL("n3")+"/v1/cluster", clustertest.AdminKey, nil)
		if st != http.StatusOK {
			t.Fatalf("%d %s", st, body)
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"leader", "term", "commit_index", "nodes"} {
			if _, ok := m[k]; !ok {
				t.Errorf("no %q in %s", k, body)
			}
		}
		nodes, _ := m["nodes"].([]any)
		if len(nodes) != 3 {
			t.Fatalf("want 3 nodes: %s", body)
		}
		leaders := 0
		for _, x := range nodes {
			nd, _ := x.(map[string]any)
			wantKeys(t, fmt.Sprint("node ", nd["id"]), nd, "id", "region", "zone", "public_url", "state", "raft", "connections", "sessions_owned")
			if !slices.Contains([]string{"alive", "suspect", "dead", "left", "draining"}, fmt.Sprint(nd["state"])) ||
				!slices.Contains([]string{"leader", "voter", "nonvoter", "none"}, fmt.Sprint(nd["raft"])) {
				t.Errorf("node %v", nd)
			}
			if nd["raft"] == "leader" {
				leaders++
				if nd["id"] != m["leader"] {
					t.Errorf("leader %v but node %v has raft=leader", m["leader"], nd["id"])
				}
			}
		}
		if leaders != 1 {
			t.Errorf("%d nodes with raft=leader: %s", leaders, body)
		}
	})

	t.Run("sessions", func(t *testing.T) {
		st, _, body := httpDo(t, "GET", c.URL("n1")+"/v1/sessions/nobody-here", clustertest.AdminKey, nil)
		wantErrorJSON(t, "unknown session", st, body, 404)

		_, w := connect(t, c, "n2", "sess")
		if st, _, body := c.Publish("n3", "sess", 1, ""); st != http.StatusOK {
			t.Fatalf("publish: %d %s", st, body)
		}
		for _, id := range c.IDs() {
			var m map[string]any
			var body []byte
			c.Eventually(10*time.Second, "session of sess on "+id, func() bool {
				var st int
				st, _, body = httpDo(t, "GET", c.URL(id)+"/v1/sessions/sess", clustertest.AdminKey, nil)
				m = nil
				_ = json.Unmarshal(body, &m)
				return st == http.StatusOK && m["owner"] == "n2" && m["seq"] == float64(1)
			})
			wantKeys(t, "session on "+id, m, "user", "session", "owner", "backup", "epoch", "state", "seq")
			if m["user"] != "sess" || m["session"] != w.Session || m["state"] != "attached" {
				t.Errorf("session on %s: %s (welcome session %s)", id, body, w.Session)
			}
			if e, ok := m["epoch"].(float64); !ok || e < 1 {
				t.Errorf("session on %s: epoch %v", id, m["epoch"])
			}
		}
	})

	// Encrypted clusters: gossiprotation_test.go.
	t.Run("gossip keys without encryption", func(t *testing.T) {
		gk, body := gossipKeys(t, c, "n1")
		if gk.Encrypted || gk.Nodes != 3 || !bytes.Contains(body, []byte(`"keys":[]`)) {
			t.Fatalf("GET: %s", body)
		}
		st, _, body := changeGossipKeys(t, c, "n2", "install", b64(gossipKey(1)))
		wantErrorJSON(t, "install", st, body, http.StatusConflict)
		if !bytes.Contains(body, []byte("gossip encryption is off: start the nodes with --gossip-key-file")) {
			t.Fatalf("POST: %s", body)
		}
	})

	t.Run("transfer leadership moves the leader", func(t *testing.T) {
		prev := c.WaitLeader()
		via := "n1"
		if prev == "n1" {
			via = "n2"
		}
		st, _, body := httpDo(t, "POST", c.URL(via)+"/v1/raft/transfer-leadership", clustertest.AdminKey, nil)
		if st != http.StatusOK {
			t.Fatalf("transfer via %s: %d %s", via, st, body)
		}
		c.Eventually(15*time.Second, "a new leader all agree on", func() bool {
			l := ""
			for _, id := range c.IDs() {
				got := c.Leader(id)
				if got == "" || got == prev || (l != "" && got != l) {
					return false
				}
				l = got
			}
			return true
		})
	})
}
