// Command switchboard runs one Switchboard node (DESIGN.md §6).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/switchboard/switchboard/internal/secret"
	"github.com/switchboard/switchboard/internal/token"
	"github.com/switchboard/switchboard/membership"
	"github.com/switchboard/switchboard/node"
)

// version is the build's version, stamped by deploy/docker/build.sh
// (-ldflags "-X main.version=…"); logged at start.
var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "switchboard:", err)
		os.Exit(1)
	}
}

type options struct {
	dev                                       bool
	cfg                                       node.Config
	join                                      string
	tokenSecretFile, apiKeyFile, adminKeyFile string
	tokenSecret                               []byte // the first key of tokenSecretFile
	gossipKeyFile                             string
	logLevel, logFormat                       string
	drainTimeout                              time.Duration
}

func parse(args []string, stderr io.Writer) (*options, error) {
	o := &options{cfg: node.DefaultConfig()}
	c := &o.cfg
	fs := flag.NewFlagSet("switchboard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.dev, "dev", false, "run one node with generated secrets in ./switchboard-data (the embedded default)")
	fs.StringVar(&c.NodeID, "node-id", "", "unique node id")
	fs.StringVar(&c.Region, "region", c.Region, "region of this node")
	fs.StringVar(&c.Zone, "zone", c.Zone, "zone (availability zone) of this node")
	fs.StringVar(&c.DataDir, "data-dir", "", "directory for Raft state")
	fs.StringVar(&c.PublicAddr, "public-addr", "", "client WebSocket and HTTP API listen address")
	fs.StringVar(&c.AdminAddr, "admin-addr", "", "optional separate admin API listen address (also serves /debug/pprof)")
	fs.StringVar(&c.ClusterAddr, "cluster-addr", "", "Raft and peer-link listen address")
	fs.StringVar(&c.GossipAddr, "gossip-addr", "", "gossip (memberlist) listen address")
	fs.StringVar(&c.AdvertisePublic, "advertise-public", "", "public address other nodes and clients use, if not the listen address")
	fs.StringVar(&c.AdvertiseCluster, "advertise-cluster", "", "cluster address other nodes use, if not the listen address")
	fs.StringVar(&c.AdvertiseGossip, "advertise-gossip", "", "gossip address other nodes use, if not the listen address")
	fs.BoolVar(&c.Bootstrap, "bootstrap", false, "bootstrap a new cluster (ignored once this node has Raft state)")
	fs.StringVar(&o.join, "join", "", "comma-separated gossip addresses (HOST:PORT) of nodes to join")
	fs.IntVar(&c.BootstrapExpect, "bootstrap-expect", 0, "form a new cluster once gossip shows N live members, none with Raft state: the lowest node id bootstraps, the others join (ignored once this node has Raft state; not with --bootstrap)")
	fs.StringVar(&o.tokenSecretFile, "token-secret-file", "", "file holding the HS256 secret for client tokens")
	fs.StringVar(&o.apiKeyFile, "api-key-file", "", "file holding the publish API key")
	fs.StringVar(&o.adminKeyFile, "admin-key-file", "", "file holding the admin API key")
	fs.StringVar(&c.TLS.CertFile, "tls-cert-file", "", "PEM certificate (chain) of the public and admin listeners: HTTPS and WSS; re-read when it changes")
	fs.StringVar(&c.TLS.KeyFile, "tls-key-file", "", "PEM private key of --tls-cert-file")
	fs.StringVar(&c.ClusterTLS.CAFile, "cluster-ca-file", "", "PEM cluster CA: mutual TLS on the cluster port, where peers need a certificate of this CA")
	fs.StringVar(&c.ClusterTLS.CertFile, "cluster-cert-file", "", "PEM certificate of this node, of the cluster CA, for server and client auth; re-read when it changes")
	fs.StringVar(&c.ClusterTLS.KeyFile, "cluster-key-file", "", "PEM private key of --cluster-cert-file")
	fs.StringVar(&c.Tokens.PublicKeyFile, "token-public-key-file", "", "PEM public keys (or certificates) for RS256/ES256/EdDSA client tokens; re-read when it changes")
	fs.StringVar(&c.Tokens.JWKSURL, "token-jwks-url", "", "http(s) URL of a JWK Set for client tokens: cached, refetched on an unknown kid (at most once per 5s)")
	fs.StringVar(&c.Tokens.Issuer, "token-issuer", "", "required iss of every client token, when set")
	fs.StringVar(&c.Tokens.Audience, "token-audience", "", "required aud of every client token (a string, or one entry of an array), when set")
	fs.Var((*list)(&c.AllowedOrigins), "allowed-origins", "comma-separated browser Origins allowed to connect: https://app.example.com, https://*.example.com, or *; default: the request's own host only")
	fs.IntVar(&c.Gateway.MaxConnections, "max-connections", c.Gateway.MaxConnections, "WebSocket connections on this node; over it the upgrade gets 503 with Retry-After (0: no limit)")
	fs.IntVar(&c.Gateway.MaxConnectionsPerUser, "max-connections-per-user", c.Gateway.MaxConnectionsPerUser, "WebSocket connections of one user on this node; over it the hello gets too_many_connections, close 4029 (0: no limit)")
	fs.Float64Var(&c.Gateway.ConnectRate, "connect-rate", c.Gateway.ConnectRate, "new WebSocket connections per client IP per second, burst one second's worth; over it 429 with Retry-After (0: no limit)")
	fs.IntVar(&c.Gateway.MaxChannelsPerConn, "max-channels-per-conn", c.Gateway.MaxChannelsPerConn, "channel subscriptions a connection may hold; over it the subscribe is answered too_many_channels (0: no limit)")
	fs.Float64Var(&c.Gateway.FrameRate, "client-frame-rate", c.Gateway.FrameRate, "frames per second a connection may send, control frames included, burst one second's worth; over it rate_limited, close 4029 (0: no limit)")
	fs.IntVar(&c.API.MaxInflight, "max-inflight-publishes", c.API.MaxInflight, "messages of publish requests this node serves at once; over it 503 with Retry-After (0: no limit)")
	fs.StringVar(&c.Tracing.Endpoint, "otlp-endpoint", "", "OTLP/HTTP base URL (/v1/traces is appended) to export traces to; empty: no tracing")
	fs.Float64Var(&c.Tracing.SampleRatio, "trace-sample-ratio", c.Tracing.SampleRatio, "share of new traces recorded, 0..1; a publish request's sampled traceparent is always followed")
	fs.StringVar(&o.gossipKeyFile, "gossip-key-file", "", "file of base64 AES-128/192/256 keys, one a line, the first the primary: encrypts and authenticates gossip (seeds <data-dir>/gossip-keyring, which wins once it exists)")
	fs.BoolVar(&c.FaultInjection, "enable-fault-injection", false, "let POST /v1/nodes/{id}/faults crash, isolate or slow this node, for failover drills (staging; off: 403)")
	fs.StringVar(&c.Profile, "profile", c.Profile, "network timing profile: lan or wan")
	fs.DurationVar(&c.Gateway.Heartbeat, "heartbeat", c.Gateway.Heartbeat, "client heartbeat interval")
	fs.Var((*millis)(&c.Broker.Stream.Window), "resume-window", "how long a detached session can be resumed")
	fs.Var((*millis)(&c.Broker.Stream.IDWindow), "idempotency-window", "how long publish ids are remembered")
	fs.IntVar(&c.Gateway.MaxFrameBytes, "max-frame-bytes", c.Gateway.MaxFrameBytes, "largest client frame")
	fs.Int64Var(&c.API.MaxBodyBytes, "max-body-bytes", c.API.MaxBodyBytes, "largest publish request body")
	fs.IntVar(&c.Broker.Stream.MaxMessages, "stream-messages", c.Broker.Stream.MaxMessages, "messages kept per user stream")
	fs.IntVar(&c.Gateway.SendQueue, "send-queue", c.Gateway.SendQueue, "frames queued per connection before it is closed as a slow consumer")
	fs.IntVar(&c.Raft.MaxVoters, "max-voters", c.Raft.MaxVoters, "Raft voters (others are non-voters)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 30*time.Second, "how long SIGTERM may take to drain")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if err := applyEnv(fs); err != nil {
		return nil, err
	}
	return o, nil
}

// list is a comma-separated flag; blanks around entries are dropped.
type list []string

func (l *list) String() string { return strings.Join(*l, ",") }

func (l *list) Set(s string) error {
	*l = nil
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// millis is a flag holding a duration in whole milliseconds, as the
// stream windows count time.
type millis int64

func (m *millis) String() string { return (time.Duration(*m) * time.Millisecond).String() }

func (m *millis) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if d%time.Millisecond != 0 {
		return fmt.Errorf("%v is not a whole number of milliseconds", d)
	}
	*m = millis(d.Milliseconds())
	return nil
}

// applyEnv lets SWITCHBOARD_<FLAG> set every flag not given on the
// command line (flags win over the environment).
func applyEnv(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := "SWITCHBOARD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", env, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

func run(args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	logger, err := newLogger(stderr, o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	logger.Info("switchboard starting", "version", version)
	c := &o.cfg
	c.Logger = logger
	c.GlobalMetrics = true
	if o.join != "" {
		for _, a := range strings.Split(o.join, ",") {
			if a = strings.TrimSpace(a); a != "" {
				c.Join = append(c.Join, a)
			}
		}
	}
	if o.dev {
		if err := devDefaults(o); err != nil {
			return err
		}
	}
	if err := loadSecrets(o); err != nil {
		return err
	}
	if err := loadGossipKeys(o); err != nil {
		return err
	}
	n, err := node.New(*c)
	if err != nil {
		return err
	}
	if o.dev {
		printDev(stdout, n, o)
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	select {
	case s := <-sig:
		logger.Info("signal received: draining", "signal", s.String())
		ctx, cancel := context.WithTimeout(context.Background(), o.drainTimeout)
		defer cancel()
		go func() { // a second signal stops at once
			<-sig
			cancel()
		}()
		return n.Shutdown(ctx)
	case <-n.Done():
		return nil
	}
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log-level %q: %v", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log-format %q: want text or json", format)
}

// devDefaults fills in a single bootstrapping node on loopback with its
// secrets generated once into the data dir, so restarts keep tokens valid.
func devDefaults(o *options) error {
	c := &o.cfg
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.NodeID, "dev")
	def(&c.DataDir, "switchboard-data")
	def(&c.PublicAddr, "127.0.0.1:7700")
	def(&c.ClusterAddr, "127.0.0.1:7701")
	def(&c.GossipAddr, "127.0.0.1:7702")
	if len(c.Join) == 0 {
		c.Bootstrap = true
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return err
	}
	for _, s := range []struct {
		file *string
		name string
	}{{&o.tokenSecretFile, "token-secret"}, {&o.apiKeyFile, "api-key"}, {&o.adminKeyFile, "admin-key"}} {
		if *s.file != "" {
			continue
		}
		*s.file = filepath.Join(c.DataDir, s.name)
		if _, err := os.Stat(*s.file); err == nil {
			continue
		}
		var b [24]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		if err := os.WriteFile(*s.file, []byte(hex.EncodeToString(b[:])+"\n"), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// loadSecrets reads the secret files; their contents are trimmed (§3).
// The token secret is optional when tokens have another key source.
func loadSecrets(o *options) error {
	read := func(path, flagName string) (string, error) {
		if path == "" {
			return "", fmt.Errorf("--%s is required", flagName)
		}
		v, err := secret.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("--%s: %w", flagName, err)
		}
		return v, nil
	}
	t := &o.cfg.Tokens
	if o.tokenSecretFile != "" || (t.PublicKeyFile == "" && t.JWKSURL == "") {
		s, err := read(o.tokenSecretFile, "token-secret-file")
		if err != nil {
			return fmt.Errorf("%w (or --token-public-key-file or --token-jwks-url)", err)
		}
		// The node watches the file, so the secret rotates without a
		// restart; the first key signs --dev's demo token.
		t.SecretFile, o.tokenSecret = o.tokenSecretFile, []byte(s)
	}
	// The node watches the key files (a rotation needs no restart); the
	// keys read here are checked now and printed by --dev.
	var err error
	if o.cfg.APIKey, err = read(o.apiKeyFile, "api-key-file"); err != nil {
		return err
	}
	if o.cfg.AdminKey, err = read(o.adminKeyFile, "admin-key-file"); err != nil {
		return err
	}
	o.cfg.APIKeyFile, o.cfg.AdminKeyFile = o.apiKeyFile, o.adminKeyFile
	return nil
}

// loadGossipKeys reads --gossip-key-file. The node uses the keys only
// until it has a keyring of its own in its data dir (node/gossipkeys.go).
func loadGossipKeys(o *options) error {
	if o.gossipKeyFile == "" {
		return nil
	}
	keys, err := membership.ReadKeyFile(o.gossipKeyFile)
	if err != nil {
		return fmt.Errorf("--gossip-key-file: %w", err)
	}
	o.cfg.Gossip.Keys = keys
	return nil
}

func printDev(w io.Writer, n *node.Node, o *options) {
	c := &o.cfg
	tok, err := token.MintChannels(o.tokenSecret, "demo", 24*time.Hour, []string{"*"})
	if err != nil {
		tok = "(could not mint: " + err.Error() + ")"
	}
	fmt.Fprintf(w, `
Switchboard dev node %q is running (data in %s).

  client WebSocket  %s
  publish API       %s/v1/publish
  admin API         %s/v1/cluster
  dashboard         %s/ui/   (asks for the admin key)
  metrics           %s/metrics

  token (user "demo", 24h, every channel)  %s
  API key                   %s
  admin key                 %s

Try:
  curl -s -H 'Authorization: Bearer %s' %s/v1/cluster
  curl -s -H 'Authorization: Bearer %s' -d '{"user":"demo","data":{"hello":"world"}}' %s/v1/publish
  websocat %s   then send {"type":"hello","token":"<token>","resume":{"seq":0}}
                    and {"type":"subscribe","channel":"ticker:demo","presence":true}
  curl -s -H 'Authorization: Bearer %s' -d '{"channel":"ticker:demo","data":{"px":101.5}}' %s/v1/publish

`, c.NodeID, c.DataDir, n.ConnectURL(), n.PublicURL(), n.AdminURL(), n.AdminURL(), n.PublicURL(),
		tok, c.APIKey, c.AdminKey,
		c.AdminKey, n.AdminURL(), c.APIKey, n.PublicURL(), n.ConnectURL(), c.APIKey, n.PublicURL())
}
