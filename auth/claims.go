package auth

import (
	"errors"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// tokenClaims are the claims a client token may carry: the registered
// ones and the channels it may subscribe to (DESIGN.md §3a). A channels
// claim that is not an array of strings makes the token malformed.
type tokenClaims struct {
	jwt.RegisteredClaims
	Channels []string `json:"channels,omitempty"`
}

// claimRules are the checks a token's claims must pass once its signature
// holds.
type claimRules struct {
	issuer   string // required iss, if set
	audience string // required aud entry, if set
	leeway   time.Duration
}

// check returns the token's identity, or why its claims refuse it. The
// reasons name claims, never their values: they end up in logs.
func (r claimRules) check(c *jwt.RegisteredClaims, now time.Time) (Identity, error) {
	switch {
	case c.ExpiresAt == nil:
		return Identity{}, errors.New("token has no exp")
	case !now.Before(c.ExpiresAt.Time):
		return Identity{}, errors.New("token expired")
	case c.NotBefore != nil && now.Add(r.leeway).Before(c.NotBefore.Time):
		return Identity{}, errors.New("token not valid yet (nbf)")
	case c.IssuedAt != nil && now.Add(r.leeway).Before(c.IssuedAt.Time):
		return Identity{}, errors.New("token issued in the future (iat)")
	case r.issuer != "" && c.Issuer != r.issuer:
		return Identity{}, errors.New("token iss is not the required issuer")
	case r.audience != "" && !slices.Contains(c.Audience, r.audience):
		return Identity{}, errors.New("token aud lacks the required audience")
	case c.Subject == "":
		return Identity{}, errors.New("token has no sub")
	}
	if err := ValidUser(c.Subject); err != nil {
		return Identity{}, errors.New("token sub: " + err.Error())
	}
	return Identity{User: c.Subject, Expires: c.ExpiresAt.Time}, nil
}
