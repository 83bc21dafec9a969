package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard/switchboard/internal/testenv"
)

func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }

// t0 is the fake clock's start.
var t0 = time.Unix(1_700_000_000, 0)

// clock is a fake clock tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// signer is a private key with the algorithm it signs for.
type signer struct {
	method jwt.SigningMethod
	priv   crypto.Signer
}

func (s signer) public() crypto.PublicKey { return s.priv.Public() }

// Keys are slow to make (RSA): each kind is made once per test binary,
// and more on demand.
var (
	keyMu    sync.Mutex
	keyCache = map[string][]signer{}
)

// testKey returns the i-th test key of kind "rsa", "ec" or "ed".
func testKey(t testing.TB, kind string, i int) signer {
	t.Helper()
	keyMu.Lock()
	defer keyMu.Unlock()
	for len(keyCache[kind]) <= i {
		var s signer
		var err error
		switch kind {
		case "rsa":
			s.method = jwt.SigningMethodRS256
			s.priv, err = rsa.GenerateKey(rand.Reader, 2048)
		case "ec":
			s.method = jwt.SigningMethodES256
			s.priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		case "ed":
			s.method = jwt.SigningMethodEdDSA
			_, s.priv, err = ed25519.GenerateKey(rand.Reader)
		default:
			t.Fatalf("no key kind %q", kind)
		}
		if err != nil {
			t.Fatal(err)
		}
		keyCache[kind] = append(keyCache[kind], s)
	}
	return keyCache[kind][i]
}

// claims returns valid claims for user alice at the fake clock's start,
// changed by set (a nil value deletes the claim).
func claims(set map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "alice", "exp": t0.Add(time.Hour).Unix(), "iat": t0.Unix()}
	for k, v := range set {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// sign returns a token with claims c signed by s, with kid in its header
// when not empty.
func sign(t testing.TB, s signer, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(s.method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	str, err := tok.SignedString(s.priv)
	if err != nil {
		t.Fatal(err)
	}
	return str
}

// signHS256 returns a token with claims c signed with secret.
func signHS256(t testing.TB, secret []byte, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	str, err := tok.SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return str
}

// pemPublic returns pub as a PUBLIC KEY block.
func pemPublic(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("PUBLIC KEY", der)
}

// pemBlock returns der as a PEM block of type typ.
func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// pemCert returns a self-signed certificate of s's key as a CERTIFICATE
// block, already expired: its dates must not matter.
func pemCert(t testing.TB, s signer) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "issuer"},
		NotBefore:    t0.Add(-48 * time.Hour),
		NotAfter:     t0.Add(-24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.public(), s.priv)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("CERTIFICATE", der)
}

// writeFile writes data to path with a modification time distinct from
// any earlier write's, as a slower writer would.
func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := writeVersion(path, data); err != nil {
		t.Fatal(err)
	}
}

// writeVersion is writeFile for goroutines other than the test's.
func writeVersion(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	mod := time.Now().Add(time.Duration(fileGen.Add(1)) * time.Second)
	return os.Chtimes(path, mod, mod)
}

var fileGen atomic.Int64

// keyFilePath writes blocks into a new PEM file and returns its path.
func keyFilePath(t testing.TB, blocks ...[]byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keys.pem")
	writeFile(t, p, bytes.Join(blocks, nil))
	return p
}

// jwkOf returns pub as a JWK with kid.
func jwkOf(t testing.TB, pub crypto.PublicKey, kid string) map[string]any {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	k := map[string]any{"kid": kid}
	switch p := pub.(type) {
	case *rsa.PublicKey:
		k["kty"], k["n"], k["e"] = "RSA", enc(p.N.Bytes()), enc(big.NewInt(int64(p.E)).Bytes())
	case *ecdsa.PublicKey:
		b, err := p.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		k["kty"], k["crv"], k["x"], k["y"] = "EC", "P-256", enc(b[1:33]), enc(b[33:])
	case ed25519.PublicKey:
		k["kty"], k["crv"], k["x"] = "OKP", "Ed25519", enc(p)
	default:
		t.Fatalf("jwkOf %T", pub)
	}
	return k
}

// jwksServer serves a JWK Set that tests change, counting requests.
type jwksServer struct {
	*httptest.Server
	fetches atomic.Int64

	mu   sync.Mutex
	body []byte
	// status, when not 0 or 200, is answered instead of the set; hang
	// makes requests wait until the test ends or the client gives up.
	status int
	hang   bool
	// hung receives a value for each request that starts hanging.
	hung    chan struct{}
	release chan struct{}
}

func newJWKSServer(t testing.TB, tlsOn bool) *jwksServer {
	s := &jwksServer{hung: make(chan struct{}, 100), release: make(chan struct{})}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		body, status, hang := s.body, s.status, s.hang
		s.mu.Unlock()
		if hang {
			s.hung <- struct{}{}
			select {
			case <-s.release:
			case <-r.Context().Done():
			}
			return
		}
		if status != 0 && status != http.StatusOK {
			http.Error(w, "no", status)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(body)
	})
	if tlsOn {
		s.Server = httptest.NewTLSServer(h)
	} else {
		s.Server = httptest.NewServer(h)
	}
	t.Cleanup(func() {
		close(s.release)
		s.Close()
	})
	return s
}

// publish makes the server serve a set of keys.
func (s *jwksServer) publish(t testing.TB, keys ...map[string]any) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	s.serve(body)
}

// serve makes the server answer with body, healthy again.
func (s *jwksServer) serve(body []byte) {
	s.mu.Lock()
	s.body, s.status, s.hang = body, 0, false
	s.mu.Unlock()
}

func (s *jwksServer) fail(status int) {
	s.mu.Lock()
	s.status, s.hang = status, false
	s.mu.Unlock()
}

func (s *jwksServer) hangs() {
	s.mu.Lock()
	s.hang = true
	s.mu.Unlock()
}

// testConfig is DefaultConfig on clk, with logs kept in the test's output
// only when it fails.
func testConfig(t testing.TB, clk *clock) Config {
	cfg := DefaultConfig()
	cfg.Now = clk.Now
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return cfg
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// newVerifier is New for tests: it fails the test on error and closes the
// verifier when the test ends.
func newVerifier(t testing.TB, cfg Config) *Verifier {
	t.Helper()
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

// waitFetches waits until the server has seen n requests and the verifier
// has no fetch in flight.
func waitFetches(t testing.TB, s *jwksServer, v *Verifier, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v.jwks.mu.Lock()
		idle := v.jwks.flight == nil
		v.jwks.mu.Unlock()
		if s.fetches.Load() >= n && idle {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fetches: %d, want %d (in flight: %v)", s.fetches.Load(), n, !idle)
		}
		time.Sleep(time.Millisecond)
	}
}
