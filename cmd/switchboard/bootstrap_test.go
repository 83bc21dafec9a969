package main

import (
	"io"
	"strings"
	"testing"
)

// --bootstrap-expect (or SWITCHBOARD_BOOTSTRAP_EXPECT) reaches the node's
// config, and is refused beside --bootstrap, or without --join, before
// anything listens.
func TestBootstrapExpectFlag(t *testing.T) {
	t.Setenv("SWITCHBOARD_BOOTSTRAP_EXPECT", "3")
	o, err := parse([]string{"--join", "a:7702,b:7702"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.BootstrapExpect != 3 {
		t.Fatalf("BootstrapExpect = %d, want 3", o.cfg.BootstrapExpect)
	}

	tok, api, admin := writeSecrets(t, t.TempDir())
	base := []string{"--node-id", "n1", "--data-dir", t.TempDir(), "--public-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0",
		"--token-secret-file", tok, "--api-key-file", api, "--admin-key-file", admin}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--bootstrap", "--join", "127.0.0.1:1"}, "exclude each other"},
		{nil, "needs join"},
	} {
		err := run(append(tt.args, base...), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want one containing %q", tt.args, err, tt.want)
		}
	}
}
