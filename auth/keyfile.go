package auth

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/switchboard/switchboard/internal/filewatch"
)

// maxKeyFileBytes bounds the PEM file: a few keys and certificates take a
// few KiB.
const maxKeyFileBytes = 1 << 20

// parsePEM returns the public keys of a PEM file: PUBLIC KEY (PKIX), RSA
// PUBLIC KEY (PKCS #1) and CERTIFICATE blocks, in order. A certificate is
// only a container for its key: its dates, chain and usages are not
// checked. Private keys, other block types, a truncated block and a file
// without keys are errors, so a mistake is seen when the file is loaded
// rather than as refused tokens.
func parsePEM(data []byte) ([]key, error) {
	var keys []key
	rest := data
	for n := 1; ; n++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		var (
			pub any
			err error
		)
		switch b.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(b.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(b.Bytes); err == nil {
				pub = c.PublicKey
			}
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY":
			return nil, fmt.Errorf("PEM block %d is a private key: the file must hold only public keys and certificates", n)
		default:
			return nil, fmt.Errorf("PEM block %d has unsupported type %q", n, b.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %d (%s): %w", n, b.Type, err)
		}
		k, err := publicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d (%s): %w", n, b.Type, err)
		}
		if len(keys) == maxKeys {
			return nil, fmt.Errorf("more than %d keys", maxKeys)
		}
		keys = append(keys, k)
	}
	if bytes.Contains(rest, []byte("-----BEGIN")) {
		return nil, fmt.Errorf("PEM block %d is truncated or malformed", len(keys)+1)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM public keys or certificates")
	}
	return keys, nil
}

// loadKeyFile reads path, which must hold usable keys, and keeps its keys
// current: the file is looked at again at most once per every.
func loadKeyFile(path string, every time.Duration, now func() time.Time, log *slog.Logger) (*filewatch.File[[]key], error) {
	return filewatch.Load(filewatch.Config[[]key]{
		Path: path, What: "public key file", Every: every, MaxBytes: maxKeyFileBytes,
		Parse: parsePEM, Now: now, Logger: log,
	})
}
