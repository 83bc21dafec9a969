// Package node is Switchboard's composition root: it wires consensus,
// membership, the broker and the transports into one node, serves the
// public and admin HTTP APIs, and owns the node's lifecycle (start, join,
// drain, stop) in one place.
package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/switchboard/switchboard/auth"
	"github.com/switchboard/switchboard/broker"
	"github.com/switchboard/switchboard/consensus"
	"github.com/switchboard/switchboard/internal/tracing"
	"github.com/switchboard/switchboard/membership"
	"github.com/switchboard/switchboard/transport/clusterport"
	"github.com/switchboard/switchboard/transport/gateway"
	"github.com/switchboard/switchboard/transport/peer"
)

// Config is everything a node needs: who it is, where it listens, its
// secrets, and each component's own Config, each from that component's
// DefaultConfig. New fills in what the node decides for its components —
// identity, addresses, data directory, logger, and the hooks between them
// — so a caller sets only what it tunes. cmd/switchboard maps flags and
// environment onto it; tests build it directly.
type Config struct {
	NodeID, Region, Zone string
	DataDir              string

	PublicAddr  string // client WebSocket, publish and (by default) admin API
	AdminAddr   string // optional separate admin listener (admin API, pprof)
	ClusterAddr string // Raft and peer links
	GossipAddr  string // memberlist
	// Advertised addresses, when the bind address is not reachable as is
	// (0.0.0.0, NAT). Empty means the bind address; a wildcard public or
	// cluster address needs one.
	AdvertisePublic, AdvertiseCluster, AdvertiseGossip string

	Bootstrap bool     // bootstrap a new cluster (ignored once Raft state exists)
	Join      []string // gossip addresses of nodes to join
	// BootstrapExpect, when positive, forms a new cluster without a node
	// set apart by --bootstrap: once gossip shows this many live members
	// and none of them holds Raft state, the one with the lowest id
	// bootstraps and the others join it (bootstrap.go). Ignored once this
	// node has Raft state. Every node of the first formation gets the same
	// value: the number of nodes started together.
	BootstrapExpect int

	// Tokens verifies client JWTs: the HS256 secret, public keys, a JWKS,
	// issuer and audience (auth.Config; at least one key source).
	Tokens   auth.Config
	APIKey   string // publish API key
	AdminKey string // admin API key
	// APIKeyFile and AdminKeyFile, when set, hold the keys instead of
	// APIKey and AdminKey: one key, or several (one a line) while one is
	// rotated, all accepted; re-read when the file changes, at most once a
	// second (internal/secret).
	APIKeyFile, AdminKeyFile string
	// AllowedOrigins lists the browser Origins allowed to connect: exact
	// origins, https://*.example.com, or *. Empty: only an Origin whose
	// host:port is the request's Host.
	AllowedOrigins []string

	// TLS serves the public and admin listeners over HTTPS and WSS when
	// set; the public URLs the node advertises then begin https:// and
	// wss://.
	TLS TLSConfig
	// ClusterTLS puts mutual TLS on the cluster port (Raft and peer links)
	// when set. Without it the cluster port is open to anyone who reaches
	// it, and the node logs a warning at start.
	ClusterTLS ClusterTLSConfig

	// Profile is the network timing of gossip and Raft: "lan", "wan", or
	// "local" for tests on loopback.
	Profile string

	API     APIConfig         // the publish API
	Gateway gateway.Config    // client connections; its Heartbeat is the node's
	Broker  broker.Config     // streams: windows, bounds, peer call timeout
	Raft    consensus.Config  // the registry: voters, grace, batching, timing
	Gossip  membership.Config // memberlist
	Peer    peer.Config       // node-to-node links
	// Tracing exports spans over OTLP/HTTP when its Endpoint is set
	// (--otlp-endpoint, --trace-sample-ratio); New fills in NodeID.
	Tracing tracing.Config

	// Dial opens node-to-node connections (Raft and peer links); nil means
	// a plain TCP dial. Fault tests route links through proxies with it.
	Dial clusterport.Dialer
	// FaultInjection lets POST /v1/nodes/{id}/faults inject crash, isolate
	// and slow into this node (--enable-fault-injection), for drills in
	// staging. Off, such a request is refused with 403.
	FaultInjection bool
	// Crash is what an injected crash does; nil sends the process
	// SIGKILL. In-process test clusters stop the one node abruptly.
	Crash func()
	// GlobalMetrics installs this node's meter provider as the process
	// global, so library instruments (Raft) are exported too, and bridges
	// hashicorp/raft's and memberlist's go-metrics (one sink per process)
	// into its /metrics as raft_* and memberlist_*. One node per process
	// sets it; in-process test clusters leave it off (or set it on one).
	GlobalMetrics bool
	Logger        *slog.Logger
}

// TLSConfig is the public listeners' certificate: PEM files, read again
// when they change on disk (at most once per second), so a renewed
// certificate needs no restart. Both or neither.
type TLSConfig struct {
	CertFile, KeyFile string
}

// Enabled says whether TLS is configured.
func (c TLSConfig) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// ClusterTLSConfig is mutual TLS on the cluster port: the cluster CA
// (PEM, one or more certificates) and this node's certificate, which
// must chain to it and serve for both server and client authentication.
// Read again when they change on disk, like TLSConfig. All three or none.
type ClusterTLSConfig struct {
	CAFile, CertFile, KeyFile string
}

// Enabled says whether cluster TLS is configured.
func (c ClusterTLSConfig) Enabled() bool {
	return c.CAFile != "" || c.CertFile != "" || c.KeyFile != ""
}

// APIConfig bounds the publish API.
type APIConfig struct {
	MaxBodyBytes int64 // largest request body
	MaxBatch     int   // messages in one batch publish
	// PublishTimeout bounds a publish request: past it the answer is 503
	// (retry with the same id) rather than a hung request.
	PublishTimeout time.Duration
	// MaxInflight bounds the messages whose publish requests this node is
	// serving at once; a request that would go over is answered 503 with
	// Retry-After, never queued. A batch larger than the whole bound runs
	// only when nothing else does. 0: no bound.
	MaxInflight int
}

// DefaultAPIConfig returns the contract's limits (DESIGN.md §4).
func DefaultAPIConfig() APIConfig {
	return APIConfig{MaxBodyBytes: 1 << 20, MaxBatch: 10000, PublishTimeout: 10 * time.Second, MaxInflight: 10000}
}

// DefaultConfig returns production defaults; identity, addresses and
// secrets must still be set.
func DefaultConfig() Config {
	return Config{
		Region:  "default",
		Zone:    "default",
		Profile: membership.ProfileLAN,
		Tokens:  auth.DefaultConfig(),
		API:     DefaultAPIConfig(),
		Gateway: DefaultGatewayConfig(),
		Broker:  broker.DefaultConfig(),
		Raft:    consensus.DefaultConfig(),
		Gossip:  membership.DefaultConfig(),
		Peer:    peer.DefaultConfig(),
		Tracing: tracing.Config{SampleRatio: tracing.DefaultSampleRatio},
	}
}

// Validate reports every bad field of the node's own, by its flag-facing
// name; the components validate their configs when New starts them.
func (c Config) Validate() error {
	var errs []error
	req := func(v, name string) {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", name))
		}
	}
	req(c.NodeID, "node-id")
	req(c.DataDir, "data-dir")
	req(c.Region, "region")
	req(c.Zone, "zone")
	switch {
	case c.BootstrapExpect < 0:
		errs = append(errs, fmt.Errorf("bootstrap-expect %d must not be negative", c.BootstrapExpect))
	case c.BootstrapExpect > 0 && c.Bootstrap:
		errs = append(errs, errors.New("bootstrap and bootstrap-expect exclude each other: give one"))
	case c.BootstrapExpect > 1 && len(c.Join) == 0:
		errs = append(errs, fmt.Errorf("bootstrap-expect %d needs join: the addresses of the other nodes", c.BootstrapExpect))
	}
	for _, a := range []struct{ v, adv, name, advName string }{
		{c.PublicAddr, c.AdvertisePublic, "public-addr", "advertise-public"},
		{c.ClusterAddr, c.AdvertiseCluster, "cluster-addr", "advertise-cluster"},
		{c.GossipAddr, c.AdvertiseGossip, "gossip-addr", "advertise-gossip"},
	} {
		host, _, err := net.SplitHostPort(a.v)
		switch {
		case a.v == "":
			errs = append(errs, fmt.Errorf("%s is required", a.name))
		case err != nil:
			errs = append(errs, fmt.Errorf("%s %q: %v", a.name, a.v, err))
		case wildcard(host) && a.adv == "" && a.name != "gossip-addr":
			// Other nodes and clients would be told to reach "[::]".
			// Gossip picks a private IP to advertise by itself.
			errs = append(errs, fmt.Errorf("%s %q listens on every interface: set --%s to the host:port others reach it at", a.name, a.v, a.advName))
		}
		if a.adv != "" {
			if host, _, err := net.SplitHostPort(a.adv); err != nil || host == "" || wildcard(host) {
				errs = append(errs, fmt.Errorf("%s %q: want a reachable host:port", a.advName, a.adv))
			}
		}
	}
	if len(c.Tokens.Secret) == 0 && c.Tokens.SecretFile == "" && c.Tokens.PublicKeyFile == "" && c.Tokens.JWKSURL == "" {
		errs = append(errs, errors.New("no token keys: set token-secret-file, token-public-key-file or token-jwks-url"))
	}
	errs = append(errs, allOrNone([]string{c.TLS.CertFile, c.TLS.KeyFile}, []string{"tls-cert-file", "tls-key-file"})...)
	errs = append(errs, allOrNone([]string{c.ClusterTLS.CAFile, c.ClusterTLS.CertFile, c.ClusterTLS.KeyFile},
		[]string{"cluster-ca-file", "cluster-cert-file", "cluster-key-file"})...)
	req(c.APIKey+c.APIKeyFile, "api key (api-key-file)")
	req(c.AdminKey+c.AdminKeyFile, "admin key (admin-key-file)")
	switch c.Profile {
	case membership.ProfileLAN, membership.ProfileWAN, membership.ProfileLocal:
	default:
		errs = append(errs, fmt.Errorf("profile %q: want lan, wan or local", c.Profile))
	}
	pos := func(ok bool, name string) {
		if !ok {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	pos(c.API.MaxBodyBytes > 0, "max-body-bytes")
	pos(c.API.MaxBatch > 0, "max-batch")
	pos(c.API.PublishTimeout > 0, "publish-timeout")
	if c.API.MaxInflight < 0 {
		errs = append(errs, fmt.Errorf("max-inflight-publishes must not be negative"))
	}
	if _, err := gateway.OriginPolicy(c.AllowedOrigins); err != nil {
		errs = append(errs, fmt.Errorf("allowed-origins: %v", err))
	}
	if err := c.Tracing.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// allOrNone reports each missing value of a group that must be given
// whole, by its flag name, once any of them is.
func allOrNone(values, names []string) []error {
	var given, missing []string
	for i, v := range values {
		if v != "" {
			given = append(given, "--"+names[i])
		} else {
			missing = append(missing, names[i])
		}
	}
	if len(given) == 0 {
		return nil
	}
	var errs []error
	for _, name := range missing {
		errs = append(errs, fmt.Errorf("%s is required with %s", name, strings.Join(given, " and ")))
	}
	return errs
}

// DefaultGatewayConfig is the gateway's DefaultConfig with the node's
// limits (DESIGN.md §7), generous enough for the benchmarks: a node holds
// about 20,000 connections in them, a failed node's share more in a
// reconnect storm, and the load generator connects from one address.
func DefaultGatewayConfig() gateway.Config {
	c := gateway.DefaultConfig()
	c.MaxConnections = 50000
	c.MaxConnectionsPerUser = 16
	c.ConnectRate = 20000
	c.FrameRate = 100
	return c
}

// wildcard says whether host is an address that means every interface.
func wildcard(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

func advertised(bind, adv string) string {
	if adv != "" {
		return adv
	}
	return bind
}
