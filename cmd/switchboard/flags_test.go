package main

import (
	"io"
	"strings"
	"testing"
)

// A wildcard listen address without an advertised one is refused before
// anything listens, with an error naming the flag to set.
func TestWildcardPublicAddressNeedsAdvertise(t *testing.T) {
	tok, api, admin := writeSecrets(t, t.TempDir())
	base := []string{"--node-id", "n1", "--data-dir", t.TempDir(),
		"--cluster-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--bootstrap",
		"--token-secret-file", tok, "--api-key-file", api, "--admin-key-file", admin}
	for _, tt := range []struct{ addr, flag string }{
		{"--public-addr=0.0.0.0:7900", "--advertise-public"},
		{"--public-addr=[::]:7900", "--advertise-public"},
	} {
		err := run(append([]string{tt.addr}, base...), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.flag) {
			t.Errorf("%s: err = %v, want one naming %s", tt.addr, err, tt.flag)
		}
	}
}

// The cluster TLS flags come all three or none: a partial set is refused
// before anything listens, naming the missing flag; so is the public pair.
func TestTLSFlagsAllOrNone(t *testing.T) {
	tok, api, admin := writeSecrets(t, t.TempDir())
	base := []string{"--node-id", "n1", "--data-dir", t.TempDir(), "--public-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--bootstrap",
		"--token-secret-file", tok, "--api-key-file", api, "--admin-key-file", admin}
	for _, tt := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--cluster-ca-file=ca.pem", "--cluster-cert-file=n1.pem"}, "cluster-key-file is required"},
		{[]string{"--cluster-cert-file=n1.pem", "--cluster-key-file=n1-key.pem"}, "cluster-ca-file is required"},
		{[]string{"--cluster-ca-file=ca.pem", "--cluster-key-file=n1-key.pem"}, "cluster-cert-file is required"},
		{[]string{"--tls-cert-file=n1.pem"}, "tls-key-file is required"},
		{[]string{"--tls-cert-file=/nonexistent.pem", "--tls-key-file=/nonexistent-key.pem"}, "tls-cert-file"},
	} {
		err := run(append(tt.flags, base...), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want one saying %q", tt.flags, err, tt.want)
		}
	}
}
