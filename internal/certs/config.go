package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
)

// ServerConfig is TLS for the public and admin listeners: the Source's
// certificate, TLS 1.2 or later, HTTP/1.1 only (a WebSocket upgrade
// needs HTTP/1.1, and the publish API does not need HTTP/2).
func (s *Source) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.current().cert, nil
		},
	}
}

// MutualServerConfig is TLS for the cluster port's listener: TLS 1.3, the
// Source's certificate, and a client certificate required that chains to
// the Source's CA. Each handshake takes the material current then. No
// session resumption: every connection proves itself against the CA in
// force.
func (s *Source) MutualServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		SessionTicketsDisabled: true,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.current().server, nil
		},
	}
}

// MutualClientConfig is TLS for dialing other nodes' cluster ports: TLS
// 1.3, the Source's certificate as client certificate, and a server
// certificate that chains to the Source's CA.
//
// The name policy: a certificate of the cluster CA, valid for server
// authentication, is the credential; the dialed host is not matched
// against its SANs. The listener cannot know which node dials it, so a
// name check there is impossible, and any holder of a CA certificate
// can already join Raft and call every peer method: checking names when
// dialing would guard nothing that the CA does not, while it would break
// clusters whose nodes are reached at addresses no certificate names
// (container IPs, NAT, proxies). The CA must therefore be the cluster's
// own (docs/security.md).
func (s *Source) MutualClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Chain verification is VerifyConnection's, without the name check.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.current().cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("certs: the server sent no certificate")
			}
			return verify(cs.PeerCertificates[0], cs.PeerCertificates[1:], s.current().roots, x509.ExtKeyUsageServerAuth)
		},
	}
}
