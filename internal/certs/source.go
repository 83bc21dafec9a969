// Package certs holds Switchboard's TLS material: certificate and key
// files that are read again when they change on disk (source.go), the
// tls.Configs built on them for the public listeners and for mutual TLS
// on the cluster port (config.go), and the generation of a cluster CA and
// node certificates for `sbctl certs init` and the test harnesses
// (issue.go).
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// CheckEvery is how often, at most, a Source looks at its files: a
// handshake that comes later than that after the last look stats them.
const CheckEvery = time.Second

// Source is a certificate and its key, and optionally a CA bundle, read
// from files. The files are looked at again at most once per CheckEvery,
// when a handshake needs them, and read again when one changed (size or
// modification time): a rotated certificate is used by new connections
// without a restart, and established ones are not touched. A new file
// that does not load — a key that does not match, a certificate that has
// expired or does not chain to the CA — leaves the old material in use
// and is logged once, as an error, if it still does not load a look
// later (a rotation that writes the certificate and then the key is not
// an error).
type Source struct {
	files []string // cert, key and, if any, CA
	log   *slog.Logger
	// mutual: the certificate must serve as both server and client, and
	// chain to the CA (the cluster port).
	mutual bool

	next atomic.Int64 // unix nanos before which the files are not looked at again
	mu   sync.Mutex   // one look at a time
	seen []stamp      // what the files looked like when last read
	// failed is why the last reading failed; it is logged if the files
	// are still the same at the next look.
	failed error
	cur    atomic.Pointer[material]
}

// material is one consistent reading of the files.
type material struct {
	cert  *tls.Certificate
	roots *x509.CertPool // nil without a CA file
	// server is the cluster listener's config for this material, handed
	// out by GetConfigForClient.
	server *tls.Config
}

// stamp is what tells a file changed.
type stamp struct {
	size    int64
	modTime time.Time
	err     bool // could not be statted
}

// Open reads a certificate and key (PEM), for a TLS server such as the
// public listener. The first reading must succeed.
func Open(certFile, keyFile string, log *slog.Logger) (*Source, error) {
	return open([]string{certFile, keyFile}, false, log)
}

// OpenMutual reads a certificate, its key and a CA bundle (PEM, one or
// more certificates) for mutual TLS: the certificate must chain to the
// CA and be usable for both server and client authentication. A bundle
// of the old and the new CA lets a cluster move to a new CA without a
// restart (docs/security.md).
func OpenMutual(caFile, certFile, keyFile string, log *slog.Logger) (*Source, error) {
	return open([]string{certFile, keyFile, caFile}, true, log)
}

func open(files []string, mutual bool, log *slog.Logger) (*Source, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Source{files: files, log: log.With("component", "tls"), mutual: mutual}
	seen := s.stat()
	m, err := s.read()
	if err != nil {
		return nil, err
	}
	s.seen = seen
	s.cur.Store(m)
	s.next.Store(time.Now().Add(CheckEvery).UnixNano())
	return s, nil
}

// current returns the material in use, after a look at the files if the
// last one is more than CheckEvery ago.
func (s *Source) current() *material {
	if time.Now().UnixNano() >= s.next.Load() {
		s.refresh()
	}
	return s.cur.Load()
}

// Certificate returns the certificate in use.
func (s *Source) Certificate() *tls.Certificate { return s.current().cert }

// Run looks at the files every CheckEvery until ctx ends, so that a
// change is picked up (or a bad file logged) even while no handshake
// needs the material.
func (s *Source) Run(ctx context.Context) {
	t := time.NewTicker(CheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.current()
		}
	}
}

// refresh reads the files again if one changed since the last reading.
func (s *Source) refresh() {
	if !s.mu.TryLock() {
		return // another handshake is looking; use what is there
	}
	defer s.mu.Unlock()
	if time.Now().UnixNano() < s.next.Load() {
		return
	}
	defer s.next.Store(time.Now().Add(CheckEvery).UnixNano())
	seen := s.stat()
	if equalStamps(seen, s.seen) {
		if s.failed != nil {
			// Still bad a look later: not a rotation caught half way.
			s.log.Error("TLS files changed but do not load; still using the previous certificate", "err", s.failed)
			s.failed = nil
		}
		return
	}
	// Remembered even when the reading fails, so that a bad file is read
	// and logged once; the next change (the rest of a rotation, or a fix)
	// is read again.
	s.seen = seen
	m, err := s.read()
	if s.failed = err; err != nil {
		return
	}
	s.cur.Store(m)
	s.log.Info("TLS certificate reloaded", "file", s.files[0], "subject", m.cert.Leaf.Subject.String(),
		"serial", m.cert.Leaf.SerialNumber.Text(16), "not_after", m.cert.Leaf.NotAfter)
}

func (s *Source) stat() []stamp {
	out := make([]stamp, len(s.files))
	for i, f := range s.files {
		fi, err := os.Stat(f)
		if err != nil {
			out[i].err = true
			continue
		}
		out[i] = stamp{size: fi.Size(), modTime: fi.ModTime()}
	}
	return out
}

func equalStamps(a, b []stamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].size != b[i].size || !a[i].modTime.Equal(b[i].modTime) || a[i].err != b[i].err {
			return false
		}
	}
	return true
}

// read loads and checks the files.
func (s *Source) read() (*material, error) {
	certFile, keyFile := s.files[0], s.files[1]
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%s, %s: %w", certFile, keyFile, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s: %w", certFile, err)
		}
		cert.Leaf = leaf
	}
	if now := time.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("%s: certificate is valid from %v to %v, not now", certFile, leaf.NotBefore, leaf.NotAfter)
	}
	m := &material{cert: &cert}
	if !s.mutual {
		return m, nil
	}
	caFile := s.files[2]
	if m.roots, err = ReadPool(caFile); err != nil {
		return nil, err
	}
	var inter []*x509.Certificate
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", certFile, err)
		}
		inter = append(inter, c)
	}
	if err := verify(leaf, inter, m.roots, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth); err != nil {
		return nil, fmt.Errorf("%s is not a node certificate of the CA in %s: %w", certFile, caFile, err)
	}
	m.server = &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{cert},
		ClientAuth:             tls.RequireAndVerifyClientCert,
		ClientCAs:              m.roots,
		SessionTicketsDisabled: true,
	}
	return m, nil
}

// ReadPool reads a CA bundle: one or more PEM certificates.
func ReadPool(caFile string) (*x509.CertPool, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", caFile, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate in it", caFile)
	}
	return pool, nil
}

// verify checks that leaf, with the intermediates it came with, chains
// to roots for each of the key usages.
func verify(leaf *x509.Certificate, intermediates []*x509.Certificate, roots *x509.CertPool, usages ...x509.ExtKeyUsage) error {
	inter := x509.NewCertPool()
	for _, c := range intermediates {
		inter.AddCert(c)
	}
	var errs []error
	for _, u := range usages {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
