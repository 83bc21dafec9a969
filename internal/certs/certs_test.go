package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/testenv"
)

func initDir(t *testing.T, dir string, o InitOptions) InitResult {
	t.Helper()
	res, err := Init(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	kp, err := tls.LoadX509KeyPair(path, strings.TrimSuffix(path, ".pem")+"-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	return kp.Leaf
}

func TestInitIssuesACAAndNodeCertificates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	res := initDir(t, dir, InitOptions{Nodes: []string{"n1", "n2"}, Hosts: []string{"sb.example.com", "10.1.2.3"}})
	if !res.CreatedCA || len(res.Files) != 6 {
		t.Fatalf("result %+v", res)
	}
	for name, mode := range map[string]os.FileMode{CAFile: 0o644, CAKeyFile: 0o600, "n1.pem": 0o644, "n1-key.pem": 0o600, "n2.pem": 0o644, "n2-key.pem": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	roots, err := ReadPool(filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	c := readCert(t, filepath.Join(dir, "n1.pem"))
	if k, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("n1 key is %T, want ECDSA P-256", c.PublicKey)
	}
	if err := verify(c, nil, roots, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("n1 as server and client: %v", err)
	}
	for _, name := range []string{"n1", "localhost", "sb.example.com", "127.0.0.1", "::1", "10.1.2.3"} {
		if err := c.VerifyHostname(name); err != nil {
			t.Errorf("n1 certificate lacks %s: %v", name, err)
		}
	}
	if c.Subject.CommonName != "n1" {
		t.Errorf("n1 CN %q", c.Subject.CommonName)
	}
}

func TestInitKeepsTheCAUnlessAskedAndRenewsNodes(t *testing.T) {
	dir := t.TempDir()
	initDir(t, dir, InitOptions{Nodes: []string{"n1"}})
	ca1, _ := os.ReadFile(filepath.Join(dir, CAFile))
	n1 := readCert(t, filepath.Join(dir, "n1.pem"))

	res := initDir(t, dir, InitOptions{Nodes: []string{"n1", "n4"}})
	ca2, _ := os.ReadFile(filepath.Join(dir, CAFile))
	if res.CreatedCA || !bytes.Equal(ca1, ca2) {
		t.Fatal("a second init replaced the CA unasked")
	}
	renewed := readCert(t, filepath.Join(dir, "n1.pem"))
	if renewed.SerialNumber.Cmp(n1.SerialNumber) == 0 {
		t.Error("n1 was not renewed")
	}
	roots, _ := ReadPool(filepath.Join(dir, CAFile))
	if err := verify(readCert(t, filepath.Join(dir, "n4.pem")), nil, roots, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("n4 from the kept CA: %v", err)
	}

	res = initDir(t, dir, InitOptions{Nodes: []string{"n1"}, NewCA: true})
	ca3, _ := os.ReadFile(filepath.Join(dir, CAFile))
	if !res.CreatedCA || bytes.Equal(ca1, ca3) {
		t.Fatal("NewCA kept the CA")
	}

	// Half a CA is never replaced unasked.
	if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(dir, InitOptions{Nodes: []string{"n1"}}); err == nil {
		t.Fatal("init over a CA without its key succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a CA key appeared: %v", err)
	}
}

func TestInitRefusesBadNodeIDs(t *testing.T) {
	for _, ids := range [][]string{nil, {""}, {"ca"}, {"../x"}, {"a/b"}, {"n1", "n1"}, {"-n"}} {
		if _, err := Init(t.TempDir(), InitOptions{Nodes: ids}); err == nil {
			t.Errorf("Init(%q) succeeded", ids)
		}
	}
}

// waitLooks lets the Source look at its files n more times.
func waitLooks(s *Source, n int) {
	for range n {
		time.Sleep(CheckEvery + 50*time.Millisecond)
		s.current()
	}
}

func TestSourceReadsChangedFilesAndKeepsTheOldOnesWhenBad(t *testing.T) {
	dir := t.TempDir()
	initDir(t, dir, InitOptions{Nodes: []string{"n1"}})
	var logs testenv.Buffer
	s, err := OpenMutual(filepath.Join(dir, CAFile), filepath.Join(dir, "n1.pem"), filepath.Join(dir, "n1-key.pem"), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	first := s.Certificate().Leaf.SerialNumber

	initDir(t, dir, InitOptions{Nodes: []string{"n1"}}) // renewal
	waitLooks(s, 1)
	second := s.Certificate().Leaf.SerialNumber
	if second.Cmp(first) == 0 {
		t.Fatal("the renewed certificate was not read")
	}
	if !strings.Contains(logs.String(), "TLS certificate reloaded") {
		t.Errorf("no reload logged:\n%s", logs.String())
	}

	// A bad certificate file: the old certificate stays, one error.
	if err := os.WriteFile(filepath.Join(dir, "n1.pem"), []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitLooks(s, 3)
	if got := s.Certificate().Leaf.SerialNumber; got.Cmp(second) != 0 {
		t.Fatalf("serial %v after a bad file, want %v kept", got, second)
	}
	if n := strings.Count(logs.String(), "do not load"); n != 1 {
		t.Errorf("%d errors logged for one bad file, want 1:\n%s", n, logs.String())
	}

	// A certificate of another CA does not chain: kept out too.
	other := t.TempDir()
	initDir(t, other, InitOptions{Nodes: []string{"n1"}})
	for _, f := range []string{"n1.pem", "n1-key.pem"} {
		b, _ := os.ReadFile(filepath.Join(other, f))
		if err := writeFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	waitLooks(s, 2)
	if got := s.Certificate().Leaf.SerialNumber; got.Cmp(second) != 0 {
		t.Fatalf("a certificate of another CA was taken")
	}
	if !strings.Contains(logs.String(), "not a node certificate of the CA") {
		t.Errorf("no error for the foreign certificate:\n%s", logs.String())
	}
}

func TestOpenRefusesWhatCannotServe(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	initDir(t, dir, InitOptions{Nodes: []string{"n1", "n2"}})
	initDir(t, other, InitOptions{Nodes: []string{"n1"}})
	p := func(d, f string) string { return filepath.Join(d, f) }
	for name, files := range map[string][3]string{
		"key of another node":   {p(dir, CAFile), p(dir, "n1.pem"), p(dir, "n2-key.pem")},
		"certificate of a CA":   {p(dir, CAFile), p(other, "n1.pem"), p(other, "n1-key.pem")},
		"missing CA file":       {p(dir, "nope.pem"), p(dir, "n1.pem"), p(dir, "n1-key.pem")},
		"CA file without certs": {p(dir, "n1-key.pem"), p(dir, "n1.pem"), p(dir, "n1-key.pem")},
	} {
		if _, err := OpenMutual(files[0], files[1], files[2], nil); err == nil {
			t.Errorf("%s: OpenMutual succeeded", name)
		}
	}
	if _, err := Open(p(dir, "n1.pem"), p(dir, "n2-key.pem"), nil); err == nil {
		t.Error("Open with a key of another certificate succeeded")
	}
}

// handshake runs a TLS handshake between the two configs over a pipe and
// returns the client's and the server's errors.
func handshake(t *testing.T, client, server *tls.Config) (error, error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srvErr := make(chan error, 1)
	go func() {
		s := tls.Server(b, server)
		err := s.HandshakeContext(ctx)
		if err == nil {
			// TLS 1.3: the client's certificate is checked after its
			// Finished; a read makes the refusal reach the client.
			_, err = s.Write([]byte{1})
		}
		srvErr <- err
		b.Close()
	}()
	c := tls.Client(a, client)
	err := c.HandshakeContext(ctx)
	if err == nil {
		var buf [1]byte
		_, err = c.Read(buf[:])
	}
	return err, <-srvErr
}

func TestMutualConfigsNeedACertificateOfTheCA(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	initDir(t, dir, InitOptions{Nodes: []string{"n1", "n2"}})
	initDir(t, other, InitOptions{Nodes: []string{"n2"}})
	open := func(d, id string) *Source {
		s, err := OpenMutual(filepath.Join(d, CAFile), filepath.Join(d, id+".pem"), filepath.Join(d, id+"-key.pem"), nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	n1, n2, stranger := open(dir, "n1"), open(dir, "n2"), open(other, "n2")

	if cerr, serr := handshake(t, n2.MutualClientConfig(), n1.MutualServerConfig()); cerr != nil || serr != nil {
		t.Fatalf("nodes of one CA: client %v, server %v", cerr, serr)
	}
	// The server checks the dialer's certificate against its CA...
	if _, serr := handshake(t, stranger.MutualClientConfig(), n1.MutualServerConfig()); serr == nil {
		t.Error("server accepted a client certificate of another CA")
	}
	noCert := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	if _, serr := handshake(t, noCert, n1.MutualServerConfig()); serr == nil {
		t.Error("server accepted a client without a certificate")
	}
	// ...and the dialer the server's.
	if cerr, _ := handshake(t, n1.MutualClientConfig(), stranger.MutualServerConfig()); cerr == nil {
		t.Error("client accepted a server certificate of another CA")
	}
}
