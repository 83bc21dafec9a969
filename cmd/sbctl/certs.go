package main

import (
	"fmt"
	"io"
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
	}
	res, err := certs.Init(*dir, certs.InitOptions{Nodes: ids, Hosts: splitList(*hosts), NewCA: *newCA, Validity: *validity})
	if err != nil {
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
