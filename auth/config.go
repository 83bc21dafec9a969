package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

// Config says which tokens a Verifier accepts (DESIGN.md §3, §7). Start
// from DefaultConfig and set at least one of Secret, PublicKeyFile and
// JWKSURL; the algorithms accepted are exactly those of the keys set.
type Config struct {
	// Secret is the HS256 key: the token secret file's bytes, surrounding
	// white space trimmed by the caller. Empty: HS256 tokens are refused
	// (unless SecretFile is set).
	Secret []byte
	// SecretFile is a file of HS256 keys, one a line (internal/secret),
	// every one accepted, re-read when it changes (see KeyFileCheck): the
	// token secret rotates without a restart. Empty: none.
	SecretFile string
	// PublicKeyFile is a PEM file of public keys and certificates (RSA
	// 2048–8192 bits → RS256, ECDSA P-256 → ES256, Ed25519 → EdDSA; at most
	// 64). Its keys have no kid: each is tried for every token of its
	// algorithm, whatever kid the token names, so the issuer's kids need
	// not be known here. A certificate only carries its key: its dates and
	// chain are not checked. The file is re-read when it changes (see
	// KeyFileCheck). Empty: none.
	PublicKeyFile string
	// JWKSURL is an http or https URL serving a JWK Set (RSA, EC P-256 and
	// OKP Ed25519 signature keys; others are skipped). It is fetched in the
	// background by New, again when a token names a kid the cached set
	// lacks (at most once per JWKSMinInterval) and when the cached set is
	// older than JWKSMaxAge. A key matches the tokens that name its kid; a
	// token without a kid is tried against every key of its algorithm.
	// Empty: none.
	JWKSURL string

	// Issuer, when set, must equal every token's iss.
	Issuer string
	// Audience, when set, must be every token's aud (a string) or one of
	// its entries (an array).
	Audience string

	// Leeway tolerates clock skew on nbf and iat, so that a token minted by
	// an issuer whose clock runs a little ahead is not refused. exp gets
	// none: the node ends live connections at exp by its own clock, and a
	// token it would cut at once is not worth accepting.
	Leeway time.Duration
	// KeyFileCheck is how often, at most, PublicKeyFile and SecretFile are looked at
	// (identity, size and modification time) for a new version. The check
	// runs inside a verification, never more than one at a time.
	KeyFileCheck time.Duration
	// JWKSMinInterval is the least time between the starts of two JWKS
	// fetches, whatever asks for them: a flood of tokens with random kids
	// costs the JWKS server one request per interval.
	JWKSMinInterval time.Duration
	// JWKSMaxAge is the age after which the cached set is refetched in the
	// background (verifications do not wait for it), so that a key removed
	// from the set stops being trusted even if no unknown kid comes by.
	JWKSMaxAge time.Duration
	// JWKSTimeout bounds one fetch: connect, headers and body.
	JWKSTimeout time.Duration
	// JWKSMaxBytes bounds a JWKS response body; a longer one is a failed
	// fetch.
	JWKSMaxBytes int64
	// HTTPClient fetches the JWKS; nil means a client with JWKSTimeout as
	// its timeout. Every fetch is bounded by JWKSTimeout either way.
	HTTPClient *http.Client

	// Now is the clock for claims, rate limits and file checks; nil means
	// time.Now. Tests set it.
	Now func() time.Time
	// Logger receives key reloads and fetch failures; nil means
	// slog.Default(). Tokens and secrets are never logged.
	Logger *slog.Logger
}

// DefaultConfig returns the contract's limits (DESIGN.md §7) with no keys
// set: the caller sets Secret, PublicKeyFile or JWKSURL.
func DefaultConfig() Config {
	return Config{
		Leeway:          30 * time.Second,
		KeyFileCheck:    time.Second,
		JWKSMinInterval: 5 * time.Second,
		JWKSMaxAge:      5 * time.Minute,
		JWKSTimeout:     5 * time.Second,
		JWKSMaxBytes:    256 << 10,
	}
}

// ErrConfig is wrapped by the errors of Config.Validate and New.
var ErrConfig = errors.New("auth: invalid config")

// Validate reports every field that cannot be used. It does not read
// PublicKeyFile or fetch JWKSURL; New does the first.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s %s", ErrConfig, field, fmt.Sprintf(format, args...))
	}
	var errs []error
	if len(c.Secret) == 0 && c.SecretFile == "" && c.PublicKeyFile == "" && c.JWKSURL == "" {
		errs = append(errs, fmt.Errorf("%w: no token keys: set Secret, SecretFile, PublicKeyFile or JWKSURL", ErrConfig))
	}
	if c.JWKSURL != "" {
		u, err := url.Parse(c.JWKSURL)
		switch {
		case err != nil:
			// url.Parse's error quotes the URL, which may carry a
			// password: say only that it did not parse.
			errs = append(errs, bad("JWKSURL", "does not parse as a URL"))
		case u.Scheme != "http" && u.Scheme != "https":
			errs = append(errs, bad("JWKSURL", "must be an http or https URL"))
		case u.Host == "":
			errs = append(errs, bad("JWKSURL", "has no host"))
		}
	}
	if c.Leeway < 0 {
		errs = append(errs, bad("Leeway", "must not be negative, is %v", c.Leeway))
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"KeyFileCheck", c.KeyFileCheck},
		{"JWKSMinInterval", c.JWKSMinInterval},
		{"JWKSMaxAge", c.JWKSMaxAge},
		{"JWKSTimeout", c.JWKSTimeout},
	} {
		if d.v <= 0 {
			errs = append(errs, bad(d.field, "must be positive, is %v", d.v))
		}
	}
	if c.JWKSMaxBytes <= 0 {
		errs = append(errs, bad("JWKSMaxBytes", "must be positive, is %d", c.JWKSMaxBytes))
	}
	return errors.Join(errs...)
}
