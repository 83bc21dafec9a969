package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
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

// --gossip-key-file (or SWITCHBOARD_GOSSIP_KEY_FILE) gives the node its
// gossip keys, the first the primary; a bad line is refused before
// anything listens, with an error naming the flag and the line but not
// the line's contents.
func TestGossipKeyFile(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 16)
	files := map[string]string{
		"good":         "\n  " + base64.StdEncoding.EncodeToString(k1) + "  \n\n" + base64.StdEncoding.EncodeToString(k2) + "\n",
		"not base64":   base64.StdEncoding.EncodeToString(k1) + "\nsecret-ish!\n",
		"wrong length": "\n" + base64.StdEncoding.EncodeToString([]byte("short")),
		"empty":        " \n",
	}
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	good := filepath.Join(dir, "good")

	t.Run("keys in order", func(t *testing.T) {
		t.Setenv("SWITCHBOARD_GOSSIP_KEY_FILE", good)
		o, err := parse(nil, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if err := loadGossipKeys(o); err != nil {
			t.Fatal(err)
		}
		if got := o.cfg.Gossip.Keys; len(got) != 2 || !bytes.Equal(got[0], k1) || !bytes.Equal(got[1], k2) {
			t.Fatalf("Gossip.Keys = %x", got)
		}
	})

	tok, api, admin := writeSecrets(t, t.TempDir())
	base := []string{"--node-id", "n1", "--data-dir", t.TempDir(), "--public-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--bootstrap",
		"--token-secret-file", tok, "--api-key-file", api, "--admin-key-file", admin}
	for _, tt := range []struct{ name, want string }{
		{"not base64", "line 2: invalid gossip key: not base64"},
		{"wrong length", "line 2: invalid gossip key: 5 bytes, want 16, 24 or 32"},
		{"empty", "no key in the file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name)
			err := run(append([]string{"--gossip-key-file", p}, base...), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), "--gossip-key-file: "+p+": ") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want --gossip-key-file, the path and %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "secret-ish") {
				t.Fatalf("the error shows the line: %v", err)
			}
		})
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

// Client tokens need a key source, and a bad --allowed-origins entry is
// refused, each with an error naming the flag, before anything listens.
func TestTokenAndOriginFlagsAreChecked(t *testing.T) {
	_, api, admin := writeSecrets(t, t.TempDir())
	base := []string{"--node-id", "n1", "--data-dir", t.TempDir(), "--public-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--bootstrap",
		"--api-key-file", api, "--admin-key-file", admin}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "--token-secret-file is required (or --token-public-key-file or --token-jwks-url)"},
		{[]string{"--token-jwks-url", "ftp://keys.example/jwks"}, "JWKSURL must be an http or https URL"},
		{[]string{"--token-public-key-file", filepath.Join(t.TempDir(), "missing.pem")}, "missing.pem"},
		{[]string{"--token-jwks-url", "https://keys.example/jwks", "--allowed-origins", "https://app.example.com,ftp://x/y"}, "allowed-origins"},
	} {
		err := run(append(tt.args, base...), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want one with %q", tt.args, err, tt.want)
		}
	}
}

// Fault injection is off unless --enable-fault-injection (or
// SWITCHBOARD_ENABLE_FAULT_INJECTION) turns it on.
func TestFaultInjectionFlag(t *testing.T) {
	o, err := parse(nil, io.Discard)
	if err != nil || o.cfg.FaultInjection {
		t.Fatalf("default: fault injection %v (%v), want off", o.cfg.FaultInjection, err)
	}
	if o, err = parse([]string{"--enable-fault-injection"}, io.Discard); err != nil || !o.cfg.FaultInjection {
		t.Fatalf("flag: fault injection %v (%v), want on", o.cfg.FaultInjection, err)
	}
	t.Setenv("SWITCHBOARD_ENABLE_FAULT_INJECTION", "true")
	if o, err = parse(nil, io.Discard); err != nil || !o.cfg.FaultInjection {
		t.Fatalf("environment: fault injection %v (%v), want on", o.cfg.FaultInjection, err)
	}
}

// --otlp-endpoint and --trace-sample-ratio (or their SWITCHBOARD_*
// variables) map onto the node's tracing config, 1% sampled by default;
// a bad value is refused before anything listens, naming the flag.
func TestTraceFlags(t *testing.T) {
	o, err := parse(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Tracing.Endpoint != "" || o.cfg.Tracing.SampleRatio != 0.01 {
		t.Fatalf("defaults: endpoint %q ratio %v, want none and 0.01", o.cfg.Tracing.Endpoint, o.cfg.Tracing.SampleRatio)
	}
	o, err = parse([]string{"--otlp-endpoint", "http://collector:4318", "--trace-sample-ratio", "0.25"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Tracing.Endpoint != "http://collector:4318" || o.cfg.Tracing.SampleRatio != 0.25 {
		t.Fatalf("flags: %+v", o.cfg.Tracing)
	}
	t.Setenv("SWITCHBOARD_OTLP_ENDPOINT", "https://otel.example/")
	t.Setenv("SWITCHBOARD_TRACE_SAMPLE_RATIO", "1")
	if o, err = parse(nil, io.Discard); err != nil {
		t.Fatal(err)
	}
	if o.cfg.Tracing.Endpoint != "https://otel.example/" || o.cfg.Tracing.SampleRatio != 1 {
		t.Fatalf("environment: %+v", o.cfg.Tracing)
	}

	tok, api, admin := writeSecrets(t, t.TempDir())
	base := []string{"--node-id", "n1", "--data-dir", t.TempDir(), "--public-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--bootstrap",
		"--token-secret-file", tok, "--api-key-file", api, "--admin-key-file", admin}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--trace-sample-ratio", "2"}, "trace-sample-ratio"},
		{[]string{"--otlp-endpoint", "collector:4318"}, "otlp-endpoint"},
	} {
		err := run(append(tt.args, base...), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want one naming %s", tt.args, err, tt.want)
		}
	}
}

// Every flag DESIGN.md §6 lists exists under exactly that name (each
// then reads SWITCHBOARD_<FLAG> through applyEnv), and the limits have
// the contract's defaults: --max-inflight-publishes is 10,000 messages
// per node (§4).
func TestContractFlagsExist(t *testing.T) {
	var usage strings.Builder
	if _, err := parse([]string{"-h"}, &usage); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	for _, name := range []string{"dev", "node-id", "region", "zone", "data-dir", "public-addr",
		"cluster-addr", "gossip-addr", "bootstrap", "join", "token-secret-file", "api-key-file",
		"admin-key-file", "tls-cert-file", "tls-key-file", "cluster-ca-file", "cluster-cert-file",
		"cluster-key-file", "gossip-key-file", "token-public-key-file", "token-jwks-url",
		"token-issuer", "token-audience", "allowed-origins", "max-connections",
		"max-connections-per-user", "connect-rate", "client-frame-rate", "max-inflight-publishes",
		"max-channels-per-conn", "enable-fault-injection", "otlp-endpoint", "trace-sample-ratio",
		"bootstrap-expect"} {
		if !strings.Contains(usage.String(), "\n  -"+name+" ") && !strings.Contains(usage.String(), "\n  -"+name+"\n") {
			t.Errorf("no flag --%s", name)
		}
	}
	o, err := parse(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := o.cfg.API.MaxInflight; got != 10000 {
		t.Errorf("--max-inflight-publishes default %d, want 10000 (DESIGN.md §4)", got)
	}
	t.Setenv("SWITCHBOARD_MAX_INFLIGHT_PUBLISHES", "123")
	if o, err = parse(nil, io.Discard); err != nil || o.cfg.API.MaxInflight != 123 {
		t.Errorf("SWITCHBOARD_MAX_INFLIGHT_PUBLISHES=123: %d, %v", o.cfg.API.MaxInflight, err)
	}
}
