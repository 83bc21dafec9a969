package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var secret = []byte("test-secret-0123456789")

// wantOK fails t unless token verifies as alice until the claims' exp.
func wantOK(t testing.TB, v *Verifier, token string) {
	t.Helper()
	id, err := v.Verify(context.Background(), token)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if id.User != "alice" || !id.Expires.Equal(t0.Add(time.Hour)) {
		t.Fatalf("Verify = %+v, want alice until %v", id, t0.Add(time.Hour))
	}
}

// wantRefused fails t unless token is refused with an error that wraps
// ErrUnauthorized and says why (contains reason).
func wantRefused(t testing.TB, v *Verifier, token, reason string) {
	t.Helper()
	id, err := v.Verify(context.Background(), token)
	if err == nil {
		t.Fatalf("Verify accepted the token as %+v; want it refused (%s)", id, reason)
	}
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Verify: %v does not wrap ErrUnauthorized", err)
	}
	if !strings.Contains(err.Error(), reason) {
		t.Fatalf("Verify: %q, want it to say %q", err, reason)
	}
	if id.User != "" || !id.Expires.IsZero() || id.Channels != nil {
		t.Fatalf("a refused token came with identity %+v", id)
	}
}

func TestHS256(t *testing.T) {
	clk := newClock()
	cfg := testConfig(t, clk)
	cfg.Secret = secret
	v := newVerifier(t, cfg)

	wantOK(t, v, signHS256(t, secret, "", claims(nil)))
	wantOK(t, v, signHS256(t, secret, "any-kid", claims(nil)))
	wantRefused(t, v, signHS256(t, []byte("another-secret"), "", claims(nil)), "signature invalid")

	hs512, err := jwt.NewWithClaims(jwt.SigningMethodHS512, claims(nil)).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	wantRefused(t, v, hs512, "algorithm HS512 not accepted")
	wantRefused(t, v, sign(t, testKey(t, "rsa", 0), "", claims(nil)), "algorithm RS256 not accepted")
	wantRefused(t, v, "", "no token")
	wantRefused(t, v, "not.a.token", "malformed token")
	wantRefused(t, v, strings.Repeat("a", maxTokenBytes+1), "longer than")
}

func TestPublicKeysFromPEM(t *testing.T) {
	rsaKey, ecKey, edKey := testKey(t, "rsa", 0), testKey(t, "ec", 0), testKey(t, "ed", 0)
	pkcs1 := pemBlock("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(rsaKey.public().(*rsa.PublicKey)))
	for _, tc := range []struct {
		name string
		key  signer
		file []byte
	}{
		{"RS256 PUBLIC KEY", rsaKey, pemPublic(t, rsaKey.public())},
		{"RS256 RSA PUBLIC KEY", rsaKey, pkcs1},
		{"RS256 CERTIFICATE", rsaKey, pemCert(t, rsaKey)},
		{"ES256 PUBLIC KEY", ecKey, pemPublic(t, ecKey.public())},
		{"ES256 CERTIFICATE", ecKey, pemCert(t, ecKey)},
		{"EdDSA PUBLIC KEY", edKey, pemPublic(t, edKey.public())},
		{"EdDSA CERTIFICATE", edKey, pemCert(t, edKey)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, newClock())
			cfg.PublicKeyFile = keyFilePath(t, tc.file)
			v := newVerifier(t, cfg)
			wantOK(t, v, sign(t, tc.key, "", claims(nil)))
			// PEM keys have no kid: a token's kid does not matter.
			wantOK(t, v, sign(t, tc.key, "issuer-kid-7", claims(nil)))
			other := testKey(t, map[string]string{"RS256": "rsa", "ES256": "ec", "EdDSA": "ed"}[tc.key.method.Alg()], 1)
			wantRefused(t, v, sign(t, other, "", claims(nil)), "signature invalid")
			wantRefused(t, v, signHS256(t, secret, "", claims(nil)), "algorithm HS256 not accepted")
		})
	}

	t.Run("several keys in one file", func(t *testing.T) {
		cfg := testConfig(t, newClock())
		rsa1 := testKey(t, "rsa", 1)
		cfg.PublicKeyFile = keyFilePath(t, pemPublic(t, rsaKey.public()), pemCert(t, ecKey),
			[]byte("a comment between blocks\n"), pemPublic(t, edKey.public()), pemPublic(t, rsa1.public()))
		v := newVerifier(t, cfg)
		for _, k := range []signer{rsaKey, ecKey, edKey, rsa1} {
			wantOK(t, v, sign(t, k, "", claims(nil)))
		}
		wantRefused(t, v, sign(t, testKey(t, "ec", 1), "", claims(nil)), "signature invalid")
	})
}

func TestPEMFileRefusedAtStart(t *testing.T) {
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, file, want string
	}{
		{"private key", string(pemBlock("PRIVATE KEY", []byte{1, 2, 3})), "private key"},
		{"P-384", string(pemPublic(t, p384.Public())), "only P-256"},
		{"RSA 1024", string(pemPublic(t, weak.Public())), "1024 bits"},
		{"unknown block", string(pemBlock("FOO", []byte{1})), `unsupported type "FOO"`},
		{"not PEM", "hello\n", "no PEM public keys"},
		{"empty", "", "no PEM public keys"},
		{"truncated", string(pemPublic(t, testKey(t, "ec", 0).public())) + "-----BEGIN PUBLIC KEY-----\nMFkw", "block 2 is truncated"},
		{"bad DER", string(pemBlock("PUBLIC KEY", []byte{0x30, 0x01})), "PEM block 1 (PUBLIC KEY)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, newClock())
			cfg.PublicKeyFile = keyFilePath(t, []byte(tc.file))
			_, err := New(cfg)
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "PublicKeyFile") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v; want ErrConfig naming PublicKeyFile and saying %q", err, tc.want)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		cfg := testConfig(t, newClock())
		cfg.PublicKeyFile = "/nonexistent/keys.pem"
		if _, err := New(cfg); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "PublicKeyFile") {
			t.Fatalf("New: %v; want ErrConfig naming PublicKeyFile", err)
		}
	})
}

func TestClaims(t *testing.T) {
	now := t0.Unix()
	for _, tc := range []struct {
		name   string
		set    map[string]any
		reason string // "" = accepted
	}{
		{"aud string", nil, ""},
		{"aud array with ours", map[string]any{"aud": []string{"other", "switchboard"}}, ""},
		{"aud array without ours", map[string]any{"aud": []string{"other", "more"}}, "aud lacks the required audience"},
		{"wrong aud string", map[string]any{"aud": "other"}, "aud lacks the required audience"},
		{"no aud", map[string]any{"aud": nil}, "aud lacks the required audience"},
		{"wrong iss", map[string]any{"iss": "https://evil.example"}, "iss is not the required issuer"},
		{"no iss", map[string]any{"iss": nil}, "iss is not the required issuer"},
		{"expired", map[string]any{"exp": now - 1}, "token expired"},
		{"expires now", map[string]any{"exp": now}, "token expired"},
		{"expires in a second", map[string]any{"exp": now + 1}, ""},
		{"no exp", map[string]any{"exp": nil}, "token has no exp"},
		{"exp not a number", map[string]any{"exp": "tomorrow"}, "malformed token"},
		{"nbf within leeway", map[string]any{"nbf": now + 30}, ""},
		{"nbf past leeway", map[string]any{"nbf": now + 31}, "not valid yet (nbf)"},
		{"nbf passed", map[string]any{"nbf": now - 60}, ""},
		{"iat within leeway", map[string]any{"iat": now + 30}, ""},
		{"iat past leeway", map[string]any{"iat": now + 31}, "issued in the future (iat)"},
		{"no sub", map[string]any{"sub": nil}, "token has no sub"},
		{"empty sub", map[string]any{"sub": ""}, "token has no sub"},
		{"sub not a string", map[string]any{"sub": 42}, "malformed token"},
		{"sub with a control character", map[string]any{"sub": "al\x01ice"}, "token sub: user id has control or invalid characters"},
		{"sub with DEL", map[string]any{"sub": "alice\x7f"}, "control or invalid"},
		{"sub with U+FFFD", map[string]any{"sub": "al\uFFFDice"}, "control or invalid"},
		{"sub too long", map[string]any{"sub": strings.Repeat("a", MaxUserLen+1)}, "longer than 256 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, newClock())
			cfg.Secret, cfg.Issuer, cfg.Audience = secret, "https://issuer.example", "switchboard"
			v := newVerifier(t, cfg)
			c := claims(map[string]any{"iss": "https://issuer.example", "aud": "switchboard"})
			for k, val := range tc.set {
				if val == nil {
					delete(c, k)
				} else {
					c[k] = val
				}
			}
			tok := signHS256(t, secret, "", c)
			if tc.reason != "" {
				wantRefused(t, v, tok, tc.reason)
				return
			}
			id, err := v.Verify(context.Background(), tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id.User != "alice" || id.Expires.Unix() != int64(c["exp"].(int64)) {
				t.Fatalf("Verify = %+v, want alice until %v", id, c["exp"])
			}
		})
	}

	t.Run("a 256-byte sub", func(t *testing.T) {
		cfg := testConfig(t, newClock())
		cfg.Secret = secret
		v := newVerifier(t, cfg)
		long := strings.Repeat("é", MaxUserLen/2)
		id, err := v.Verify(context.Background(), signHS256(t, secret, "", claims(map[string]any{"sub": long})))
		if err != nil || id.User != long {
			t.Fatalf("Verify = %+v, %v; want the 256-byte user", id, err)
		}
	})
	t.Run("iss and aud are free when not configured", func(t *testing.T) {
		cfg := testConfig(t, newClock())
		cfg.Secret = secret
		v := newVerifier(t, cfg)
		wantOK(t, v, signHS256(t, secret, "", claims(map[string]any{"iss": "anyone", "aud": []string{"x"}})))
		wantOK(t, v, signHS256(t, secret, "", claims(nil)))
	})
	t.Run("the clock is the configured one", func(t *testing.T) {
		clk := newClock()
		cfg := testConfig(t, clk)
		cfg.Secret = secret
		v := newVerifier(t, cfg)
		tok := signHS256(t, secret, "", claims(nil))
		wantOK(t, v, tok)
		clk.Advance(time.Hour)
		wantRefused(t, v, tok, "token expired")
	})
}

// TestAlgorithmConfusion: a key serves only its own algorithm. The classic
// attack signs an HS256 token with the server's RSA public key as the HMAC
// secret, hoping the verifier hands that key to HMAC.
func TestAlgorithmConfusion(t *testing.T) {
	rsaKey := testKey(t, "rsa", 0)
	pubPEM := pemPublic(t, rsaKey.public())
	der, err := x509.MarshalPKIXPublicKey(rsaKey.public())
	if err != nil {
		t.Fatal(err)
	}
	forged := func(t *testing.T, hmacKey []byte) string { return signHS256(t, hmacKey, "", claims(nil)) }

	t.Run("public keys only: HS256 is not an algorithm at all", func(t *testing.T) {
		cfg := testConfig(t, newClock())
		cfg.PublicKeyFile = keyFilePath(t, pubPEM)
		v := newVerifier(t, cfg)
		wantOK(t, v, sign(t, rsaKey, "", claims(nil)))
		wantRefused(t, v, forged(t, pubPEM), "algorithm HS256 not accepted")
		wantRefused(t, v, forged(t, der), "algorithm HS256 not accepted")
	})
	t.Run("secret and public keys: HS256 gets the secret only", func(t *testing.T) {
		cfg := testConfig(t, newClock())
		cfg.Secret = secret
		cfg.PublicKeyFile = keyFilePath(t, pubPEM)
		v := newVerifier(t, cfg)
		wantOK(t, v, signHS256(t, secret, "", claims(nil)))
		wantOK(t, v, sign(t, rsaKey, "", claims(nil)))
		wantRefused(t, v, forged(t, pubPEM), "signature invalid")
		wantRefused(t, v, forged(t, der), "signature invalid")
	})
	t.Run("JWKS: HS256 signed with the JWK's modulus", func(t *testing.T) {
		srv := newJWKSServer(t, false)
		jwk := jwkOf(t, rsaKey.public(), "k1")
		srv.publish(t, jwk)
		cfg := testConfig(t, newClock())
		cfg.JWKSURL = srv.URL
		v := newVerifier(t, cfg)
		wantOK(t, v, sign(t, rsaKey, "k1", claims(nil)))
		wantRefused(t, v, signHS256(t, []byte(jwk["n"].(string)), "k1", claims(nil)), "algorithm HS256 not accepted")
	})
	t.Run("alg none", func(t *testing.T) {
		cfg := testConfig(t, newClock())
		cfg.Secret = secret
		cfg.PublicKeyFile = keyFilePath(t, pubPEM)
		v := newVerifier(t, cfg)
		none, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		wantRefused(t, v, none, "algorithm none not accepted")
		// The same with a signature part that is not empty.
		wantRefused(t, v, none+"c2ln", "not accepted")
	})
	t.Run("a key of one type under another algorithm", func(t *testing.T) {
		ecKey := testKey(t, "ec", 0)
		cfg := testConfig(t, newClock())
		cfg.PublicKeyFile = keyFilePath(t, pemPublic(t, ecKey.public()))
		v := newVerifier(t, cfg)
		wantRefused(t, v, sign(t, rsaKey, "", claims(nil)), "no key for the token's algorithm")
		wantRefused(t, v, sign(t, testKey(t, "ed", 0), "", claims(nil)), "no key for the token's algorithm")
	})
}

func TestHeaderRules(t *testing.T) {
	cfg := testConfig(t, newClock())
	cfg.Secret = secret
	v := newVerifier(t, cfg)
	withHeader := func(h map[string]any) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(nil))
		for k, val := range h {
			tok.Header[k] = val
		}
		s, err := tok.SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	wantRefused(t, v, withHeader(map[string]any{"crit": []string{"b64"}, "b64": false}), "critical header")
	wantRefused(t, v, withHeader(map[string]any{"kid": 7}), "kid is not a string")
	wantOK(t, v, withHeader(map[string]any{"typ": "at+jwt", "cty": "x"}))
}

// TestErrorsHoldNoSecrets: whatever goes wrong, the error names neither
// the token nor a claim's value nor a key.
func TestErrorsHoldNoSecrets(t *testing.T) {
	rsaKey := testKey(t, "rsa", 0)
	cfg := testConfig(t, newClock())
	cfg.Secret = secret
	cfg.PublicKeyFile = keyFilePath(t, pemPublic(t, rsaKey.public()))
	cfg.Issuer, cfg.Audience = "iss-value-xyzzy", "aud-value-plugh"
	v := newVerifier(t, cfg)
	sub := "sub-value-frobozz"
	base := map[string]any{"sub": sub, "iss": "iss-value-xyzzy", "aud": "aud-value-plugh"}
	with := func(set map[string]any) jwt.MapClaims {
		c := claims(base)
		for k, val := range set {
			c[k] = val
		}
		return c
	}
	tokens := []string{
		signHS256(t, []byte("wrong-secret"), "", with(nil)),
		signHS256(t, secret, "", with(map[string]any{"exp": t0.Unix() - 10})),
		signHS256(t, secret, "", with(map[string]any{"iss": "iss-other-zork"})),
		signHS256(t, secret, "", with(map[string]any{"aud": "aud-other-zork"})),
		signHS256(t, secret, "", with(map[string]any{"sub": "bad\x00sub-value"})),
		signHS256(t, pemPublic(t, rsaKey.public()), "", with(nil)),
		sign(t, testKey(t, "rsa", 1), "kid-value-grue", with(nil)),
		"eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiJzdWItdmFsdWUtZnJvYm96eiIsImV4cCI6Ij" + ".c2ln", // truncated JSON
		"header-value-xyzzy.payload-value-xyzzy.sig-value-xyzzy",
	}
	for i, tok := range tokens {
		_, err := v.Verify(context.Background(), tok)
		if !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("token %d: %v, want ErrUnauthorized", i, err)
		}
		msg := err.Error()
		for _, part := range append(strings.Split(tok, "."), tok, sub, "xyzzy", "plugh", "zork", "grue", string(secret), "BEGIN") {
			if len(part) >= 4 && strings.Contains(msg, part) {
				t.Errorf("token %d: error %q holds %q", i, msg, part)
			}
		}
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		name  string
		set   func(*Config)
		field string
	}{
		{"no keys", func(c *Config) {}, "no token keys"},
		{"ftp JWKS", func(c *Config) { c.JWKSURL = "ftp://keys.example/jwks" }, "JWKSURL must be an http or https URL"},
		{"JWKS without host", func(c *Config) { c.JWKSURL = "https:///jwks" }, "JWKSURL has no host"},
		{"JWKS not a URL", func(c *Config) { c.JWKSURL = "http://user:pw@[::1" }, "JWKSURL does not parse"},
		{"negative leeway", func(c *Config) { c.Secret = secret; c.Leeway = -time.Second }, "Leeway"},
		{"no file check", func(c *Config) { c.Secret = secret; c.KeyFileCheck = 0 }, "KeyFileCheck"},
		{"no refetch interval", func(c *Config) { c.Secret = secret; c.JWKSMinInterval = 0 }, "JWKSMinInterval"},
		{"no max age", func(c *Config) { c.Secret = secret; c.JWKSMaxAge = -1 }, "JWKSMaxAge"},
		{"no timeout", func(c *Config) { c.Secret = secret; c.JWKSTimeout = 0 }, "JWKSTimeout"},
		{"no body bound", func(c *Config) { c.Secret = secret; c.JWKSMaxBytes = 0 }, "JWKSMaxBytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.set(&cfg)
			_, err := New(cfg)
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("New: %v; want ErrConfig saying %q", err, tc.field)
			}
			if strings.Contains(err.Error(), "pw") {
				t.Fatalf("New: %v repeats the URL's password", err)
			}
		})
	}
	cfg := DefaultConfig()
	cfg.Secret = secret
	if err := cfg.Validate(); err != nil {
		t.Fatalf("DefaultConfig with a secret: %v", err)
	}
}

// The channels claim (DESIGN.md §3a) comes with the identity; a claim
// that is not an array of strings refuses the token.
func TestChannelsClaim(t *testing.T) {
	cfg := testConfig(t, newClock())
	cfg.Secret = secret
	v := newVerifier(t, cfg)
	id, err := v.Verify(context.Background(), signHS256(t, secret, "", claims(map[string]any{"channels": []string{"ticker:*", "room:42"}})))
	if err != nil || len(id.Channels) != 2 || id.Channels[0] != "ticker:*" || id.Channels[1] != "room:42" {
		t.Fatalf("Verify = %+v, %v", id, err)
	}
	id, err = v.Verify(context.Background(), signHS256(t, secret, "", claims(nil)))
	if err != nil || id.Channels != nil {
		t.Fatalf("no claim: %+v, %v", id, err)
	}
	wantRefused(t, v, signHS256(t, secret, "", claims(map[string]any{"channels": "ticker:*"})), "malformed token")
	wantRefused(t, v, signHS256(t, secret, "", claims(map[string]any{"channels": []any{1}})), "malformed token")
}
