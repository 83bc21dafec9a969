package node

import (
	"context"
	"net/http"
	"strings"

	"github.com/switchboard/switchboard/auth"
	"github.com/switchboard/switchboard/transport/gateway"
)

// authenticate verifies a client JWT (auth.Verifier: keys, issuer,
// audience, sub and exp) and returns its user and expiry. The hello and
// refresh it serves are off the poller; the wait for a key set is bounded
// by the hello timeout.
func (n *Node) authenticate(token string) (gateway.Identity, error) {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.Gateway.HelloTimeout)
	defer cancel()
	id, err := n.tokens.Verify(ctx, token)
	if err != nil {
		return gateway.Identity{}, err
	}
	return gateway.Identity{User: id.User, Expires: id.Expires}, nil
}

// bearer checks the Authorization header against key in constant time.
func bearer(r *http.Request, key string) bool {
	h := r.Header.Get("Authorization")
	const p = "Bearer "
	if len(h) < len(p) || !strings.EqualFold(h[:len(p)], p) {
		return false
	}
	return auth.KeyMatches(strings.TrimSpace(h[len(p):]), key)
}
