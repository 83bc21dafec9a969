package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/switchboard/switchboard/internal/certs"
)

// cmdCerts runs `certs init`: a cluster CA and one certificate per node,
// for the public TLS flags and the cluster ones alike (docs/security.md).
func cmdCerts(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "init" {
		return usagef("certs: want \"certs init --dir D --nodes n1,n2,…\"")
	}
	fs := newFlagSet("certs init")
	dir := fs.String("dir", "", "directory for the CA and the node certificates (made if missing)")
	nodes := fs.String("nodes", "", "comma-separated node ids")
	hosts := fs.String("hosts", "", "comma-separated host names and IPs every node certificate also holds")
	newCA := fs.Bool("new-ca", false, "replace a CA already in --dir")
	validity := fs.Duration("validity", certs.NodeValidity, "how long the node certificates are valid")
	withSecrets := fs.Bool("secrets", false, "also write the token secret, API key, admin key and gossip key files that are missing")
	ifEmpty := fs.Bool("if-empty", false, "do nothing when --dir already holds files")
	ownerOf := fs.String("owner-of", "", "give --dir and the files written the owner (and group) of this path")
	group := fs.Int("group", -1, "give --dir and the files written this group, with keys and secrets readable by it (0640)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if _, err := positional(fs, 0, ""); err != nil {
		return err
	}
	ids := splitList(*nodes)
	switch {
	case *dir == "":
		return usagef("certs init: --dir is required")
	case len(ids) == 0:
		return usagef("certs init: --nodes is required")
	case *validity <= 0:
		return usagef("certs init: --validity must be positive, got %v", *validity)
	case *group < -1:
		return usagef("certs init: --group must be a group id, got %d", *group)
	}
	if *ifEmpty {
		entries, err := os.ReadDir(*dir)
		if err != nil && !os.IsNotExist(err) {
			return err
		}
		if len(entries) > 0 {
			_, err := fmt.Fprintf(stdout, "%s is not empty: left alone (empty it for a new CA and secrets)\n", *dir)
			return err
		}
	}
	own, err := newOwnership(*ownerOf, *group)
	if err != nil {
		return err
	}
	res, err := certs.Init(*dir, certs.InitOptions{Nodes: ids, Hosts: splitList(*hosts), NewCA: *newCA, Validity: *validity})
	if err != nil {
		return err
	}
	var secretFiles []string
	if *withSecrets {
		if secretFiles, err = writeSecrets(*dir); err != nil {
			return err
		}
	}
	if err := own.apply(*dir, append(res.Files, secretFiles...)); err != nil {
		return err
	}
	ca, caKey := filepath.Join(*dir, certs.CAFile), filepath.Join(*dir, certs.CAKeyFile)
	if res.CreatedCA {
		fmt.Fprintf(stdout, "new cluster CA  %s (key %s: keep it off the nodes)\n", ca, caKey)
	} else {
		fmt.Fprintf(stdout, "issued by the existing CA  %s\n", ca)
	}
	for _, id := range ids {
		fmt.Fprintf(stdout, "%-14s  %s  %s\n", id, filepath.Join(*dir, certs.CertFile(id)), filepath.Join(*dir, certs.KeyFile(id)))
	}
	for _, f := range secretFiles {
		fmt.Fprintf(stdout, "new secret      %s\n", f)
	}
	id := ids[0]
	cert, key := filepath.Join(*dir, certs.CertFile(id)), filepath.Join(*dir, certs.KeyFile(id))
	_, err = fmt.Fprintf(stdout, `
Node %s (the same for each node, with its own files):
  switchboard … --tls-cert-file %s --tls-key-file %s \
                --cluster-ca-file %s --cluster-cert-file %s --cluster-key-file %s
Clients and operators trust the CA:
  sbctl --ca-file %s --addr https://HOST:PORT status
`, id, cert, key, ca, cert, key, ca)
	return err
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// The secret files `certs init --secrets` writes next to the certificates:
// --token-secret-file, --api-key-file, --admin-key-file, --gossip-key-file.
const (
	tokenSecretFile = "token-secret"
	apiKeyFile      = "api-key"
	adminKeyFile    = "admin-key"
	gossipKeyFile   = "gossip-key"
)

// writeSecrets writes each secret file of dir that is missing (0600): 32
// random bytes, hex for the three keys, base64 for the gossip key (an
// AES-256 key). It returns the files written; existing ones are kept.
func writeSecrets(dir string) ([]string, error) {
	var written []string
	for _, s := range []struct {
		name string
		enc  func([]byte) string
	}{
		{tokenSecretFile, hex.EncodeToString},
		{apiKeyFile, hex.EncodeToString},
		{adminKeyFile, hex.EncodeToString},
		{gossipKeyFile, base64.StdEncoding.EncodeToString},
	} {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return written, err
		}
		path := filepath.Join(dir, s.name)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if os.IsExist(err) {
			continue
		}
		if err != nil {
			return written, err
		}
		_, err = f.WriteString(s.enc(b[:]) + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return written, fmt.Errorf("%s: %w", path, err)
		}
		written = append(written, path)
	}
	return written, nil
}

// ownership is what --owner-of and --group ask of the files: -1 keeps an
// id as it is.
type ownership struct {
	uid, gid int
	// shared: the group reads keys and secrets, and enters the directory.
	shared bool
}

func newOwnership(ownerOf string, group int) (ownership, error) {
	o := ownership{uid: -1, gid: group, shared: group >= 0}
	if ownerOf == "" {
		return o, nil
	}
	fi, err := os.Stat(ownerOf)
	if err != nil {
		return o, fmt.Errorf("--owner-of: %w", err)
	}
	uid, gid, ok := fileOwner(fi)
	if !ok {
		return o, fmt.Errorf("--owner-of %s: this system does not say who owns it", ownerOf)
	}
	o.uid = uid
	if group < 0 {
		o.gid = gid
	}
	return o, nil
}

// apply gives dir and files their owner and group. With a shared group,
// the directory becomes 0750 and private keys and secrets 0640 (the CA's
// key stays 0600: nodes never need it).
func (o ownership) apply(dir string, files []string) error {
	if o.uid < 0 && o.gid < 0 {
		return nil
	}
	paths := append([]string{dir}, files...)
	for _, p := range paths {
		if err := os.Chown(p, o.uid, o.gid); err != nil {
			return err
		}
		if !o.shared {
			continue
		}
		var mode os.FileMode
		switch base := filepath.Base(p); {
		case p == dir:
			mode = 0o750
		case base == certs.CAKeyFile:
			continue
		case strings.HasSuffix(base, "-key.pem"), base == tokenSecretFile, base == apiKeyFile, base == adminKeyFile, base == gossipKeyFile:
			mode = 0o640
		default:
			continue
		}
		if err := os.Chmod(p, mode); err != nil {
			return err
		}
	}
	return nil
}
