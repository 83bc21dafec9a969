package node

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard/switchboard/transport/gateway"
)

// errUnauthorized is what every failed check reports to the peer; the
// detail goes to the log, not to whoever is probing.
var errUnauthorized = errors.New("unauthorized")

// authenticate verifies a client JWT (HS256, sub and exp required) and
// returns its subject, the user id, and its expiry.
func (n *Node) authenticate(token string) (gateway.Identity, error) {
	if token == "" {
		return gateway.Identity{}, fmt.Errorf("%w: no token", errUnauthorized)
	}
	claims := jwt.RegisteredClaims{}
	_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return n.cfg.TokenSecret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil {
		return gateway.Identity{}, fmt.Errorf("%w: %v", errUnauthorized, err)
	}
	if claims.Subject == "" {
		return gateway.Identity{}, fmt.Errorf("%w: token has no sub", errUnauthorized)
	}
	if err := validUser(claims.Subject); err != nil {
		return gateway.Identity{}, fmt.Errorf("%w: %v", errUnauthorized, err)
	}
	return gateway.Identity{User: claims.Subject, Expires: claims.ExpiresAt.Time}, nil
}

// bearer checks the Authorization header against key in constant time.
func bearer(r *http.Request, key string) bool {
	h := r.Header.Get("Authorization")
	const p = "Bearer "
	if len(h) < len(p) || !strings.EqualFold(h[:len(p)], p) {
		return false
	}
	got := strings.TrimSpace(h[len(p):])
	return subtle.ConstantTimeCompare([]byte(got), []byte(key)) == 1
}

// maxUserLen bounds user ids: they are keys in every replica's registry.
const maxUserLen = 256

func validUser(u string) error {
	switch {
	case u == "":
		return errors.New("user is empty")
	case len(u) > maxUserLen:
		return fmt.Errorf("user id longer than %d bytes", maxUserLen)
	}
	for _, r := range u {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return errors.New("user id has control or invalid characters")
		}
	}
	return nil
}
