package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// The algorithms a Verifier knows, each tied to one kind of key. A key is
// only ever offered to tokens of its own algorithm, so an RSA public key
// can never be taken for an HMAC secret.
const (
	algHS256 = "HS256"
	algRS256 = "RS256"
	algES256 = "ES256"
	algEdDSA = "EdDSA"
)

// RSA keys outside these sizes are refused: smaller ones are weak, larger
// ones make every verification a CPU bill for whoever sends tokens.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// maxKeys bounds the keys of one source (the PEM file, the JWKS). A token
// without a kid is tried against every key of its algorithm, so this also
// bounds the work one bad token costs.
const maxKeys = 64

// key is one verification key.
type key struct {
	// kid is the JWKS key id; empty for keys from the PEM file, which
	// match a token of their algorithm whatever its kid.
	kid string
	alg string
	// v is what jwt's signing method takes: *rsa.PublicKey,
	// *ecdsa.PublicKey, ed25519.PublicKey or []byte (HS256).
	v jwt.VerificationKey
}

// publicKey returns pub as a key for its algorithm, or why it cannot be
// used.
func publicKey(pub any) (key, error) {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if bits := p.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return key{}, fmt.Errorf("RSA key of %d bits (want %d to %d)", bits, minRSABits, maxRSABits)
		}
		if p.E < 3 || p.E%2 == 0 {
			return key{}, fmt.Errorf("RSA key with exponent %d", p.E)
		}
		return key{alg: algRS256, v: p}, nil
	case *ecdsa.PublicKey:
		if p.Curve != elliptic.P256() {
			return key{}, fmt.Errorf("ECDSA key on %s (only P-256, for ES256)", p.Curve.Params().Name)
		}
		return key{alg: algES256, v: p}, nil
	case ed25519.PublicKey:
		if len(p) != ed25519.PublicKeySize {
			return key{}, fmt.Errorf("Ed25519 key of %d bytes", len(p))
		}
		return key{alg: algEdDSA, v: p}, nil
	default:
		return key{}, fmt.Errorf("unsupported key type %T", pub)
	}
}

// match appends to dst the keys of ks that may have signed a token with
// alg and kid: those of its algorithm whose kid is the token's, or that
// have none, or all of its algorithm when the token has no kid.
func match(dst []jwt.VerificationKey, ks []key, alg, kid string) []jwt.VerificationKey {
	for _, k := range ks {
		if k.alg == alg && (k.kid == "" || kid == "" || k.kid == kid) {
			dst = append(dst, k.v)
		}
	}
	return dst
}
