// Package token mints client tokens (JWT, HS256) the way DESIGN.md §3
// describes them. The node only verifies tokens; minting is for --dev,
// sbctl, sbload and tests, standing in for an application's backend.
package token

import (
	"errors"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Mint returns a token for user, valid for ttl from now, allowing no
// channels.
func Mint(secret []byte, user string, ttl time.Duration) (string, error) {
	return MintChannels(secret, user, ttl, nil)
}

// claims are a client token's claims (DESIGN.md §3, §3a).
type claims struct {
	jwt.RegisteredClaims
	Channels []string `json:"channels,omitempty"`
}

// MintChannels returns a token for user, valid for ttl from now, allowing
// the channels that match patterns (exact names, or prefixes ending in *).
func MintChannels(secret []byte, user string, ttl time.Duration, patterns []string) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("token: empty secret")
	}
	if user == "" {
		return "", errors.New("token: empty user")
	}
	now := time.Now()
	claims := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   user,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Channels: patterns,
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}
