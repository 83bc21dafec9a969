package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The fuzz targets' keys are fixed, so that the seed tokens committed
// under testdata/fuzz stay valid: an Ed25519 and a P-256 key from fixed
// bytes, and the test secret. (The clock is fixed at t0 too.)
func fuzzKeys(t testing.TB) (ed, ec signer) {
	t.Helper()
	ed = signer{jwt.SigningMethodEdDSA, ed25519.NewKeyFromSeed([]byte("switchboard-auth-fuzz-ed25519-k1"))}
	p, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), []byte("switchboard-auth-fuzz-p256-key-1"))
	if err != nil {
		t.Fatal(err)
	}
	return ed, signer{jwt.SigningMethodES256, p}
}

// fuzzVerifier accepts HS256 with the test secret and EdDSA and ES256 with
// the fuzz keys, at t0, with an issuer and audience required.
func fuzzVerifier(f *testing.F) *Verifier {
	ed, ec := fuzzKeys(f)
	path := filepath.Join(f.TempDir(), "keys.pem")
	writeFile(f, path, append(pemPublic(f, ed.public()), pemPublic(f, ec.public())...))
	cfg := DefaultConfig()
	cfg.Secret = secret
	cfg.PublicKeyFile = path
	cfg.Issuer, cfg.Audience = "fuzz-issuer", "switchboard"
	cfg.Now = func() time.Time { return t0 }
	v, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = v.Close() })
	return v
}

// fuzzClaims are claims the fuzz verifier accepts.
func fuzzClaims() jwt.MapClaims {
	return claims(map[string]any{"iss": "fuzz-issuer", "aud": []string{"x", "switchboard"}})
}

// checkVerdict fails t if Verify's answer breaks the package's promises:
// an accepted token names a valid user and a future exp; a refused one
// wraps ErrUnauthorized with a short message that does not repeat it.
func checkVerdict(t *testing.T, token string, id Identity, err error) {
	t.Helper()
	if err == nil {
		if verr := ValidUser(id.User); verr != nil {
			t.Fatalf("accepted a token with user %q: %v", id.User, verr)
		}
		if !id.Expires.After(t0) {
			t.Fatalf("accepted a token expiring at %v", id.Expires)
		}
		return
	}
	if !errors.Is(err, ErrUnauthorized) || (id.User != "" || !id.Expires.IsZero() || id.Channels != nil) {
		t.Fatalf("refused with %v (identity %+v); want ErrUnauthorized and no identity", err, id)
	}
	msg := err.Error()
	if len(msg) > 120 {
		t.Fatalf("error of %d bytes: %q", len(msg), msg)
	}
	if len(token) >= 16 && strings.Contains(msg, token) {
		t.Fatalf("error %q repeats the token", msg)
	}
}

// FuzzVerify feeds Verify arbitrary strings: the whole token parsing path,
// from splitting and base64 to JSON, algorithm choice and signature.
func FuzzVerify(f *testing.F) {
	v := fuzzVerifier(f)
	ed, ec := fuzzKeys(f)
	for _, s := range []string{
		signHS256(f, secret, "", fuzzClaims()),
		sign(f, ed, "", fuzzClaims()),
		sign(f, ec, "kid-1", fuzzClaims()),
		signHS256(f, secret, "", claims(nil)),
		"", ".", "..", "...", "a.b.c", "e30.e30.", "eyJhbGciOiJub25lIn0.e30.",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		id, err := v.Verify(context.Background(), token)
		checkVerdict(t, token, id, err)
	})
}

// FuzzVerifySigned signs arbitrary header and payload JSON with the HS256
// secret, so the fuzzer gets past the signature to the claims.
func FuzzVerifySigned(f *testing.F) {
	v := fuzzVerifier(f)
	payload, err := json.Marshal(fuzzClaims())
	if err != nil {
		f.Fatal(err)
	}
	for _, h := range []string{
		`{"alg":"HS256","typ":"JWT"}`, `{"alg":"HS256","kid":"x"}`, `{"alg":"HS256","kid":7}`,
		`{"alg":"HS256","crit":["b64"],"b64":false}`, `{"alg":"none"}`, `{"alg":"RS256"}`, `{"alg":"HS512"}`, `{}`, `[]`,
	} {
		f.Add(h, string(payload))
	}
	for _, p := range []string{
		`{"sub":"alice","exp":1700003600,"iss":"fuzz-issuer","aud":"switchboard"}`,
		`{"sub":"alice","exp":1700003600.5,"nbf":1700000030,"iat":1700000030,"iss":"fuzz-issuer","aud":["switchboard"]}`,
		`{"sub":"alice","exp":1e300,"iss":"fuzz-issuer","aud":"switchboard"}`,
		`{"sub":"alice","exp":-1e300,"iss":"fuzz-issuer","aud":"switchboard"}`,
		`{"sub":"al\u0000ice","exp":1700003600,"iss":"fuzz-issuer","aud":"switchboard"}`,
		`{"sub":"alice","exp":"1700003600","iss":"fuzz-issuer","aud":"switchboard"}`,
		`{"sub":"alice","sub":"bob","exp":1700003600,"iss":"fuzz-issuer","aud":[1]}`,
		`null`, `{}`, `[`,
	} {
		f.Add(`{"alg":"HS256"}`, p)
	}
	enc := base64.RawURLEncoding.EncodeToString
	f.Fuzz(func(t *testing.T, header, payload string) {
		input := enc([]byte(header)) + "." + enc([]byte(payload))
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(input))
		token := input + "." + enc(mac.Sum(nil))
		id, err := v.Verify(context.Background(), token)
		checkVerdict(t, token, id, err)
		if err != nil {
			return
		}
		var h struct {
			Alg string `json:"alg"`
		}
		if json.Unmarshal([]byte(header), &h) != nil || h.Alg != "HS256" {
			t.Fatalf("accepted a token whose header %q does not say HS256", header)
		}
	})
}

// FuzzParseJWKS feeds the JWK Set parser arbitrary documents: what comes
// back is a bounded list of keys each of a known algorithm, or an error.
func FuzzParseJWKS(f *testing.F) {
	ed, ec := fuzzKeys(f)
	set, err := json.Marshal(map[string]any{"keys": []any{
		jwkOf(f, ed.public(), "d"), jwkOf(f, ec.public(), "e"),
		map[string]any{"kty": "RSA", "n": strings.Repeat("z", 342) + "w", "e": "AQAB", "alg": "RS256"},
		map[string]any{"kty": "oct", "k": "c2VjcmV0"},
	}})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{string(set), `{"keys":[]}`, `{"keys":[{}]}`, `{"keys":null}`, `{`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, skipped, err := parseJWKS(data)
		if err != nil {
			if keys != nil {
				t.Fatalf("keys with an error: %v", err)
			}
			return
		}
		if len(keys) == 0 || len(keys) > maxKeys || skipped < 0 {
			t.Fatalf("%d keys, %d skipped", len(keys), skipped)
		}
		for _, k := range keys {
			if _, err := publicKey(k.v); err != nil || k.alg == algHS256 {
				t.Fatalf("key %+v: %v", k, err)
			}
		}
	})
}
