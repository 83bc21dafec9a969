// Package token mints client tokens (JWT, HS256) the way DESIGN.md §3
// describes them. The node only verifies tokens; minting is for --dev,
// sbctl, sbload and tests, standing in for an application's backend.
package token

import (
	"errors"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Mint returns a token for user, valid for ttl from now.
func Mint(secret []byte, user string, ttl time.Duration) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("token: empty secret")
	}
	if user == "" {
		return "", errors.New("token: empty user")
	}
	now := time.Now()
	claims := jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}
