package clustertest

import (
	"crypto/tls"
	"io"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/certs"
	"github.com/switchboard/switchboard/node"
)

// initTLS makes the cluster's CA and a certificate for each of ids in
// CertDir, and makes the harness's own requests trust that CA.
func (c *Cluster) initTLS(ids []string) {
	c.certs = filepath.Join(c.dir, "certs")
	for _, id := range ids {
		c.issue(id)
	}
	if !c.opts.PublicTLS {
		return
	}
	pool, err := certs.ReadPool(filepath.Join(c.certs, certs.CAFile))
	if err != nil {
		c.t.Fatal(err)
	}
	c.tls = &tls.Config{RootCAs: pool}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = c.tls
	c.hc = &http.Client{Timeout: 10 * time.Second, Transport: tr}
}

// issue writes a new certificate for node id, from the cluster's CA (made
// on first use).
func (c *Cluster) issue(ids ...string) {
	c.t.Helper()
	if _, err := certs.Init(c.certs, certs.InitOptions{Nodes: ids}); err != nil {
		c.t.Fatal(err)
	}
}

// configureTLS points node id's config at its certificate files.
func (c *Cluster) configureTLS(id string, cfg *node.Config) {
	if c.certs == "" {
		return
	}
	cert, key := filepath.Join(c.certs, certs.CertFile(id)), filepath.Join(c.certs, certs.KeyFile(id))
	if c.opts.PublicTLS {
		cfg.TLS = node.TLSConfig{CertFile: cert, KeyFile: key}
	}
	if c.opts.ClusterTLS {
		cfg.ClusterTLS = node.ClusterTLSConfig{CAFile: filepath.Join(c.certs, certs.CAFile), CertFile: cert, KeyFile: key}
	}
}

// CertDir is where the cluster's CA and node certificates are, as
// certs.Init lays them out; "" without TLS.
func (c *Cluster) CertDir() string { return c.certs }

// ClientTLS is TLS for the cluster's clients (client.Config.TLS, an
// http.Transport's TLSClientConfig): it trusts the cluster's CA. nil
// without PublicTLS.
func (c *Cluster) ClientTLS() *tls.Config { return c.tls }

// RenewCerts issues every node a new certificate and key from the same
// CA, in place, as an operator's rotation would: running nodes use them
// for new connections within about certs.CheckEvery.
func (c *Cluster) RenewCerts() {
	c.t.Helper()
	c.issue(c.IDs()...)
}

// MutualClient is the cluster-port client TLS of node id's certificate
// in dir (certs.Init's layout).
func MutualClient(t testing.TB, dir, id string) *tls.Config {
	t.Helper()
	s, err := certs.OpenMutual(filepath.Join(dir, certs.CAFile), filepath.Join(dir, certs.CertFile(id)), filepath.Join(dir, certs.KeyFile(id)), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s.MutualClientConfig()
}

// CheckClusterPortRefuses asserts that the cluster port at addr, which
// takes mutual TLS, gives nothing to what cannot prove itself: plain TCP,
// TLS without a client certificate, and TLS with the certificate of
// node id from strangerDir (another CA). Each sends what a node would, a
// kind byte and an RPC, and may read at most a TLS alert.
func CheckClusterPortRefuses(t testing.TB, addr, strangerDir, id string) {
	t.Helper()
	for _, tt := range []struct {
		name string
		tls  *tls.Config
	}{
		{"plain TCP", nil},
		{"TLS without a client certificate", &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}},
		{"TLS with a certificate of another CA", MutualClient(t, strangerDir, id)},
	} {
		got, err := clusterPortAnswer(addr, tt.tls)
		if tt.tls == nil && len(got) > 0 && got[0] != 0x15 || tt.tls != nil && (len(got) > 0 || err == nil) {
			t.Errorf("%s: read %q (%v) from the cluster port %s", tt.name, got, err, addr)
		}
	}
}

// clusterPortAnswer connects to a cluster port (over TLS with cfg), sends
// a kind byte and an RPC, and returns all it reads. 0x15 starts a TLS
// alert record.
func clusterPortAnswer(addr string, cfg *tls.Config) ([]byte, error) {
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	conn := raw
	if cfg != nil {
		tc := tls.Client(raw, cfg)
		_ = tc.Handshake() // TLS 1.3: a refusal may come at the first read
		conn = tc
	}
	_, _ = conn.Write(append([]byte{'R'}, "an AppendEntries the node must never read"...))
	return io.ReadAll(conn)
}

// ServedSerial is the serial number of the certificate served at addr:
// the public port with a client's TLS, or the cluster port with a node's
// (MutualClient).
func ServedSerial(addr string, cfg *tls.Config) (*big.Int, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// WaitRenewed waits until a node serves a certificate other than old on
// its public port and that same certificate (one node certificate for
// both) on its cluster port, as it does once it has read renewed files.
func WaitRenewed(t testing.TB, publicAddr, clusterAddr string, public, cluster *tls.Config, old *big.Int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := ServedSerial(publicAddr, public)
		if err == nil && p.Cmp(old) != 0 {
			s, err := ServedSerial(clusterAddr, cluster)
			if err == nil && s.Cmp(p) == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s and %s do not serve a renewed certificate after 10s (last: %v)", publicAddr, clusterAddr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
