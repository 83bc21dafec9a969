package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// keySet is one fetched JWK Set, never changed once stored.
type keySet struct {
	keys    []key
	kids    map[string]bool
	fetched time.Time
}

// knows tells whether set can speak for kid: it is there and, if the
// token names a kid, has it.
func (s *keySet) knows(kid string) bool {
	return s != nil && (kid == "" || s.kids[kid])
}

// all returns the set's keys; none for a nil set.
func (s *keySet) all() []key {
	if s == nil {
		return nil
	}
	return s.keys
}

// jwks caches the JWK Set at a URL. At most one fetch runs at a time and
// fetches start at most once per minInterval; a verification that needs a
// fetch waits for the one in flight (or starts it), every other
// verification reads the cached set without waiting. A failed fetch keeps
// the cached set.
type jwks struct {
	url         string
	logURL      string // url without user info or query, for logs
	client      *http.Client
	timeout     time.Duration
	maxBytes    int64
	minInterval time.Duration
	maxAge      time.Duration
	now         func() time.Time
	log         *slog.Logger

	set atomic.Pointer[keySet] // nil until the first fetch succeeds

	ctx    context.Context // ends with close, cancelling a fetch in flight
	cancel context.CancelFunc
	wg     sync.WaitGroup // the fetch in flight

	mu        sync.Mutex // guards what follows
	flight    *flight    // the fetch in flight, if any
	started   bool       // a fetch was ever started
	lastStart time.Time
	closed    bool
}

// flight is one fetch; done closes when it ends.
type flight struct{ done chan struct{} }

func newJWKS(rawURL string, cfg Config, log *slog.Logger) *jwks {
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: cfg.JWKSTimeout}
	}
	logURL := "(unparsable)"
	if u, err := url.Parse(rawURL); err == nil {
		logURL = (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	}
	j := &jwks{
		url: rawURL, logURL: logURL, client: client,
		timeout: cfg.JWKSTimeout, maxBytes: cfg.JWKSMaxBytes,
		minInterval: cfg.JWKSMinInterval, maxAge: cfg.JWKSMaxAge,
		now: cfg.Now, log: log,
	}
	j.ctx, j.cancel = context.WithCancel(context.Background())
	return j
}

// snapshot returns the cached set, nil before the first good fetch.
func (j *jwks) snapshot() *keySet { return j.set.Load() }

// start returns the fetch in flight, or starts one if minInterval has
// passed since the last start; nil if neither.
func (j *jwks) start() *flight {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.flight != nil {
		return j.flight
	}
	now := j.now()
	if j.closed || j.started && now.Sub(j.lastStart) < j.minInterval {
		return nil
	}
	j.started, j.lastStart = true, now
	f := &flight{done: make(chan struct{})}
	j.flight = f
	j.wg.Add(1)
	go j.run(f)
	return f
}

func (j *jwks) run(f *flight) {
	defer j.wg.Done()
	set, skipped, err := j.fetch()
	if err != nil {
		j.log.Warn("JWKS fetch failed; the cached keys stay in force", "url", j.logURL, "err", err)
	} else {
		set.fetched = j.now()
		prev := j.set.Swap(set)
		// A new set of keys is news for an operator rotating them.
		level := slog.LevelDebug
		if prev == nil || len(prev.keys) != len(set.keys) || !maps.Equal(prev.kids, set.kids) {
			level = slog.LevelInfo
		}
		j.log.Log(context.Background(), level, "JWKS fetched", "url", j.logURL, "keys", len(set.keys), "skipped", skipped)
	}
	j.mu.Lock()
	j.flight = nil
	j.mu.Unlock()
	close(f.done)
}

// refresh waits for a fetch (the one in flight, or a new one if the rate
// allows) and tells whether a set other than seen is now in force, which
// may also be the work of a fetch that ended since seen was read. It
// returns false when ctx ends first.
func (j *jwks) refresh(ctx context.Context, seen *keySet) bool {
	if f := j.start(); f != nil {
		select {
		case <-f.done:
		case <-ctx.Done():
			return false
		}
	}
	return j.set.Load() != seen
}

// refreshIfStale starts a fetch, without waiting for it, when the cached
// set is older than maxAge.
func (j *jwks) refreshIfStale() {
	if s := j.set.Load(); s != nil && j.now().Sub(s.fetched) >= j.maxAge {
		j.start()
	}
}

// close cancels a fetch in flight, waits for it, and starts no more.
func (j *jwks) close() {
	j.mu.Lock()
	j.closed = true
	j.mu.Unlock()
	j.cancel()
	j.wg.Wait()
}

// fetch GETs the set, bounded in time and size.
func (j *jwks) fetch() (*keySet, int, error) {
	ctx, cancel := context.WithTimeout(j.ctx, j.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, 0, errors.New("cannot build the request")
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		// A *url.Error quotes the URL, whose query may hold a credential.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("HTTP status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, j.maxBytes+1))
	if err != nil {
		return nil, 0, fmt.Errorf("reading the body: %w", err)
	}
	if int64(len(body)) > j.maxBytes {
		return nil, 0, fmt.Errorf("body larger than %d bytes", j.maxBytes)
	}
	keys, skipped, err := parseJWKS(body)
	if err != nil {
		return nil, 0, err
	}
	set := &keySet{keys: keys, kids: make(map[string]bool, len(keys))}
	for _, k := range keys {
		if k.kid != "" {
			set.kids[k.kid] = true
		}
	}
	return set, skipped, nil
}

// jwk is the part of a JSON Web Key (RFC 7517, 7518, 8037) a verifier
// reads. Private members, if any, are ignored.
type jwk struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid"`
	Use    string   `json:"use"`
	Alg    string   `json:"alg"`
	KeyOps []string `json:"key_ops"`
	Crv    string   `json:"crv"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
}

// parseJWKS returns the usable keys of a JWK Set and how many it skipped:
// keys of other types, curves or algorithms, encryption keys and malformed
// keys are skipped, so one odd key does not cost the others. A document
// that is not a JWK Set, or has no usable key, is an error: it must not
// replace a good cached set.
func parseJWKS(data []byte) ([]key, int, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, 0, errors.New("not a JWK Set: malformed JSON")
	}
	var keys []key
	skipped := 0
	for _, raw := range doc.Keys {
		var j jwk
		if json.Unmarshal(raw, &j) != nil {
			skipped++
			continue
		}
		k, err := j.key()
		if err != nil {
			skipped++
			continue
		}
		if len(keys) == maxKeys {
			return nil, 0, fmt.Errorf("more than %d usable keys", maxKeys)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, 0, fmt.Errorf("no usable key among %d", len(doc.Keys))
	}
	return keys, skipped, nil
}

// key returns j as a verification key, or why it is not one.
func (j jwk) key() (key, error) {
	if j.Use != "" && j.Use != "sig" {
		return key{}, fmt.Errorf("use %q", j.Use)
	}
	if len(j.KeyOps) > 0 && !slices.Contains(j.KeyOps, "verify") {
		return key{}, errors.New("key_ops without verify")
	}
	var pub any
	switch {
	case j.Kty == "RSA":
		n, err := b64(j.N, 0)
		if err != nil {
			return key{}, fmt.Errorf("n: %w", err)
		}
		e, err := b64(j.E, 0)
		if err != nil || len(e) == 0 || len(e) > 4 {
			return key{}, errors.New("bad e")
		}
		pub = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	case j.Kty == "EC" && j.Crv == "P-256":
		x, err := b64(j.X, 32)
		if err != nil {
			return key{}, fmt.Errorf("x: %w", err)
		}
		y, err := b64(j.Y, 32)
		if err != nil {
			return key{}, fmt.Errorf("y: %w", err)
		}
		p, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return key{}, errors.New("point not on P-256")
		}
		pub = p
	case j.Kty == "OKP" && j.Crv == "Ed25519":
		x, err := b64(j.X, ed25519.PublicKeySize)
		if err != nil {
			return key{}, fmt.Errorf("x: %w", err)
		}
		pub = ed25519.PublicKey(x)
	default:
		return key{}, fmt.Errorf("unsupported kty %q crv %q", j.Kty, j.Crv)
	}
	k, err := publicKey(pub)
	if err != nil {
		return key{}, err
	}
	if j.Alg != "" && j.Alg != k.alg {
		return key{}, fmt.Errorf("alg %q", j.Alg)
	}
	k.kid = j.Kid
	return k, nil
}

// b64 decodes a base64url member (RFC 7515 §2: no padding; trailing '='
// is tolerated), of exactly size bytes unless size is 0.
func b64(s string, size int) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, errors.New("not base64url")
	}
	if size > 0 && len(b) != size {
		return nil, fmt.Errorf("%d bytes, want %d", len(b), size)
	}
	return b, nil
}
