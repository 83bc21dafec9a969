// Package auth authenticates Switchboard's clients (DESIGN.md §3, §7): a
// Verifier checks their tokens and KeyMatches compares API and admin keys.
//
// A Verifier accepts JWTs signed with HS256 and the token secret, or with
// RS256, ES256 or EdDSA and a key from a PEM file or a JWK Set fetched
// over http(s): exactly the algorithms of the keys configured, each key
// only for its own algorithm, never "none". Tokens carry sub (the user id,
// see ValidUser) and exp; iss and aud are required when configured. Keys
// rotate without a restart: the PEM file is re-read when it changes, the
// JWK Set is refetched on an unknown kid (at most once per 5 s) and when
// it grows old, and a bad file or a failed fetch keeps the keys in force.
// Every error of Verify wraps ErrUnauthorized and never quotes the token,
// a claim's value or a key.
package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/switchboard/switchboard/internal/filewatch"
	secretfile "github.com/switchboard/switchboard/internal/secret"
)

// ErrUnauthorized is wrapped by every error of Verify.
var ErrUnauthorized = errors.New("unauthorized")

// maxTokenBytes bounds a token: the hello frame bounds it anyway, an
// Authorization header only by the HTTP server's header limit.
const maxTokenBytes = 64 << 10

// Identity is what a valid token says about its bearer.
type Identity struct {
	User    string    // sub
	Expires time.Time // exp
	// Channels are the token's channel patterns (claim `channels`, a JSON
	// array of strings): exact names or prefixes ending in `*`.
	Channels []string
}

// Verifier verifies client tokens. It is safe for concurrent use.
type Verifier struct {
	secret  []byte
	secrets *filewatch.File[[]string] // nil without Config.SecretFile
	file    *filewatch.File[[]key]    // nil without Config.PublicKeyFile
	jwks    *jwks                     // nil without Config.JWKSURL
	methods []string                  // the algorithms accepted
	parser  *jwt.Parser
	rules   claimRules
	now     func() time.Time
}

// New returns a Verifier for cfg, or every problem with cfg, each naming
// its field. It reads PublicKeyFile, which must hold usable keys, and
// starts the first JWKS fetch without waiting for it: a JWKS server that
// is down does not stop a node from starting, and tokens that need it
// wait for that fetch. Close stops the fetching.
func New(cfg Config) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "auth")

	v := &Verifier{
		secret: bytes.Clone(cfg.Secret),
		rules:  claimRules{issuer: cfg.Issuer, audience: cfg.Audience, leeway: cfg.Leeway},
		now:    cfg.Now,
	}
	if len(v.secret) > 0 || cfg.SecretFile != "" {
		v.methods = append(v.methods, algHS256)
	}
	if cfg.SecretFile != "" {
		f, err := filewatch.Load(filewatch.Config[[]string]{
			Path: cfg.SecretFile, What: "token secret file", Every: cfg.KeyFileCheck,
			MaxBytes: maxKeyFileBytes, Parse: secretfile.ParseKeys, Now: cfg.Now, Logger: log,
		})
		if err != nil {
			return nil, fmt.Errorf("%w: SecretFile %w", ErrConfig, err)
		}
		v.secrets = f
	}
	if cfg.PublicKeyFile != "" || cfg.JWKSURL != "" {
		v.methods = append(v.methods, algRS256, algES256, algEdDSA)
	}
	// Claims are checked by claimRules, whose rules (no leeway on exp,
	// reasons without values) are ours; jwt checks form and signature.
	v.parser = jwt.NewParser(jwt.WithValidMethods(v.methods), jwt.WithoutClaimsValidation())

	if cfg.PublicKeyFile != "" {
		f, err := loadKeyFile(cfg.PublicKeyFile, cfg.KeyFileCheck, cfg.Now, log)
		if err != nil {
			return nil, fmt.Errorf("%w: PublicKeyFile %w", ErrConfig, err)
		}
		v.file = f
	}
	if cfg.JWKSURL != "" {
		v.jwks = newJWKS(cfg.JWKSURL, cfg, log)
		v.jwks.start()
	}
	return v, nil
}

// Verify checks token and returns whom it names until when. ctx bounds
// only the wait for a JWKS fetch, which happens when the token names a kid
// the cached set lacks; the fetch itself goes on for whoever else waits.
func (v *Verifier) Verify(ctx context.Context, token string) (Identity, error) {
	switch {
	case token == "":
		return Identity{}, fmt.Errorf("%w: no token", ErrUnauthorized)
	case len(token) > maxTokenBytes:
		return Identity{}, fmt.Errorf("%w: token longer than %d bytes", ErrUnauthorized, maxTokenBytes)
	}
	if v.jwks != nil {
		v.jwks.refreshIfStale()
	}
	id, lacking, err := v.verify(token)
	if err != nil && lacking != nil && v.jwks.refresh(ctx, lacking.set) {
		id, _, err = v.verify(token)
	}
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrUnauthorized, err)
	}
	return id, nil
}

// Reasons a token's header refuses it before any key is tried.
var (
	errNoKey = errors.New("no key for the token's algorithm and kid")
	errKid   = errors.New("token kid is not a string")
	errCrit  = errors.New("token has critical header extensions")
)

// lacking is a verification that failed for want of a key the JWK Set
// might have: the token names a kid the cached set does not have (or no
// set is cached), and no key took it.
type lacking struct {
	set *keySet // the set the verification used
}

// verify checks token against the keys in force. lacking is not nil when
// a fresher JWK Set might change the answer.
func (v *Verifier) verify(token string) (Identity, *lacking, error) {
	var claims tokenClaims
	var unknown *lacking
	tok, err := v.parser.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		if _, ok := t.Header["crit"]; ok {
			return nil, errCrit // RFC 7515 §4.1.11: we understand no extension
		}
		kid := ""
		if raw, ok := t.Header["kid"]; ok {
			s, ok := raw.(string)
			if !ok {
				return nil, errKid
			}
			kid = s
		}
		alg := t.Method.Alg()
		var keys []jwt.VerificationKey
		if alg == algHS256 {
			if len(v.secret) > 0 {
				keys = append(keys, v.secret)
			}
			if v.secrets != nil {
				for _, s := range v.secrets.Current() {
					keys = append(keys, []byte(s))
				}
			}
		} else {
			if v.file != nil {
				keys = match(keys, v.file.Current(), alg, kid)
			}
			if v.jwks != nil {
				set := v.jwks.snapshot()
				keys = match(keys, set.all(), alg, kid)
				if !set.knows(kid) {
					unknown = &lacking{set: set}
				}
			}
		}
		if len(keys) == 0 {
			return nil, errNoKey
		}
		return jwt.VerificationKeySet{Keys: keys}, nil
	})
	if err != nil {
		if !errors.Is(err, errNoKey) && !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
			unknown = nil
		}
		return Identity{}, unknown, v.reason(tok, err)
	}
	id, err := v.rules.check(&claims.RegisteredClaims, v.now())
	if err == nil {
		id.Channels = claims.Channels
	}
	return id, nil, err
}

// reason turns jwt's error into one of a few fixed texts: jwt's own may
// quote bits of the token (a JSON syntax error shows the character).
func (v *Verifier) reason(tok *jwt.Token, err error) error {
	for _, e := range []error{errNoKey, errKid, errCrit} {
		if errors.Is(err, e) {
			return e
		}
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errors.New("malformed token")
	case tok != nil && tok.Method != nil && !slices.Contains(v.methods, tok.Method.Alg()):
		// Alg() is the registered method's own name, not the token's text.
		return fmt.Errorf("algorithm %s not accepted", tok.Method.Alg())
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return errors.New("signature invalid")
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return errors.New("unknown algorithm")
	}
	return errors.New("token refused")
}

// Reload re-reads Config.PublicKeyFile and Config.SecretFile now,
// whatever their versions, and returns why their keys could not be put in
// force (the previous keys then stay). Without files it does nothing.
// Verifications do this on their own when a file changes; Reload is for a
// caller that wants the answer.
func (v *Verifier) Reload() error {
	var errs []error
	if v.file != nil {
		errs = append(errs, v.file.Reload())
	}
	if v.secrets != nil {
		errs = append(errs, v.secrets.Reload())
	}
	return errors.Join(errs...)
}

// Close stops JWKS fetching: it cancels a fetch in flight and waits for
// it to end. Verify goes on with the keys in force. Close is idempotent.
func (v *Verifier) Close() error {
	if v.jwks != nil {
		v.jwks.close()
	}
	return nil
}
