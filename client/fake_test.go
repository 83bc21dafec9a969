package client

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/switchboard/switchboard/protocol"
)

// fakeServer is a scripted node: each accepted connection reads the hello,
// reports it on hellos, and runs the script for its index (the last script
// repeats).
type fakeServer struct {
	t       *testing.T
	srv     *httptest.Server
	url     string
	scripts []func(*fakeConn)
	hellos  chan protocol.ClientFrame
	closes  chan int // close codes received from the client
	// refreshes are the tokens of refresh frames (holdExpiring).
	refreshes chan string
	conns     atomic.Int32

	stop   chan struct{} // closed at cleanup: handlers stop blocking
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // handlers, waited for at cleanup
}

type fakeConn struct {
	fs    *fakeServer
	ws    *websocket.Conn
	hello protocol.ClientFrame
}

func newFake(t *testing.T, scripts ...func(*fakeConn)) *fakeServer {
	t.Helper()
	return startFake(t, false, scripts)
}

// newFakeTLS is newFake serving wss:// with a certificate of its own CA
// (fs.srv.Certificate()).
func newFakeTLS(t *testing.T, scripts ...func(*fakeConn)) *fakeServer {
	t.Helper()
	return startFake(t, true, scripts)
}

func startFake(t *testing.T, useTLS bool, scripts []func(*fakeConn)) *fakeServer {
	t.Helper()
	fs := &fakeServer{
		t:         t,
		scripts:   scripts,
		hellos:    make(chan protocol.ClientFrame, 64),
		closes:    make(chan int, 64),
		refreshes: make(chan string, 64),
		stop:      make(chan struct{}),
	}
	up := websocket.Upgrader{}
	fs.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/connect" {
			http.NotFound(w, r)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		fs.mu.Lock()
		if fs.closed {
			fs.mu.Unlock()
			return
		}
		fs.wg.Add(1)
		fs.mu.Unlock()
		defer fs.wg.Done()
		n := int(fs.conns.Add(1)) - 1
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, b, err := ws.ReadMessage()
		if err != nil {
			return
		}
		hello, err := protocol.DecodeClientFrame(b)
		if err != nil || hello.Type != protocol.TypeHello {
			t.Errorf("fake: first frame %s is not a hello: %v", b, err)
			return
		}
		select {
		case fs.hellos <- hello:
		case <-fs.stop:
			return
		}
		script := fs.scripts[min(n, len(fs.scripts)-1)]
		script(&fakeConn{fs: fs, ws: ws, hello: hello})
	}))
	if useTLS {
		fs.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the test's
		fs.srv.StartTLS()
	} else {
		fs.srv.Start()
	}
	fs.url = "ws" + strings.TrimPrefix(fs.srv.URL, "http") + "/v1/connect"
	t.Cleanup(func() {
		fs.srv.Close()
		fs.mu.Lock()
		fs.closed = true
		fs.mu.Unlock()
		close(fs.stop)
		fs.wg.Wait()
	})
	return fs
}

// nextHello waits for the next hello the server received.
func (fs *fakeServer) nextHello(t *testing.T) protocol.ClientFrame {
	t.Helper()
	select {
	case h := <-fs.hellos:
		return h
	case <-time.After(5 * time.Second):
		t.Fatalf("no hello at %s", fs.url)
		return protocol.ClientFrame{}
	}
}

func (fc *fakeConn) write(b []byte) error {
	_ = fc.ws.SetWriteDeadline(time.Now().Add(2 * time.Second))
	return fc.ws.WriteMessage(websocket.TextMessage, b)
}

func (fc *fakeConn) welcome(w protocol.Welcome) {
	if w.HeartbeatMS == 0 {
		w.HeartbeatMS = 10_000
	}
	_ = fc.write(protocol.EncodeWelcome(w))
}

// send sends message frames whose data is {"n":seq}.
func (fc *fakeConn) send(seqs ...uint64) {
	for _, s := range seqs {
		data := json.RawMessage(fmt.Sprintf(`{"n":%d}`, s))
		_ = fc.write(protocol.AppendMessage(nil, s, fmt.Sprintf("id-%d", s), 1700000000000+int64(s), data))
	}
}

// closeWith sends an optional error frame and a close frame, then waits for
// the client to answer the close.
func (fc *fakeConn) closeWith(code protocol.CloseCode, endpoints ...string) {
	errCode := code.Slug()
	if errCode != "" {
		_ = fc.write(protocol.EncodeError(errCode, "scripted", endpoints))
	}
	_ = fc.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(code), errCode), time.Now().Add(time.Second))
	fc.drain()
}

// hold keeps the connection open, answering application pings, until the
// client goes away; it reports the client's close code.
func (fc *fakeConn) hold() {
	for {
		_ = fc.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := fc.ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				select {
				case fc.fs.closes <- ce.Code:
				default:
				}
			}
			return
		}
		if f, err := protocol.DecodeClientFrame(b); err == nil && f.Type == protocol.TypePing {
			pong, _ := json.Marshal(protocol.Pong{Type: protocol.TypePong, ID: f.ID})
			_ = fc.write(pong)
		}
	}
}

// drain reads until the client closes or goes silent for a second.
func (fc *fakeConn) drain() {
	for {
		_ = fc.ws.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := fc.ws.ReadMessage(); err != nil {
			return
		}
	}
}

// heartbeat sends heartbeats every interval for the given duration, or
// until the client is gone.
func (fc *fakeConn) heartbeat(every, total time.Duration, seq uint64) {
	for end := time.Now().Add(total); time.Now().Before(end); time.Sleep(every) {
		if fc.write(protocol.AppendHeartbeat(nil, seq)) != nil {
			return
		}
	}
}

// fakeJWT returns an unsigned JWT with claims (the fake does not verify
// tokens; the client reads exp without verifying).
func fakeJWT(t *testing.T, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc(payload) + ".c2ln"
}

// fakeExpiry is the exp of a fakeJWT, decoded on its own so that the fake
// does not trust the client's decoder; 0 when there is none.
func fakeExpiry(token string) int64 {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return 0
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return 0
	}
	var claims struct{ Exp int64 }
	_ = json.Unmarshal(b, &claims)
	return claims.Exp
}

// expiryGrace is how long after exp the fake closes a connection whose
// token expired, as a node does ("within a second after exp").
const expiryGrace = time.Second

// holdExpiring is hold on a node that enforces the token's exp (DESIGN.md
// §3): a refresh whose token expires later than the one in force is
// answered refreshed (unless refuse is set), any other gets an
// unauthorized error frame and changes nothing, and expiryGrace after the
// exp in force the connection is closed with token_expired and 4001. Each
// refresh's token is reported on fs.refreshes.
func (fc *fakeConn) holdExpiring(refuse bool) {
	exp := fakeExpiry(fc.hello.Token)
	for {
		deadline := time.Now().Add(10 * time.Second)
		if exp > 0 {
			deadline = time.Unix(exp, 0).Add(expiryGrace)
		}
		_ = fc.ws.SetReadDeadline(deadline)
		_, b, err := fc.ws.ReadMessage()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && exp > 0 && !time.Now().Before(deadline) {
			_ = fc.write(protocol.EncodeError("token_expired", "token expired", nil))
			_ = fc.ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(int(protocol.CloseUnauthorized), "token_expired"), time.Now().Add(time.Second))
			return
		}
		if err != nil {
			return
		}
		f, err := protocol.DecodeClientFrame(b)
		if err != nil {
			continue
		}
		switch f.Type {
		case protocol.TypePing:
			pong, _ := json.Marshal(protocol.Pong{Type: protocol.TypePong, ID: f.ID})
			_ = fc.write(pong)
		case protocol.TypeRefresh:
			select {
			case fc.fs.refreshes <- f.Token:
			default:
			}
			if next := fakeExpiry(f.Token); !refuse && next > exp {
				exp = next
				_ = fc.write(protocol.EncodeRefreshed(exp))
				continue
			}
			_ = fc.write(protocol.EncodeError("unauthorized", "refresh refused: scripted; the connection keeps its token", nil))
		}
	}
}

// nextRefresh waits for the next refresh token the server received.
func (fs *fakeServer) nextRefresh(t *testing.T) string {
	t.Helper()
	select {
	case tok := <-fs.refreshes:
		return tok
	case <-time.After(10 * time.Second):
		t.Fatalf("no refresh at %s", fs.url)
		return ""
	}
}
