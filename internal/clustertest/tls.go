package clustertest

import (
	"crypto/tls"
	"net/http"
	"path/filepath"
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
