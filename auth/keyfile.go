package auth

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
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

// keyFile holds the keys of the PEM file and re-reads it when it changes.
type keyFile struct {
	path  string
	every time.Duration
	now   func() time.Time
	log   *slog.Logger

	keys atomic.Pointer[[]key]
	// next is when (unix ns by now) the file may be looked at again; the
	// verification that moves it forward does the look.
	next atomic.Int64

	mu     sync.Mutex  // serializes loads; guards what follows
	loaded os.FileInfo // the version whose keys are in force
	failed os.FileInfo // the last version that failed to load, if any
	// problem is the last failure logged: a version that fails is logged
	// once, and so is a file that cannot be opened, however long it stays so.
	problem string
}

// loadKeyFile reads path, which must hold usable keys.
func loadKeyFile(path string, every time.Duration, now func() time.Time, log *slog.Logger) (*keyFile, error) {
	f := &keyFile{path: path, every: every, now: now, log: log}
	if err := f.load(); err != nil {
		return nil, err
	}
	f.next.Store(now().Add(every).UnixNano())
	return f, nil
}

// current returns the keys in force.
func (f *keyFile) current() []key { return *f.keys.Load() }

// maybeReload looks at the file if KeyFileCheck has passed since the last
// look and no other verification is looking; otherwise it returns at once.
func (f *keyFile) maybeReload() {
	now := f.now().UnixNano()
	next := f.next.Load()
	if now < next || !f.next.CompareAndSwap(next, now+int64(f.every)) {
		return
	}
	if !f.mu.TryLock() { // a Reload is at it
		return
	}
	defer f.mu.Unlock()
	if fi, err := os.Stat(f.path); err == nil && (sameVersion(fi, f.loaded) || sameVersion(fi, f.failed)) {
		return
	}
	_ = f.loadLocked()
}

// load reads the file and puts its keys in force, or keeps those in force
// and returns why not.
func (f *keyFile) load() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loadLocked()
}

func (f *keyFile) loadLocked() error {
	keys, fi, err := readKeyFile(f.path)
	if err != nil {
		err = fmt.Errorf("%s: %w", f.path, err)
		if f.keys.Load() != nil && (fi != nil || err.Error() != f.problem) {
			f.log.Warn("public key file not reloaded; the previous keys stay in force", "err", err)
		}
		f.failed, f.problem = fi, err.Error()
		return err
	}
	first := f.keys.Load() == nil
	f.keys.Store(&keys)
	f.loaded, f.failed, f.problem = fi, nil, ""
	if !first {
		f.log.Info("public key file reloaded", "path", f.path, "keys", len(keys))
	}
	return nil
}

// readKeyFile returns the keys of the file at path and the file's info as
// of before the read, so a write that lands during it is seen next time.
// The info comes back with a parse error too, so that version is not
// parsed again.
func readKeyFile(path string) ([]key, os.FileInfo, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, nil, err
	}
	data, err := io.ReadAll(io.LimitReader(fh, maxKeyFileBytes+1))
	if err != nil {
		return nil, nil, err
	}
	if len(data) > maxKeyFileBytes {
		return nil, fi, fmt.Errorf("larger than %d bytes", maxKeyFileBytes)
	}
	keys, err := parsePEM(data)
	return keys, fi, err
}

// sameVersion tells whether a and b are the same file with the same size
// and modification time: a replacement by rename, an edit in place and a
// truncation all differ.
func sameVersion(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}
