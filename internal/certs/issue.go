package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// The files Init writes into its directory.
const (
	CAFile    = "ca.pem"     // the cluster CA's certificate: --cluster-ca-file, and clients' --ca-file
	CAKeyFile = "ca-key.pem" // the CA's private key: keep it off the nodes
)

// CertFile is the name of node id's certificate in Init's directory
// (--tls-cert-file and --cluster-cert-file).
func CertFile(id string) string { return id + ".pem" }

// KeyFile is the name of node id's private key in Init's directory
// (--tls-key-file and --cluster-key-file).
func KeyFile(id string) string { return id + "-key.pem" }

// Default validities.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	NodeValidity = 365 * 24 * time.Hour
)

// backdate covers clocks a little behind the issuer's.
const backdate = 5 * time.Minute

// InitOptions says what Init issues.
type InitOptions struct {
	// Nodes are the node ids to issue certificates for.
	Nodes []string
	// Hosts are more names and addresses every node certificate carries
	// (besides the node's id, 127.0.0.1, ::1 and localhost): what clients
	// and browsers connect to.
	Hosts []string
	// NewCA replaces a CA already in the directory. Without it an existing
	// CA is used to issue the node certificates (to add a node, or to
	// renew certificates), and only a directory without one gets a new CA.
	NewCA bool
	// Validity of the node certificates; 0 means NodeValidity.
	Validity time.Duration
}

// InitResult says what Init wrote.
type InitResult struct {
	CreatedCA bool     // a new CA was made (else the existing one issued)
	Files     []string // every file written, in order
}

// Init writes a cluster CA (ECDSA P-256) and one certificate per node
// (ECDSA P-256, for server and client authentication) into dir, as
// CAFile, CAKeyFile, CertFile(id) and KeyFile(id): ready for both the
// public TLS flags and the cluster ones. Private keys are 0600; every
// file is written to a temporary name and renamed into place, so a node
// reading them never sees half a file. Node files already there are
// replaced (a renewal); the CA only with NewCA.
func Init(dir string, o InitOptions) (InitResult, error) {
	var res InitResult
	if len(o.Nodes) == 0 {
		return res, errors.New("certs: no nodes given")
	}
	seen := map[string]bool{}
	for _, id := range o.Nodes {
		if err := checkID(id); err != nil {
			return res, err
		}
		if seen[id] {
			return res, fmt.Errorf("certs: node %q given twice", id)
		}
		seen[id] = true
	}
	if o.Validity == 0 {
		o.Validity = NodeValidity
	}
	if o.Validity < 0 {
		return res, fmt.Errorf("certs: validity %v is negative", o.Validity)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return res, err
	}
	caPath, caKeyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	ca, caKey, err := loadCA(caPath, caKeyPath)
	switch {
	case o.NewCA, !exists(caPath) && !exists(caKeyPath):
		if ca, caKey, err = newCAFiles(caPath, caKeyPath); err != nil {
			return res, err
		}
		res.CreatedCA = true
		res.Files = append(res.Files, caPath, caKeyPath)
	case err != nil:
		// Half a CA, or one that does not load: never replaced unasked.
		return res, fmt.Errorf("certs: the CA in %s cannot issue certificates (ask for a new CA to replace it): %w", dir, err)
	}
	for _, id := range o.Nodes {
		certPEM, keyPEM, err := issue(ca, caKey, id, o.Hosts, o.Validity)
		if err != nil {
			return res, err
		}
		certPath, keyPath := filepath.Join(dir, CertFile(id)), filepath.Join(dir, KeyFile(id))
		// The key first: a node that looks between the two renames sees a
		// pair that does not match and waits for the next look.
		if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
			return res, err
		}
		if err := writeFile(certPath, certPEM, 0o644); err != nil {
			return res, err
		}
		res.Files = append(res.Files, certPath, keyPath)
	}
	return res, nil
}

// checkID accepts node ids that are safe as file names and as DNS labels
// or names.
func checkID(id string) error {
	if id == "" || len(id) > 63 || id == "ca" || id[0] == '.' || id[0] == '-' {
		return fmt.Errorf("certs: node id %q: want 1..63 of a-z A-Z 0-9 . - _, not starting with . or -, and not \"ca\"", id)
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
		default:
			return fmt.Errorf("certs: node id %q: want 1..63 of a-z A-Z 0-9 . - _", id)
		}
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// newCAFiles writes a new CA and reads it back.
func newCAFiles(caPath, caKeyPath string) (*x509.Certificate, crypto.Signer, error) {
	caPEM, keyPEM, err := NewCA(CAValidity)
	if err != nil {
		return nil, nil, err
	}
	if err := writeFile(caKeyPath, keyPEM, 0o600); err != nil {
		return nil, nil, err
	}
	if err := writeFile(caPath, caPEM, 0o644); err != nil {
		return nil, nil, err
	}
	return loadCA(caPath, caKeyPath)
}

// NewCA makes a self-signed CA certificate and its key (ECDSA P-256),
// PEM-encoded, valid for validity.
func NewCA(validity time.Duration) (certPEM, keyPEM []byte, err error) {
	return create(&x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"Switchboard"}},
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}, validity, nil, nil)
}

// create makes a new ECDSA P-256 key and a certificate for it from tmpl,
// with a random serial, valid from a little before now for validity (and
// no longer than parent), signed by parent's key: self-signed when parent
// is nil, and then named after its serial.
func create(tmpl *x509.Certificate, validity time.Duration, parent *x509.Certificate, parentKey crypto.Signer) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-backdate), now.Add(validity)
	if parent == nil {
		parent, parentKey = tmpl, key
		tmpl.Subject.CommonName = "Switchboard cluster CA " + tmpl.SerialNumber.Text(16)[:8]
	} else if tmpl.NotAfter.After(parent.NotAfter) {
		tmpl.NotAfter = parent.NotAfter // a chain is only valid while its CA is
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// loadCA reads a CA certificate and its key, and checks they belong
// together.
func loadCA(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	blk, _ := pem.Decode(cb)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s: no PEM certificate", certPath)
	}
	ca, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certPath, err)
	}
	if !ca.IsCA {
		return nil, nil, fmt.Errorf("%s: not a CA certificate", certPath)
	}
	kblk, _ := pem.Decode(kb)
	if kblk == nil {
		return nil, nil, fmt.Errorf("%s: no PEM key", keyPath)
	}
	var key any
	switch kblk.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(kblk.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(kblk.Bytes)
	default:
		err = fmt.Errorf("PEM block %q", kblk.Type)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s: not a signing key", keyPath)
	}
	if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(ca.PublicKey) {
		return nil, nil, fmt.Errorf("%s is not the key of %s", keyPath, certPath)
	}
	return ca, signer, nil
}

// issue makes node id's certificate and key, signed by ca.
func issue(ca *x509.Certificate, caKey crypto.Signer, id string, hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: id, Organization: []string{"Switchboard"}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range append([]string{id, "localhost", "127.0.0.1", "::1"}, hosts...) {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if h != "" && !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	certPEM, keyPEM, err = create(tmpl, validity, ca, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: issue %s: %w", id, err)
	}
	return certPEM, keyPEM, nil
}

// newSerial is a random 128-bit serial number.
func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

// writeFile writes data to path through a temporary file in the same
// directory, renamed into place, with mode perm.
func writeFile(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // gone after the rename; cleans up otherwise
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
