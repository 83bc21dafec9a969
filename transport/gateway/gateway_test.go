package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/switchboard/switchboard/internal/testenv"
	"github.com/switchboard/switchboard/protocol"
)

// gwFakeHub welcomes every hello, echoes each ack back as a message frame
// with that seq, and records what the gateway told it.
type gwFakeHub struct {
	helloErr   error
	panicOn    string        // "hello" or "ack"
	helloBlock chan struct{} // if set, Hello signals it and blocks until ctx ends
	helloDelay time.Duration // if set, Hello takes this long (a Raft commit, a takeover)

	sinks chan Sink // every accepted sink, in order

	mu      sync.Mutex
	users   []string
	resumes []*protocol.Resume
	gone    map[uint64]int
}

func newGwFakeHub() *gwFakeHub {
	return &gwFakeHub{sinks: make(chan Sink, 64), gone: make(map[uint64]int)}
}

func (h *gwFakeHub) Hello(ctx context.Context, sink Sink, user string, resume *protocol.Resume) error {
	if h.panicOn == "hello" {
		panic("hub bug in Hello")
	}
	if h.helloErr != nil {
		return h.helloErr
	}
	if h.helloBlock != nil {
		close(h.helloBlock)
		<-ctx.Done()
		return ctx.Err()
	}
	if h.helloDelay > 0 {
		select {
		case <-time.After(h.helloDelay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	h.mu.Lock()
	h.users = append(h.users, user)
	h.resumes = append(h.resumes, resume)
	h.mu.Unlock()
	sink.Send(0, protocol.EncodeWelcome(protocol.Welcome{Session: "s-" + user, Node: "n1", Region: "r1", Zone: "a", HeartbeatMS: 5000}))
	select {
	case h.sinks <- sink:
	default: // a flood test: nobody asks for these
	}
	return nil
}

func (h *gwFakeHub) Ack(sink Sink, seq uint64) {
	if h.panicOn == "ack" {
		panic("hub bug in Ack")
	}
	sink.Send(seq, protocol.AppendMessage(nil, seq, "ack", 0, json.RawMessage(`{"acked":true}`)))
}

// Subscribe answers subscribed at seq 0, or fails for channels named
// "fail…" as an unreachable owner would.
func (h *gwFakeHub) Subscribe(_ context.Context, sink Sink, sub protocol.Subscription) error {
	if strings.HasPrefix(sub.Channel, "fail") {
		return protocol.Errorf(protocol.ErrUnavailable, "owner of %s unreachable", sub.Channel)
	}
	sink.Send(0, protocol.AppendSubscribed(nil, sub.Channel, 0, sub.Seq == nil))
	return nil
}

func (h *gwFakeHub) Unsubscribe(Sink, string) error { return nil }

// Presence says the asking user is the channel's one member.
func (h *gwFakeHub) Presence(_ context.Context, sink Sink, channel string) (protocol.Presence, error) {
	return protocol.Presence{Channel: channel, Count: 1, Members: []protocol.Member{{User: sink.User(), Conns: 1}}}, nil
}

func (h *gwFakeHub) Gone(sink Sink) {
	h.mu.Lock()
	h.gone[sink.ID()]++
	h.mu.Unlock()
}

func (h *gwFakeHub) goneCounts() map[uint64]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.gone)
}

func (h *gwFakeHub) sink(t *testing.T) Sink {
	t.Helper()
	select {
	case s := <-h.sinks:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("hub got no hello")
		return nil
	}
}

// gwFakeAuth accepts "good-<user>", a token that never expires, and
// "good-<user>~<unix ms>", one that expires then.
func gwFakeAuth(token string) (Identity, error) {
	if u, ok := strings.CutPrefix(token, "good-"); ok {
		u, ms, hasExp := strings.Cut(u, "~")
		if !hasExp {
			return Identity{User: u}, nil
		}
		n, err := strconv.ParseInt(ms, 10, 64)
		if err != nil {
			return Identity{}, err
		}
		exp := time.UnixMilli(n)
		if !time.Now().Before(exp) {
			return Identity{}, errors.New("token is expired")
		}
		return Identity{User: u, Expires: exp}, nil
	}
	if token == "expired" {
		return Identity{}, errors.New("token is expired")
	}
	return Identity{}, errors.New("signature invalid")
}

// gwToken is a token for user that expires at exp.
func gwToken(user string, exp time.Time) string {
	return "good-" + user + "~" + strconv.FormatInt(exp.UnixMilli(), 10)
}

// gwTestTLS makes startGW serve its gateway over TLS, on a listener
// PollableListener wraps, and its clients dial with TLS.
var gwTestTLS bool

// TestGatewayOverTLS runs the gateway's behaviour tests again over TLS:
// the poller reads those connections through tls.Conn, which must never
// leave a record it has taken from the socket unread.
func TestGatewayOverTLS(t *testing.T) {
	gwTestTLS = true
	defer func() { gwTestTLS = false }()
	for name, test := range gatewayBehaviour {
		t.Run(name, test)
	}
	t.Run("Floods", TestGatewaySurvivesFloods)
	t.Run("PerUser", TestGatewayMaxConnectionsPerUser)
}

// gwTestNoPoller makes startGW's gateways give every connection a reader
// goroutine (the path of non-Linux systems and of sockets epoll cannot
// watch) instead of the epoll poller.
var gwTestNoPoller bool

// TestGatewayWithReaderGoroutines runs the gateway's behaviour tests again
// on the fallback reader.
func TestGatewayWithReaderGoroutines(t *testing.T) {
	gwTestNoPoller = true
	defer func() { gwTestNoPoller = false }()
	for name, test := range gatewayBehaviour {
		t.Run(name, test)
	}
}

// gatewayBehaviour are the behaviour tests that run on every reading path:
// the poller, reader goroutines, and the poller through TLS.
var gatewayBehaviour = map[string]func(*testing.T){
	"ClosePaths":            TestGatewayClosePaths,
	"WriterDoesNotLinger":   TestGatewayHeartbeatWriterDoesNotLinger,
	"PingPong":              TestGatewayPingPongEchoesIDVerbatim,
	"Ack":                   TestGatewayAckReachesHub,
	"Heartbeat":             TestGatewayHeartbeatWhenIdle,
	"WebSocketPings":        TestGatewayWebSocketPings,
	"SlowConsumer":          TestGatewaySlowConsumerIsClosed,
	"SinkClose":             TestGatewaySinkClose,
	"Shutdown":              TestGatewayShutdown,
	"ShutdownCuts":          TestGatewayShutdownCutsWhenContextEnds,
	"BlockedHelloIsBounded": TestGatewayBlockedHelloIsBounded,
	"HubPanicIsContained":   TestGatewayHubPanicIsContained,
	"PingFlood":             TestGatewayPingFloodIsBounded,
	"EveryPing":             TestGatewayEveryPingGetsItsPong,
	"Conformance":           TestGatewayConformance,
	"FrameRate":             TestGatewayFrameRate,
	"TokenExpiry":           TestGatewayTokenExpiryCloses,
	"Refresh":               TestGatewayRefresh,
	"BlockingRefresh":       TestGatewayBlockingRefreshHoldsNoOtherConnection,
	"SlowReader":            TestGatewaySlowReaderGetsItsBacklog,
	"SlowHello":             TestGatewaySlowHelloIsNotAReadTimeout,
	"IdleHasNoWriter":       TestGatewayIdleConnectionHasNoWriter,
}

// withDefaults fills c's zero fields from DefaultConfig, so that a test
// names only what it is about.
func withDefaults(c Config) Config {
	d := DefaultConfig()
	set := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setD := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	set(&c.MaxFrameBytes, d.MaxFrameBytes)
	setD(&c.HelloTimeout, d.HelloTimeout)
	setD(&c.Heartbeat, d.Heartbeat)
	setD(&c.PingInterval, c.Heartbeat)
	setD(&c.WriteTimeout, d.WriteTimeout)
	set(&c.SendQueue, d.SendQueue)
	return c
}

type gwHarness struct {
	t   *testing.T
	g   *Gateway
	hub *gwFakeHub
	url string
	// clientTLS is the clients' TLS config when the gateway is served
	// over TLS (gwTestTLS); nil otherwise.
	clientTLS *tls.Config
}

// startGW serves a gateway on an httptest server. cfg fields left zero take
// the defaults (the ping interval that of the heartbeat).
func startGW(t *testing.T, cfg Config, hub *gwFakeHub) *gwHarness {
	t.Helper()
	return startGWAuth(t, cfg, hub, gwFakeAuth)
}

// startGWAuth is startGW with auth as the Authenticator.
func startGWAuth(t *testing.T, cfg Config, hub *gwFakeHub, auth Authenticator) *gwHarness {
	t.Helper()
	if hub == nil {
		hub = newGwFakeHub()
	}
	cfg = withDefaults(cfg)
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	g, err := New(cfg, auth, hub)
	if err != nil {
		t.Fatal(err)
	}
	g.noPoller = gwTestNoPoller
	mux := http.NewServeMux()
	mux.Handle("GET /v1/connect", g)
	srv := httptest.NewUnstartedServer(mux)
	var clientTLS *tls.Config
	if gwTestTLS {
		srv.Listener = PollableListener(srv.Listener)
		srv.StartTLS()
		roots := x509.NewCertPool()
		roots.AddCert(srv.Certificate())
		clientTLS = &tls.Config{RootCAs: roots}
	} else {
		srv.Start()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		srv.Close()
	})
	return &gwHarness{t: t, g: g, hub: hub, url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/connect", clientTLS: clientTLS}
}

func (h *gwHarness) dial(header http.Header) *websocket.Conn {
	h.t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: h.clientTLS}
	ws, resp, err := d.Dial(h.url, header)
	if err != nil {
		h.t.Fatalf("dial: %v", err)
	}
	resp.Body.Close()
	h.t.Cleanup(func() { ws.Close() })
	return ws
}

// waitIdle waits until the gateway has no connections left.
func (h *gwHarness) waitIdle() {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.g.Connections() != 0 {
		if time.Now().After(deadline) {
			h.t.Fatalf("Connections() = %d, want 0", h.g.Connections())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gwServerFrame is any frame the server sends.
type gwServerFrame struct {
	Type      string          `json:"type"`
	Code      string          `json:"code"`
	Message   string          `json:"message"`
	Endpoints []string        `json:"endpoints"`
	Seq       uint64          `json:"seq"`
	ID        json.RawMessage `json:"id"`
	Session   string          `json:"session"`
	raw       []byte
}

func gwRead(t *testing.T, ws *websocket.Conn) (gwServerFrame, error) {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	mt, b, err := ws.ReadMessage()
	if err != nil {
		return gwServerFrame{}, err
	}
	if mt != websocket.TextMessage {
		t.Fatalf("server sent message type %d", mt)
	}
	var f gwServerFrame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("server frame %q is not JSON: %v", b, err)
	}
	f.raw = b
	return f, nil
}

func gwMustRead(t *testing.T, ws *websocket.Conn, wantType string) gwServerFrame {
	t.Helper()
	f, err := gwRead(t, ws)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if f.Type != wantType {
		t.Fatalf("got frame %s, want type %q", f.raw, wantType)
	}
	return f
}

func gwSend(t *testing.T, ws *websocket.Conn, frame string) {
	t.Helper()
	ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func gwHello(t *testing.T, ws *websocket.Conn, user string) gwServerFrame {
	t.Helper()
	gwSend(t, ws, `{"type":"hello","token":"good-`+user+`"}`)
	return gwMustRead(t, ws, protocol.TypeWelcome)
}

// gwExpectClose reads until the server closes and checks that the last
// frame before the close is the error frame wantSlug (none when wantSlug is
// empty) and that the close code is wantClose. Other frames before the error
// frame are skipped. A close that fails the connection (wantClose.Failed())
// has no error frame before it, and wantSlug as its reason.
func gwExpectClose(t *testing.T, ws *websocket.Conn, wantClose protocol.CloseCode, wantSlug string) gwServerFrame {
	t.Helper()
	var last gwServerFrame
	for {
		f, err := gwRead(t, ws)
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("read ended with %v, want close %d (last frame %s)", err, wantClose, last.raw)
			}
			if ce.Code != int(wantClose) {
				t.Fatalf("close code %d (%q), want %d", ce.Code, ce.Text, wantClose)
			}
			if wantClose.Failed() {
				if last.Type == protocol.TypeError {
					t.Fatalf("error frame %s before close %d, which must come alone", last.raw, wantClose)
				}
				if ce.Text != wantSlug {
					t.Errorf("close reason %q, want %q", ce.Text, wantSlug)
				}
				return last
			}
			if wantSlug == "" {
				if last.Type == protocol.TypeError {
					t.Fatalf("unexpected error frame %s before close %d", last.raw, wantClose)
				}
				return last
			}
			if last.Type != protocol.TypeError || last.Code != wantSlug {
				t.Fatalf("last frame before close %d is %s, want error %q", wantClose, last.raw, wantSlug)
			}
			if ce.Text != wantSlug {
				t.Errorf("close reason %q, want %q", ce.Text, wantSlug)
			}
			return last
		}
		last = f
	}
}

type gwClientMsg struct {
	binary bool
	data   string
}

func gwPadHello(size int) string {
	head := `{"type":"hello","token":"good-pad","pad":"`
	return head + strings.Repeat("x", size-len(head)-2) + `"}`
}

func TestGatewayClosePaths(t *testing.T) {
	testenv.NoLeaks(t)
	endpoints := []string{"ws://n2.r1/v1/connect", "ws://n3.r2/v1/connect"}
	tests := []struct {
		name      string
		cfg       Config
		helloErr  error
		header    http.Header
		draining  []string
		send      []gwClientMsg
		welcome   bool // a welcome precedes the close
		wantClose protocol.CloseCode
		wantSlug  string
		wantEPs   []string
	}{
		{name: "bad token", send: []gwClientMsg{{data: `{"type":"hello","token":"forged"}`}},
			wantClose: protocol.CloseUnauthorized, wantSlug: protocol.CloseUnauthorized.Slug()},
		{name: "expired token", send: []gwClientMsg{{data: `{"type":"hello","token":"expired"}`}},
			wantClose: protocol.CloseUnauthorized, wantSlug: protocol.CloseUnauthorized.Slug()},
		{name: "missing token", send: []gwClientMsg{{data: `{"type":"hello"}`}},
			wantClose: protocol.CloseUnauthorized, wantSlug: protocol.CloseUnauthorized.Slug()},
		{name: "bad bearer header", header: http.Header{"Authorization": {"Bearer forged"}},
			send:      []gwClientMsg{{data: `{"type":"hello"}`}},
			wantClose: protocol.CloseUnauthorized, wantSlug: protocol.CloseUnauthorized.Slug()},
		{name: "no hello in time", cfg: Config{HelloTimeout: 50 * time.Millisecond},
			wantClose: protocol.CloseHelloTimeout, wantSlug: protocol.CloseHelloTimeout.Slug()},
		{name: "not JSON", send: []gwClientMsg{{data: `{"type":"hello"`}},
			wantClose: protocol.CloseProtocol, wantSlug: protocol.CloseProtocol.Slug()},
		{name: "JSON but not an object", send: []gwClientMsg{{data: `[1,2]`}},
			wantClose: protocol.CloseProtocol, wantSlug: protocol.CloseProtocol.Slug()},
		{name: "no type", send: []gwClientMsg{{data: `{"token":"good-a"}`}},
			wantClose: protocol.CloseProtocol, wantSlug: protocol.CloseProtocol.Slug()},
		{name: "unknown type", send: []gwClientMsg{{data: `{"type":"bogus"}`}},
			wantClose: protocol.CloseProtocol, wantSlug: protocol.CloseProtocol.Slug()},
		{name: "first frame is subscribe", send: []gwClientMsg{{data: `{"type":"subscribe","channel":"c"}`}},
			wantClose: protocol.CloseProtocol, wantSlug: protocol.CloseProtocol.Slug()},
		{name: "first frame is ping", send: []gwClientMsg{{data: `{"type":"ping","id":1}`}},
			wantClose: protocol.CloseProtocol, wantSlug: protocol.CloseProtocol.Slug()},
		{name: "first frame is ack", send: []gwClientMsg{{data: `{"type":"ack","seq":1}`}},
			wantClose: protocol.CloseProtocol, wantSlug: protocol.CloseProtocol.Slug()},
		{name: "first frame is refresh", send: []gwClientMsg{{data: `{"type":"refresh","token":"good-a"}`}},
			wantClose: protocol.CloseProtocol, wantSlug: protocol.CloseProtocol.Slug()},
		{name: "second hello", send: []gwClientMsg{{data: `{"type":"hello","token":"good-a"}`}, {data: `{"type":"hello","token":"good-a"}`}},
			welcome: true, wantClose: protocol.CloseProtocol, wantSlug: protocol.CloseProtocol.Slug()},
		{name: "malformed ack after welcome", send: []gwClientMsg{{data: `{"type":"hello","token":"good-a"}`}, {data: `{"type":"ack","seq":-1}`}},
			welcome: true, wantClose: protocol.CloseProtocol, wantSlug: protocol.CloseProtocol.Slug()},
		{name: "binary frame", send: []gwClientMsg{{binary: true, data: `{"type":"hello","token":"good-a"}`}},
			wantClose: protocol.CloseUnsupportedData, wantSlug: protocol.CloseUnsupportedData.Slug()},
		{name: "binary frame after welcome", send: []gwClientMsg{{data: `{"type":"hello","token":"good-a"}`}, {binary: true, data: `{}`}},
			welcome: true, wantClose: protocol.CloseUnsupportedData, wantSlug: protocol.CloseUnsupportedData.Slug()},
		{name: "frame one byte too large", cfg: Config{MaxFrameBytes: 1024},
			send:      []gwClientMsg{{data: gwPadHello(1025)}},
			wantClose: protocol.CloseTooLarge, wantSlug: protocol.CloseTooLarge.Slug()},
		{name: "frame far too large", cfg: Config{MaxFrameBytes: 1024},
			send:      []gwClientMsg{{data: gwPadHello(256 << 10)}},
			wantClose: protocol.CloseTooLarge, wantSlug: protocol.CloseTooLarge.Slug()},
		{name: "too large after welcome", cfg: Config{MaxFrameBytes: 1024},
			send:      []gwClientMsg{{data: `{"type":"hello","token":"good-a"}`}, {data: `{"type":"ping","id":"` + strings.Repeat("y", 2000) + `"}`}},
			welcome:   true,
			wantClose: protocol.CloseTooLarge, wantSlug: protocol.CloseTooLarge.Slug()},
		{name: "invalid UTF-8", send: []gwClientMsg{{data: "{\"type\":\"hello\",\"token\":\"good-\xff\"}"}},
			wantClose: protocol.CloseInvalidUTF8, wantSlug: protocol.CloseInvalidUTF8.Slug()},
		{name: "invalid UTF-8 after welcome", send: []gwClientMsg{{data: `{"type":"hello","token":"good-a"}`}, {data: "{\"type\":\"ping\",\"id\":\"\xc3\x28\"}"}},
			welcome: true, wantClose: protocol.CloseInvalidUTF8, wantSlug: protocol.CloseInvalidUTF8.Slug()},
		{name: "hub refuses: continuity lost",
			helloErr:  protocol.Errorf(protocol.ErrContinuityLost, "resume window passed"),
			send:      []gwClientMsg{{data: `{"type":"hello","token":"good-a","resume":{"session":"s1","seq":9}}`}},
			wantClose: protocol.CloseContinuityLost, wantSlug: protocol.CloseContinuityLost.Slug()},
		{name: "hub refuses wrapped: go elsewhere",
			helloErr:  fmt.Errorf("claim: %w", protocol.Errorf(protocol.ErrMoved, "owner moved")),
			send:      []gwClientMsg{{data: `{"type":"hello","token":"good-a"}`}},
			wantClose: protocol.CloseMoved, wantSlug: protocol.CloseMoved.Slug()},
		{name: "hub unavailable", helloErr: errors.New("no quorum"),
			send:      []gwClientMsg{{data: `{"type":"hello","token":"good-a"}`}},
			wantClose: protocol.CloseTryAgainLater, wantSlug: protocol.CloseTryAgainLater.Slug()},
		{name: "draining node", draining: endpoints,
			wantClose: protocol.CloseMoved, wantSlug: protocol.CloseMoved.Slug(), wantEPs: endpoints},
		{name: "draining node ignores hello", draining: endpoints,
			send:      []gwClientMsg{{data: `{"type":"hello","token":"good-a"}`}},
			wantClose: protocol.CloseMoved, wantSlug: protocol.CloseMoved.Slug(), wantEPs: endpoints},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := newGwFakeHub()
			hub.helloErr = tt.helloErr
			h := startGW(t, tt.cfg, hub)
			if tt.draining != nil {
				h.g.SetDraining(tt.draining)
			}
			ws := h.dial(tt.header)
			for i, m := range tt.send {
				mt := websocket.TextMessage
				if m.binary {
					mt = websocket.BinaryMessage
				}
				ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if err := ws.WriteMessage(mt, []byte(m.data)); err != nil {
					t.Fatalf("write: %v", err)
				}
				if i == 0 && tt.welcome {
					gwMustRead(t, ws, protocol.TypeWelcome)
				}
			}
			ef := gwExpectClose(t, ws, tt.wantClose, tt.wantSlug)
			if ef.Message == "" && !tt.wantClose.Failed() {
				t.Errorf("error frame %s has no message", ef.raw)
			}
			if !slices.Equal(ef.Endpoints, tt.wantEPs) {
				t.Errorf("endpoints %q, want %q", ef.Endpoints, tt.wantEPs)
			}
			h.waitIdle()
			gone := hub.goneCounts()
			if tt.welcome {
				if len(gone) != 1 || slices.Collect(maps.Values(gone))[0] != 1 {
					t.Errorf("Gone calls %v, want exactly one for the accepted sink", gone)
				}
			} else if len(gone) != 0 {
				t.Errorf("Gone calls %v for a connection Hello never accepted", gone)
			}
		})
	}
}

func TestGatewayFrameAtLimitIsAccepted(t *testing.T) {
	testenv.NoLeaks(t)
	h := startGW(t, Config{MaxFrameBytes: 1024}, nil)
	ws := h.dial(nil)
	gwSend(t, ws, gwPadHello(1024))
	gwMustRead(t, ws, protocol.TypeWelcome)
}

func TestGatewayPingPongEchoesIDVerbatim(t *testing.T) {
	testenv.NoLeaks(t)
	h := startGW(t, Config{}, nil)
	ws := h.dial(nil)
	gwHello(t, ws, "alice")
	tests := []struct {
		ping, pong string
	}{
		{`{"type":"ping","id":7}`, `{"type":"pong","id":7}`},
		{`{"type":"ping","id":"abc"}`, `{"type":"pong","id":"abc"}`},
		{`{"type":"ping","id": {"x":[1, 2.50]} }`, `{"type":"pong","id":{"x":[1, 2.50]}}`},
		{`{"type":"ping","id":null}`, `{"type":"pong","id":null}`},
		{`{"type":"ping"}`, `{"type":"pong"}`},
	}
	for _, tt := range tests {
		gwSend(t, ws, tt.ping)
		f := gwMustRead(t, ws, protocol.TypePong)
		if string(f.raw) != tt.pong {
			t.Errorf("ping %s: got %s, want %s", tt.ping, f.raw, tt.pong)
		}
	}
}

func TestGatewayAckReachesHub(t *testing.T) {
	testenv.NoLeaks(t)
	h := startGW(t, Config{}, nil)
	ws := h.dial(nil)
	gwHello(t, ws, "alice")
	for _, seq := range []uint64{1, 5, 42} {
		gwSend(t, ws, fmt.Sprintf(`{"type":"ack","seq":%d}`, seq))
		// The fake hub echoes each ack as a message with that seq.
		if f := gwMustRead(t, ws, protocol.TypeMessage); f.Seq != seq {
			t.Errorf("hub acked seq %d, want %d", f.Seq, seq)
		}
	}
}

func TestGatewayTokenSources(t *testing.T) {
	tests := []struct {
		name     string
		header   http.Header
		hello    string
		wantUser string
		wantSeq  *uint64
	}{
		{name: "hello token", hello: `{"type":"hello","token":"good-alice"}`, wantUser: "alice"},
		{name: "bearer header, hello without token",
			header: http.Header{"Authorization": {"Bearer good-bob"}},
			hello:  `{"type":"hello","resume":{"seq":0}}`, wantUser: "bob", wantSeq: new(uint64(0))},
		{name: "lower-case bearer scheme",
			header: http.Header{"Authorization": {"bearer good-dan"}},
			hello:  `{"type":"hello"}`, wantUser: "dan"},
		{name: "hello token wins over header",
			header: http.Header{"Authorization": {"Bearer good-bob"}},
			hello:  `{"type":"hello","token":"good-carol","resume":{"session":"s9","seq":12}}`, wantUser: "carol", wantSeq: new(uint64(12))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testenv.NoLeaks(t)
			h := startGW(t, Config{}, nil)
			ws := h.dial(tt.header)
			gwSend(t, ws, tt.hello)
			w := gwMustRead(t, ws, protocol.TypeWelcome)
			if w.Session != "s-"+tt.wantUser {
				t.Errorf("welcome session %q", w.Session)
			}
			if s := h.hub.sink(t); s.User() != tt.wantUser {
				t.Errorf("sink user %q, want %q", s.User(), tt.wantUser)
			}
			h.hub.mu.Lock()
			defer h.hub.mu.Unlock()
			if got := h.hub.users; !slices.Equal(got, []string{tt.wantUser}) {
				t.Errorf("hub users %q, want [%s]", got, tt.wantUser)
			}
			r := h.hub.resumes[0]
			if (r == nil) != (tt.wantSeq == nil) || (r != nil && r.Seq != *tt.wantSeq) {
				t.Errorf("hub resume %+v, want seq %v", r, tt.wantSeq)
			}
		})
	}
}

func TestGatewayHeartbeatWhenIdle(t *testing.T) {
	testenv.NoLeaks(t)
	h := startGW(t, Config{Heartbeat: 40 * time.Millisecond, PingInterval: time.Second}, nil)
	ws := h.dial(nil)
	gwHello(t, ws, "alice")
	if f := gwMustRead(t, ws, protocol.TypeHeartbeat); f.Seq != 0 {
		t.Errorf("heartbeat before any message has seq %d, want 0", f.Seq)
	}
	sink := h.hub.sink(t)
	sink.Send(3, protocol.AppendMessage(nil, 3, "m3", 1, json.RawMessage(`1`)))
	sink.Send(2, protocol.AppendMessage(nil, 2, "dup", 1, json.RawMessage(`1`))) // heartbeats report the highest seq
	gwMustRead(t, ws, protocol.TypeMessage)
	gwMustRead(t, ws, protocol.TypeMessage)
	for range 2 {
		if f := gwMustRead(t, ws, protocol.TypeHeartbeat); f.Seq != 3 {
			t.Errorf("heartbeat seq %d, want 3", f.Seq)
		}
	}
}

// A writer that wrote only a heartbeat returns at once instead of
// lingering as a writer goroutine does after messages: between beats an
// idle connection holds no goroutine, with any number of connections. It
// runs on every path (gatewayBehaviour): the poller's sockets are written
// by the writer pool, TLS and fallback ones by writer goroutines.
func TestGatewayHeartbeatWriterDoesNotLinger(t *testing.T) {
	testenv.NoLeaks(t)
	h := startGW(t, Config{Heartbeat: time.Second, PingInterval: 10 * time.Minute}, nil)
	ws := h.dial(nil)
	gwHello(t, ws, "alice")
	c := h.g.snapshot()[0]
	writing := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.writing
	}
	gwMustRead(t, ws, protocol.TypeHeartbeat) // a second of silence after the welcome's writer is gone
	start := time.Now()
	for writing() {
		if time.Since(start) >= writerLinger {
			t.Fatalf("the heartbeat's writer still runs %v after the heartbeat: it lingers", writerLinger)
		}
		time.Sleep(2 * time.Millisecond)
	}
	// After messages a writer goroutine lingers, ready for more. A socket
	// the writer pool writes needs no goroutine: its turn ends at once.
	c.mu.Lock()
	pooled := c.pooledLocked()
	c.mu.Unlock()
	h.hub.sink(t).Send(1, protocol.AppendMessage(nil, 1, "m1", 1, json.RawMessage(`1`)))
	gwMustRead(t, ws, protocol.TypeMessage)
	if !pooled {
		if !writing() {
			t.Error("the writer goroutine of a message returned at once; it should linger for more")
		}
		return
	}
	start = time.Now()
	for writing() {
		if time.Since(start) >= writerLinger {
			t.Fatalf("the pool's turn at a message still runs %v after it was read", writerLinger)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestGatewayNoHeartbeatBeforeWelcome(t *testing.T) {
	testenv.NoLeaks(t)
	h := startGW(t, Config{Heartbeat: 10 * time.Millisecond, HelloTimeout: 200 * time.Millisecond}, nil)
	ws := h.dial(nil)
	// Without a welcome, heartbeats have no stream position to report: the
	// only frame is the hello_timeout error.
	if f := gwMustRead(t, ws, protocol.TypeError); f.Code != protocol.CloseHelloTimeout.Slug() {
		t.Fatalf("got %s, want hello_timeout", f.raw)
	}
	gwExpectClose(t, ws, protocol.CloseHelloTimeout, "")
}

func TestGatewayWebSocketPings(t *testing.T) {
	t.Run("pongs keep the connection", func(t *testing.T) {
		testenv.NoLeaks(t)
		// Generous interval: the test box may be loaded, and a stall longer
		// than 2.5 intervals would rightly drop the client.
		const interval = 300 * time.Millisecond
		h := startGW(t, Config{PingInterval: interval, Heartbeat: time.Hour}, nil)
		ws := h.dial(nil)
		gwHello(t, ws, "alice")
		// Answer pings until four have come, i.e. past the 2.5-interval read
		// deadline that only pongs refresh, then stop reading.
		pings := 0
		ws.SetPingHandler(func(data string) error {
			if pings++; pings == 4 {
				ws.SetReadDeadline(time.Now())
			}
			return ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		})
		ws.SetReadDeadline(time.Now().Add(20 * interval))
		_, b, err := ws.ReadMessage()
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || pings < 4 {
			t.Fatalf("read = %q, %v after %d pings; want our own timeout after 4 pings", b, err, pings)
		}
		if n := h.g.Connections(); n != 1 {
			t.Errorf("Connections() = %d, want 1", n)
		}
	})
	t.Run("silent client is dropped", func(t *testing.T) {
		testenv.NoLeaks(t)
		h := startGW(t, Config{PingInterval: 50 * time.Millisecond, Heartbeat: time.Hour}, nil)
		ws := h.dial(nil)
		gwHello(t, ws, "alice")
		ws.SetPingHandler(func(string) error { return nil }) // never pong
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err := ws.ReadMessage()
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("read = %v; want the server to drop the connection", err)
		}
		h.waitIdle()
		if gone := h.hub.goneCounts(); len(gone) != 1 {
			t.Errorf("Gone calls %v, want one", gone)
		}
	})
}

func TestGatewaySlowConsumerIsClosed(t *testing.T) {
	testenv.NoLeaks(t)
	h := startGW(t, Config{SendQueue: 4}, nil)
	ws := h.dial(nil)
	gwHello(t, ws, "alice")
	sink := h.hub.sink(t)

	// The client stops reading; once the socket buffers are full the queue
	// of 4 overflows.
	data := json.RawMessage(`"` + strings.Repeat("z", 64<<10) + `"`)
	overflowed := false
	for seq := uint64(1); seq <= 100_000; seq++ {
		if !sink.Send(seq, protocol.AppendMessage(nil, seq, "m", 0, data)) {
			overflowed = true
			break
		}
	}
	if !overflowed {
		t.Fatal("Send never reported overflow")
	}
	if sink.Send(0, []byte(`{}`)) {
		t.Error("Send after overflow returned true")
	}
	gwExpectClose(t, ws, protocol.CloseSlowConsumer, protocol.CloseSlowConsumer.Slug())
	h.waitIdle()
	if gone := h.hub.goneCounts(); gone[sink.ID()] != 1 {
		t.Errorf("Gone calls %v, want one for sink %d", gone, sink.ID())
	}
}

func TestGatewaySinkClose(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantClose protocol.CloseCode
	}{
		{name: "continuity lost", err: protocol.Errorf(protocol.ErrContinuityLost, "bye"), wantClose: protocol.CloseContinuityLost},
		{name: "stream moved", err: fmt.Errorf("%w: bye", protocol.ErrMoved), wantClose: protocol.CloseMoved},
		{name: "an error the contract does not name", err: errors.New("bye"), wantClose: protocol.CloseTryAgainLater},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testenv.NoLeaks(t)
			h := startGW(t, Config{}, nil)
			ws := h.dial(nil)
			gwHello(t, ws, "alice")
			sink := h.hub.sink(t)
			// Frames queued before Close are delivered before the close.
			if !sink.Send(1, protocol.AppendMessage(nil, 1, "m1", 0, json.RawMessage(`{}`))) {
				t.Fatal("Send failed")
			}
			sink.Close(tt.err, nil)
			sink.Close(protocol.Errorf(protocol.ErrBadRequest, "second close is ignored"), nil)
			if sink.Send(2, []byte(`{}`)) {
				t.Error("Send after Close returned true")
			}
			if f := gwMustRead(t, ws, protocol.TypeMessage); f.Seq != 1 {
				t.Errorf("message seq %d, want 1", f.Seq)
			}
			if ef := gwExpectClose(t, ws, tt.wantClose, tt.wantClose.Slug()); ef.Message != "bye" && ef.Message != tt.err.Error() {
				t.Errorf("error message %q, want the error's text %q", ef.Message, tt.err)
			}
			h.waitIdle()
		})
	}
}

func TestGatewayCloseAllDrainCarriesEndpoints(t *testing.T) {
	testenv.NoLeaks(t)
	h := startGW(t, Config{}, nil)
	a, b := h.dial(nil), h.dial(nil)
	gwHello(t, a, "alice")
	gwHello(t, b, "bob")
	eps := []string{"ws://n2/v1/connect"}
	h.g.CloseAll(protocol.Errorf(protocol.ErrMoved, "node draining"), eps)
	for _, ws := range []*websocket.Conn{a, b} {
		ef := gwExpectClose(t, ws, protocol.CloseMoved, protocol.CloseMoved.Slug())
		if !slices.Equal(ef.Endpoints, eps) {
			t.Errorf("endpoints %q, want %q", ef.Endpoints, eps)
		}
	}
	h.waitIdle()
	if gone := h.hub.goneCounts(); len(gone) != 2 {
		t.Errorf("Gone calls %v, want two", gone)
	}
}

func TestGatewayShutdown(t *testing.T) {
	testenv.NoLeaks(t)
	h := startGW(t, Config{}, nil)
	var welcomed []*websocket.Conn
	for i := range 3 {
		ws := h.dial(nil)
		gwHello(t, ws, fmt.Sprintf("u%d", i))
		welcomed = append(welcomed, ws)
	}
	silent := h.dial(nil) // upgraded, no hello yet
	for h.g.Connections() != 4 {
		time.Sleep(time.Millisecond)
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- h.g.Shutdown(ctx)
	}()
	for _, ws := range append(welcomed, silent) {
		gwExpectClose(t, ws, protocol.CloseGoingAway, protocol.CloseGoingAway.Slug())
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := h.g.Connections(); n != 0 {
		t.Errorf("Connections() after Shutdown = %d", n)
	}
	if gone := h.hub.goneCounts(); len(gone) != 3 {
		t.Errorf("Gone calls %v, want one per welcomed connection", gone)
	}
	if err := h.g.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}

	// A client arriving after shutdown learns why.
	late := h.dial(nil)
	gwExpectClose(t, late, protocol.CloseGoingAway, protocol.CloseGoingAway.Slug())
}

func TestGatewayShutdownCutsWhenContextEnds(t *testing.T) {
	testenv.NoLeaks(t)
	hub := newGwFakeHub()
	h := startGW(t, Config{}, hub)
	ws := h.dial(nil)
	gwHello(t, ws, "alice")
	// The client stops reading with far more queued than the socket buffers
	// hold, so the writer is stuck in a write (up to WriteTimeout) when the
	// context ends.
	sink := h.hub.sink(t)
	frame := protocol.AppendMessage(nil, 1, "m", 0, json.RawMessage(`"`+strings.Repeat("z", 64<<10)+`"`))
	for range 1024 {
		if !sink.Send(1, frame) {
			t.Fatal("queue overflowed")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := h.g.Shutdown(ctx)
	if !errors.Is(err, ErrShutdownForced) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want ErrShutdownForced wrapping DeadlineExceeded", err)
	}
	if n := h.g.Connections(); n != 0 {
		t.Errorf("Connections() = %d after Shutdown", n)
	}
}

func TestGatewayBlockedHelloIsBounded(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		shutdown  bool
		wantClose protocol.CloseCode
		wantSlug  string
	}{
		{name: "HelloTimeout ends it", cfg: Config{HelloTimeout: 100 * time.Millisecond},
			wantClose: protocol.CloseTryAgainLater, wantSlug: protocol.CloseTryAgainLater.Slug()},
		{name: "Shutdown ends it", shutdown: true, wantClose: protocol.CloseGoingAway, wantSlug: protocol.CloseGoingAway.Slug()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testenv.NoLeaks(t)
			hub := newGwFakeHub()
			hub.helloBlock = make(chan struct{})
			h := startGW(t, tt.cfg, hub)
			ws := h.dial(nil)
			gwSend(t, ws, `{"type":"hello","token":"good-a"}`)
			<-hub.helloBlock
			done := make(chan error, 1)
			if tt.shutdown {
				go func() { done <- h.g.Shutdown(context.Background()) }()
			}
			gwExpectClose(t, ws, tt.wantClose, tt.wantSlug)
			if tt.shutdown {
				if err := <-done; err != nil {
					t.Errorf("Shutdown: %v", err)
				}
			}
			h.waitIdle()
			if gone := hub.goneCounts(); len(gone) != 0 {
				t.Errorf("Gone calls %v for a refused hello", gone)
			}
		})
	}
}

func TestGatewayHubPanicIsContained(t *testing.T) {
	tests := []struct {
		panicOn string
		send    []string
		welcome bool
	}{
		{panicOn: "hello", send: []string{`{"type":"hello","token":"good-a"}`}},
		{panicOn: "ack", send: []string{`{"type":"hello","token":"good-a"}`, `{"type":"ack","seq":1}`}, welcome: true},
	}
	for _, tt := range tests {
		t.Run(tt.panicOn, func(t *testing.T) {
			testenv.NoLeaks(t)
			hub := newGwFakeHub()
			hub.panicOn = tt.panicOn
			h := startGW(t, Config{}, hub)
			ws := h.dial(nil)
			for i, f := range tt.send {
				gwSend(t, ws, f)
				if i == 0 && tt.welcome {
					gwMustRead(t, ws, protocol.TypeWelcome)
				}
			}
			gwExpectClose(t, ws, protocol.CloseInternal, protocol.CloseInternal.Slug())
			h.waitIdle()
			if gone := hub.goneCounts(); tt.welcome != (len(gone) == 1) {
				t.Errorf("Gone calls %v (welcomed %v)", gone, tt.welcome)
			}
			// The gateway keeps serving others.
			hub.panicOn = ""
			other := h.dial(nil)
			gwHello(t, other, "b")
		})
	}
}

func TestGatewayRejectsNonWebSocketRequests(t *testing.T) {
	testenv.NoLeaks(t)
	upgrade := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
	with := func(k, v string) http.Header {
		h := upgrade.Clone()
		h.Set(k, v)
		return h
	}
	tests := []struct {
		name     string
		origin   func(*http.Request) bool
		header   http.Header
		want     int
		wantJSON bool
	}{
		{name: "plain GET", want: http.StatusBadRequest},
		{name: "origin refused", origin: func(*http.Request) bool { return false },
			header: with("Origin", "https://evil.example"), want: http.StatusForbidden, wantJSON: true},
		{name: "default policy: other host", header: with("Origin", "https://evil.example"), want: http.StatusForbidden, wantJSON: true},
		{name: "origin refused, plain GET", origin: func(*http.Request) bool { return false },
			header: http.Header{"Origin": {"https://evil.example"}}, want: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.CheckOrigin, cfg.Logger = tt.origin, slog.New(slog.DiscardHandler)
			g, err := New(cfg, gwFakeAuth, newGwFakeHub())
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, "/v1/connect", nil)
			for k, v := range tt.header {
				req.Header[k] = v
			}
			g.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Errorf("status %d, want %d", rec.Code, tt.want)
			}
			if tt.wantJSON {
				var body protocol.Error
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error == "" ||
					rec.Header().Get("Content-Type") != "application/json" {
					t.Errorf("body %q (%s), want a JSON {\"error\":…}", rec.Body, rec.Header().Get("Content-Type"))
				}
			}
			if g.Connections() != 0 {
				t.Errorf("Connections() = %d", g.Connections())
			}
			g.mu.Lock()
			slots := g.slots
			g.mu.Unlock()
			if slots != 0 {
				t.Errorf("%d connection slots held after a refused upgrade", slots)
			}
		})
	}
}

func TestGatewayConfigValidate(t *testing.T) {
	with := func(f func(*Config)) Config {
		c := DefaultConfig()
		f(&c)
		return c
	}
	tests := []struct {
		name  string
		cfg   Config
		field string // "" = valid
	}{
		{name: "defaults are valid", cfg: DefaultConfig()},
		{name: "zero frame limit", cfg: with(func(c *Config) { c.MaxFrameBytes = 0 }), field: "MaxFrameBytes"},
		{name: "negative hello timeout", cfg: with(func(c *Config) { c.HelloTimeout = -time.Second }), field: "HelloTimeout"},
		{name: "zero heartbeat", cfg: with(func(c *Config) { c.Heartbeat = 0 }), field: "Heartbeat"},
		{name: "negative ping interval", cfg: with(func(c *Config) { c.PingInterval = -1 }), field: "PingInterval"},
		{name: "zero write timeout", cfg: with(func(c *Config) { c.WriteTimeout = 0 }), field: "WriteTimeout"},
		{name: "negative send queue", cfg: with(func(c *Config) { c.SendQueue = -1 }), field: "SendQueue"},
		{name: "zero config", cfg: Config{}, field: "MaxFrameBytes"},
		{name: "limits set", cfg: with(func(c *Config) {
			c.MaxConnections, c.MaxConnectionsPerUser, c.ConnectRate, c.FrameRate = 20_000, 16, 0.5, 100
		})},
		{name: "negative max connections", cfg: with(func(c *Config) { c.MaxConnections = -1 }), field: "MaxConnections"},
		{name: "negative per user", cfg: with(func(c *Config) { c.MaxConnectionsPerUser = -1 }), field: "MaxConnectionsPerUser"},
		{name: "negative connect rate", cfg: with(func(c *Config) { c.ConnectRate = -0.5 }), field: "ConnectRate"},
		{name: "NaN frame rate", cfg: with(func(c *Config) { c.FrameRate = math.NaN() }), field: "FrameRate"},
		{name: "infinite frame rate", cfg: with(func(c *Config) { c.FrameRate = math.Inf(1) }), field: "FrameRate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("Validate = %v, want ErrConfig naming %s", err, tt.field)
			}
			if g, err := New(tt.cfg, gwFakeAuth, newGwFakeHub()); err == nil || g != nil {
				t.Error("New accepted an invalid config")
			}
		})
	}
}

func TestGwBearerToken(t *testing.T) {
	tests := []struct{ header, want string }{
		{"", ""},
		{"Bearer abc", "abc"},
		{"bearer  abc ", "abc"},
		{"BEARER abc", "abc"},
		{"Basic abc", ""},
		{"Bearer", ""},
		{"Bearerabc", ""},
	}
	for _, tt := range tests {
		if got := bearerToken(tt.header); got != tt.want {
			t.Errorf("bearerToken(%q) = %q, want %q", tt.header, got, tt.want)
		}
	}
}

func TestGwAppendPong(t *testing.T) {
	for _, id := range []string{"", "1", `"x"`, `{"a":[1, 2]}`} {
		got := protocol.AppendPong(nil, []byte(id))
		var p protocol.Pong
		if err := json.Unmarshal(got, &p); err != nil || p.Type != protocol.TypePong || !bytes.Equal(p.ID, []byte(id)) {
			t.Errorf("protocol.AppendPong(%q) = %s (%v)", id, got, err)
		}
	}
}

// dialSmallBuffers dials with a small client receive buffer and shrinks the
// server's send buffer too, so that a client that reads slowly or not at
// all makes the server's writes block after a few KiB instead of megabytes.
func (h *gwHarness) dialSmallBuffers(size int) (*websocket.Conn, *conn) {
	h.t.Helper()
	d := websocket.Dialer{TLSClientConfig: h.clientTLS, NetDial: func(network, addr string) (net.Conn, error) {
		nc, err := net.Dial(network, addr)
		if err == nil {
			err = nc.(*net.TCPConn).SetReadBuffer(size)
		}
		return nc, err
	}}
	before := h.g.snapshot()
	ws, resp, err := d.Dial(h.url, nil)
	if err != nil {
		h.t.Fatalf("dial: %v", err)
	}
	resp.Body.Close()
	h.t.Cleanup(func() { ws.Close() })
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, c := range h.g.snapshot() {
			if !slices.Contains(before, c) {
				socket := c.nc
				if tc, ok := socket.(*tls.Conn); ok {
					socket = tc.NetConn()
				}
				bufs, ok := socket.(interface{ SetWriteBuffer(int) error })
				if !ok {
					h.t.Fatalf("cannot shrink the send buffer of a %T", socket)
				}
				if err := bufs.SetWriteBuffer(size); err != nil {
					h.t.Fatal(err)
				}
				return ws, c
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatal("the gateway never registered the connection")
		}
		time.Sleep(time.Millisecond)
	}
}

// A client that sends WebSocket pings but does not read must not make the
// server hold a pong for each of them: every ping gets its own pong, but
// at most maxQueuedPongs wait for a writer stuck on the unread socket;
// past that the client is flooding, and the server gives up on it by
// itself.
func TestGatewayPingFloodIsBounded(t *testing.T) {
	testenv.NoLeaks(t)
	h := startGW(t, Config{WriteTimeout: time.Second}, nil)
	ws, c := h.dialSmallBuffers(4096)
	gwHello(t, ws, "alice")
	payload := bytes.Repeat([]byte{'p'}, wsMaxControlPayload)
	const bound = maxQueuedPongs * (2 + wsMaxControlPayload)
	largest := 0
	ctlLen := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.ctl)
	}
	for i := range 20_000 {
		if err := ws.WriteControl(websocket.PingMessage, payload, time.Now().Add(5*time.Second)); err != nil {
			break // the server gave up on us
		}
		if i%100 == 0 {
			largest = max(largest, ctlLen())
		}
	}
	for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		largest = max(largest, ctlLen())
	}
	if largest > bound {
		t.Errorf("the server held %d bytes of pongs for a client that does not read, want at most %d", largest, bound)
	}
	h.waitIdle() // without the client's help: it still does not read
}

// RFC 6455 §5.5.2: every ping is answered by a pong with its payload, in
// order, however many come back to back.
func TestGatewayEveryPingGetsItsPong(t *testing.T) {
	testenv.NoLeaks(t)
	h := startGW(t, Config{}, nil)
	ws := h.dial(nil)
	gwHello(t, ws, "alice")
	var mu sync.Mutex
	var pongs []string
	ws.SetPongHandler(func(p string) error {
		mu.Lock()
		pongs = append(pongs, p)
		mu.Unlock()
		return nil
	})
	var want []string
	for i := range 10 {
		p := fmt.Sprintf("ping-%d", i)
		want = append(want, p)
		if err := ws.WriteControl(websocket.PingMessage, []byte(p), time.Now().Add(5*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	// The pongs are written ahead of the answer to this later ping.
	gwSend(t, ws, `{"type":"ping","id":"after"}`)
	gwMustRead(t, ws, protocol.TypePong)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(pongs, want) {
		t.Errorf("pongs %q, want %q", pongs, want)
	}
}

// A client that reads steadily but more slowly than a backlog arrives (a
// resume replay on a slow link) must get all of it: WriteTimeout bounds how
// long one write may stall, not how long the whole backlog may take.
func TestGatewaySlowReaderGetsItsBacklog(t *testing.T) {
	testenv.NoLeaks(t)
	const (
		// Generous: with buffers this small a write may wait for the
		// kernel's zero-window probes (hundreds of ms) on a busy machine.
		writeTimeout = time.Second
		frames       = 64
		readEvery    = 35 * time.Millisecond // 64 frames take 2.2 s, twice the WriteTimeout
	)
	h := startGW(t, Config{WriteTimeout: writeTimeout}, nil)
	ws, _ := h.dialSmallBuffers(16 << 10)
	gwHello(t, ws, "alice")
	sink := h.hub.sink(t)
	data := json.RawMessage(`"` + strings.Repeat("z", 16<<10) + `"`)
	for seq := uint64(1); seq <= frames; seq++ {
		if !sink.Send(seq, protocol.AppendMessage(nil, seq, "m", 0, data)) {
			t.Fatalf("Send %d failed", seq)
		}
	}
	for seq := uint64(1); seq <= frames; seq++ {
		time.Sleep(readEvery)
		f, err := gwRead(t, ws)
		if err != nil {
			t.Fatalf("message %d of %d: %v (the server gave up on a client that kept reading)", seq, frames, err)
		}
		if f.Type != protocol.TypeMessage || f.Seq != seq {
			t.Fatalf("got %.60s, want message %d", f.raw, seq)
		}
	}
}

// The socket is not read while Hub.Hello runs, so the client's pongs wait
// in it: a hello that takes longer than 2.5 ping intervals (a Raft commit,
// a takeover) must not count as a silent client.
func TestGatewaySlowHelloIsNotAReadTimeout(t *testing.T) {
	testenv.NoLeaks(t)
	hub := newGwFakeHub()
	hub.helloDelay = 400 * time.Millisecond
	h := startGW(t, Config{PingInterval: 40 * time.Millisecond, Heartbeat: time.Hour, HelloTimeout: 5 * time.Second}, hub)
	ws := h.dial(nil) // gorilla answers pings while it reads
	gwSend(t, ws, `{"type":"hello","token":"good-alice"}`)
	if f, err := gwRead(t, ws); err != nil || f.Type != protocol.TypeWelcome {
		t.Fatalf("got %s, %v; want the welcome", f.raw, err)
	}
	gwSend(t, ws, `{"type":"ping","id":1}`)
	gwMustRead(t, ws, protocol.TypePong)
}

// gwFailConn is a connection whose writes fail, as on a timeout in the
// middle of a frame; it counts them.
type gwFailConn struct {
	net.Conn // nil: only what the gateway's writer and teardown use is here
	mu       sync.Mutex
	writes   int
	closed   bool
}

func (f *gwFailConn) Write(b []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	return len(b) / 2, errors.New("i/o timeout, half the buffer written")
}
func (f *gwFailConn) SetWriteDeadline(time.Time) error { return nil }
func (f *gwFailConn) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// gwHookHandler calls hook for every record logged with message msg.
type gwHookHandler struct {
	slog.Handler
	msg  string
	hook func()
}

func (h gwHookHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.hook()
	}
	return h.Handler.Handle(ctx, r)
}

func (h gwHookHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h.Handler = h.Handler.WithAttrs(as)
	return h
}

func (h gwHookHandler) WithGroup(name string) slog.Handler {
	h.Handler = h.Handler.WithGroup(name)
	return h
}

// After a write fails part way through a frame, nothing more may be
// written to the socket: the bytes would land inside the broken frame.
// Until the connection is torn down, a Send must not start another writer.
func TestGatewayFailedWriteIsTheLastWrite(t *testing.T) {
	testenv.NoLeaks(t)
	fc := &gwFailConn{}
	var c *conn
	var once sync.Once
	base := slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})
	hook := gwHookHandler{Handler: base, msg: "write ended", hook: func() {
		once.Do(func() {
			// A hub delivery in the window between the failed write and
			// the teardown.
			c.Send(2, protocol.AppendMessage(nil, 2, "m2", 0, json.RawMessage(`{}`)))
			time.Sleep(50 * time.Millisecond) // time for a second writer to write
		})
	}}
	cfg := DefaultConfig()
	cfg.Logger = slog.New(hook)
	g, err := New(cfg, gwFakeAuth, newGwFakeHub())
	if err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	c = newConn(g, fc, "")
	g.conns[c] = struct{}{}
	g.wg.Add(1)
	g.mu.Unlock()

	c.Send(1, protocol.AppendMessage(nil, 1, "m1", 0, json.RawMessage(`{}`)))
	for deadline := time.Now().Add(5 * time.Second); g.Connections() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the connection never finished")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.writes != 1 || !fc.closed {
		t.Errorf("%d writes (closed %v), want exactly the one that failed, then the close", fc.writes, fc.closed)
	}
}

// An idle connection holds no writer goroutine, even when the sweeper
// visits it more often than a writer lingers: a visit with nothing due
// must not keep the writer waiting.
func TestGatewayIdleConnectionHasNoWriter(t *testing.T) {
	testenv.NoLeaks(t)
	// The sweeper visits every 50 ms; nothing is due for ten minutes.
	h := startGW(t, Config{HelloTimeout: 200 * time.Millisecond, PingInterval: 10 * time.Minute, Heartbeat: 10 * time.Minute}, nil)
	ws := h.dial(nil)
	gwHello(t, ws, "alice")
	c := h.g.snapshot()[0]
	deadline := time.Now().Add(10 * writerLinger)
	for {
		c.mu.Lock()
		writing := c.writing
		c.mu.Unlock()
		if !writing {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a writer still runs %v after the welcome on an idle connection", 10*writerLinger)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
