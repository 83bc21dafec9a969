package node

import (
	"context"
	"log/slog"
	"net/http"
	"strings"

	"github.com/switchboard/switchboard/internal/secret"

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
	return gateway.Identity{User: id.User, Expires: id.Expires, Channels: id.Channels}, nil
}

// bearer checks the Authorization header against each of keys in
// constant time.
func bearer(r *http.Request, keys []string) bool {
	h := r.Header.Get("Authorization")
	const p = "Bearer "
	if len(h) < len(p) || !strings.EqualFold(h[:len(p)], p) {
		return false
	}
	got, ok := strings.TrimSpace(h[len(p):]), false
	for _, k := range keys {
		ok = auth.KeyMatches(got, k) || ok // every key compared: the time does not say which
	}
	return ok
}

// keySource returns the keys in force: those of file, re-read when it
// changes, or the one key given.
type keySource func() []string

// newKeySource watches file if given, else serves key.
func newKeySource(key, file, what string, log *slog.Logger) (keySource, error) {
	if file == "" {
		keys := []string{key}
		return func() []string { return keys }, nil
	}
	f, err := secret.Watch(file, what, log)
	if err != nil {
		return nil, err
	}
	return f.Current, nil
}
