package auth

import (
	"crypto/sha256"
	"crypto/subtle"
)

// KeyMatches tells whether got is the API or admin key want. Both are
// hashed first and the digests compared in constant time, so the timing
// shows neither where they differ nor whether their lengths do. An empty
// want matches nothing.
func KeyMatches(got, want string) bool {
	if want == "" {
		return false
	}
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}
