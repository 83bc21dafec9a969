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
