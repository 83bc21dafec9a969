package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/switchboard/switchboard/internal/token"
	"github.com/switchboard/switchboard/protocol"
)

// The §6 security flags on the real binary: an ES256 key file and no token
// secret, a required issuer and audience, allowed origins, and the
// connection limits, each with its answer.
func TestSecurityFlags(t *testing.T) {
	f := newFleet(t)
	ports := freePorts(t, 3)
	_, apiFile, adminFile := writeSecrets(t, f.dir)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	keyFile := filepath.Join(f.dir, "token-keys.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	public := fmt.Sprintf("127.0.0.1:%d", ports[0])
	const maxConns = 4
	p := f.start("secure", "", []string{
		"--node-id", "secure", "--data-dir", filepath.Join(f.dir, "secure"), "--bootstrap",
		"--public-addr", public,
		"--cluster-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--gossip-addr", fmt.Sprintf("127.0.0.1:%d", ports[2]),
		"--api-key-file", apiFile, "--admin-key-file", adminFile,
		"--token-public-key-file", keyFile,
		"--token-issuer", "https://issuer.example", "--token-audience", "trading",
		"--allowed-origins", "https://app.example.com, https://*.example.org",
		"--max-connections", strconv.Itoa(maxConns), "--max-connections-per-user", "1",
		"--client-frame-rate", "20",
	}, []string{"SWITCHBOARD_CONNECT_RATE=1000"})
	base, url := "http://"+public, "ws://"+public+"/v1/connect"
	waitReady(t, base, p)

	es256 := func(user, aud string) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
			"sub": user, "exp": time.Now().Add(time.Hour).Unix(), "iss": "https://issuer.example", "aud": aud,
		}).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	closeAfterHello := func(tok string) (string, int) {
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		ws, _, err := d.Dial(url, nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer ws.Close()
		hello, _ := json.Marshal(protocol.ClientFrame{Type: protocol.TypeHello, Token: tok})
		_ = ws.WriteMessage(websocket.TextMessage, hello)
		return readToClose(t, ws)
	}

	ws, _ := connectWS(t, url, es256("alice", "trading"))
	publishRetry(t, 10*time.Second, base, procAPIKey, "alice", "a1", 1)
	if m := nextFrame(t, ws); m.Type != protocol.TypeMessage || m.Seq != 1 {
		t.Fatalf("want message 1, got %s", m.raw)
	}

	hs256, _ := token.Mint([]byte(procTokenSecret), "bob", time.Hour)
	for name, tok := range map[string]string{
		"wrong audience":           es256("bob", "other"),
		"HS256 without any secret": hs256,
	} {
		if code, cl := closeAfterHello(tok); code != "unauthorized" || cl != int(protocol.CloseUnauthorized) {
			t.Errorf("%s: error %q close %d, want unauthorized 4001", name, code, cl)
		}
	}
	if code, cl := closeAfterHello(es256("alice", "trading")); code != "too_many_connections" || cl != int(protocol.CloseRateLimited) {
		t.Errorf("second connection of alice: error %q close %d, want too_many_connections 4029", code, cl)
	}

	for origin, want := range map[string]int{
		"https://evil.example":    http.StatusForbidden,
		"https://app.example.com": http.StatusSwitchingProtocols,
		"https://a.example.org":   http.StatusSwitchingProtocols,
	} {
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		c, resp, _ := d.Dial(url, http.Header{"Origin": {origin}})
		if c != nil {
			c.Close()
		}
		if resp == nil || resp.StatusCode != want {
			t.Errorf("Origin %s: %v, want %d", origin, resp, want)
		}
	}

	flood, _ := connectWS(t, url, es256("frank", "trading"))
	for i := range 100 {
		_ = flood.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if flood.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"type":"ping","id":%d}`, i))) != nil {
			break
		}
	}
	if code, cl := readToClose(t, flood); code != "rate_limited" || cl != int(protocol.CloseRateLimited) {
		t.Errorf("frame flood: error %q close %d, want rate_limited 4029", code, cl)
	}

	var open []*websocket.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	eventually(t, 10*time.Second, "an upgrade refused with 503 past --max-connections", []*proc{p}, func() bool {
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		c, resp, err := d.Dial(url, nil)
		if err == nil {
			open = append(open, c)
			if len(open) > maxConns {
				t.Fatalf("%d connections open at --max-connections %d", len(open)+1, maxConns)
			}
			return false
		}
		return resp != nil && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != ""
	})

	// Alice, on the node all along, still receives.
	publishRetry(t, 10*time.Second, base, procAPIKey, "alice", "a2", 2)
	if m := nextFrame(t, ws); m.Type != protocol.TypeMessage || m.Seq != 2 {
		t.Fatalf("want message 2, got %s", m.raw)
	}
}

// readToClose reads until the server closes ws and returns the code of
// the error frame before the close ("" if none) and the close code.
func readToClose(t *testing.T, ws *websocket.Conn) (errCode string, closeCode int) {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("want a close, got %v", err)
			}
			return errCode, ce.Code
		}
		var typ struct {
			Type string `json:"type"`
			Code string `json:"code"`
		}
		_ = json.Unmarshal(b, &typ)
		if typ.Type == "error" {
			errCode = typ.Code
		}
	}
}

// Rotating the API key, the admin key and the token secret needs no
// restart: the new key goes in as a second line (both accepted), callers
// move to it, the old line goes; a connected client notices nothing.
func TestKeyRotationWithoutRestart(t *testing.T) {
	f := newFleet(t)
	ports := freePorts(t, 3)
	tokenFile, apiFile, adminFile := writeSecrets(t, f.dir)
	public := fmt.Sprintf("127.0.0.1:%d", ports[0])
	p := f.start("rot", "", []string{
		"--node-id", "rot", "--data-dir", filepath.Join(f.dir, "rot"), "--bootstrap",
		"--public-addr", public,
		"--cluster-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--gossip-addr", fmt.Sprintf("127.0.0.1:%d", ports[2]),
		"--token-secret-file", tokenFile, "--api-key-file", apiFile, "--admin-key-file", adminFile,
	}, nil)
	base, url := "http://"+public, "ws://"+public+"/v1/connect"
	waitReady(t, base, p)
	mint := func(secret, user string) string {
		tok, err := token.Mint([]byte(secret), user, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	ws, _ := connectWS(t, url, mint(procTokenSecret, "alice"))
	seq := 0
	published := func(key string) int {
		seq++
		st, _, body := publish(base, key, "alice", fmt.Sprintf("r%d", seq), seq)
		if st != http.StatusOK {
			seq--
			return st
		}
		if m := nextFrame(t, ws); m.Type != protocol.TypeMessage || m.Seq != uint64(seq) {
			t.Fatalf("want message %d, got %s (%s)", seq, m.raw, body)
		}
		return st
	}
	admin := func(key string) int {
		st, _, _ := request(http.MethodGet, base+"/v1/cluster", key, nil)
		return st
	}
	welcomed := func(secret string) bool {
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		c, _, err := d.Dial(url, nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		hello, _ := json.Marshal(protocol.ClientFrame{Type: protocol.TypeHello, Token: mint(secret, "bob")})
		_ = c.WriteMessage(websocket.TextMessage, hello)
		return nextFrame(t, c).Type == protocol.TypeWelcome
	}
	rewrite := func(path, content string) {
		tmp := path + ".new"
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}

	if published(procAPIKey) != http.StatusOK || admin(procAdminKey) != http.StatusOK || !welcomed(procTokenSecret) {
		t.Fatal("the first keys are not accepted")
	}
	// Step 1: the new keys beside the old ones.
	rewrite(apiFile, "api-2\n"+procAPIKey+"\n")
	rewrite(adminFile, "admin-2\n"+procAdminKey+"\n")
	rewrite(tokenFile, "secret-2\n"+procTokenSecret+"\n")
	eventually(t, 10*time.Second, "the new keys accepted", []*proc{p}, func() bool {
		return published("api-2") == http.StatusOK && admin("admin-2") == http.StatusOK && welcomed("secret-2")
	})
	if published(procAPIKey) != http.StatusOK || admin(procAdminKey) != http.StatusOK || !welcomed(procTokenSecret) {
		t.Fatal("the old keys were refused while both are in the files")
	}
	// Step 2: the old keys withdrawn.
	rewrite(apiFile, "api-2\n")
	rewrite(adminFile, "admin-2\n")
	rewrite(tokenFile, "secret-2\n")
	eventually(t, 10*time.Second, "the old keys refused", []*proc{p}, func() bool {
		return published(procAPIKey) == http.StatusUnauthorized && admin(procAdminKey) == http.StatusUnauthorized && !welcomed(procTokenSecret)
	})
	if published("api-2") != http.StatusOK || admin("admin-2") != http.StatusOK || !welcomed("secret-2") {
		t.Fatal("the new keys were refused")
	}
	// A version without a key is ignored.
	rewrite(apiFile, "\n")
	time.Sleep(1100 * time.Millisecond)
	if published("api-2") != http.StatusOK {
		t.Fatal("an empty key file took the key away")
	}
}
