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
	"time"

	"github.com/switchboard/switchboard/transport/clusterport"
)

// Config is everything a node needs. cmd/switchboard maps flags and
// environment onto it; tests build it directly.
type Config struct {
	NodeID, Region, Zone string
	DataDir              string

	PublicAddr  string // client WebSocket, publish and (by default) admin API
	AdminAddr   string // optional separate admin listener (admin API, pprof)
	ClusterAddr string // Raft and peer links
	GossipAddr  string // memberlist
	// Advertised addresses, when the bind address is not reachable as is
	// (0.0.0.0, NAT). Empty means the bind address.
	AdvertisePublic, AdvertiseCluster, AdvertiseGossip string

	Bootstrap bool     // bootstrap a new cluster (ignored once Raft state exists)
	Join      []string // gossip addresses of nodes to join

	TokenSecret []byte // HS256 secret for client JWTs
	APIKey      string // publish API key
	AdminKey    string // admin API key

	Profile string // "lan" (default) or "wan" timing for gossip and Raft; "local" for tests

	Heartbeat         time.Duration // client heartbeat interval (welcome.heartbeat_ms)
	HelloTimeout      time.Duration
	MaxFrameBytes     int   // client frame limit
	MaxBodyBytes      int64 // publish body limit
	ResumeWindow      time.Duration
	IdempotencyWindow time.Duration
	StreamMessages    int // per-user stream bound by count
	SendQueue         int // per-connection send queue (frames)
	MaxVoters         int
	MaxBatch          int // messages in one batch publish
	// PublishTimeout bounds a publish request: past it the answer is 503
	// (retry with the same id) rather than a hung request.
	PublishTimeout time.Duration
	// DeadServerGrace is how long a server gossip lists as dead, or does
	// not know at all, stays in the Raft configuration; once removed, the
	// registry stops naming it as an owner or backup. 0: 30 s.
	DeadServerGrace time.Duration

	// Dial opens node-to-node connections (Raft and peer links); nil means
	// a plain TCP dial. Fault tests route links through proxies with it.
	Dial clusterport.Dialer

	// RaftNoSync turns fsync off: for tests only.
	RaftNoSync bool
	// GlobalMetrics installs this node's meter provider as the process
	// global, so library instruments (Raft) are exported too. One node per
	// process sets it; in-process test clusters leave it off.
	GlobalMetrics bool
	Logger        *slog.Logger
}

// DefaultConfig returns production defaults; identity, addresses and
// secrets must still be set.
func DefaultConfig() Config {
	return Config{
		Region:            "default",
		Zone:              "default",
		Profile:           "lan",
		Heartbeat:         5 * time.Second,
		HelloTimeout:      5 * time.Second,
		MaxFrameBytes:     64 << 10,
		MaxBodyBytes:      1 << 20,
		ResumeWindow:      120 * time.Second,
		IdempotencyWindow: 120 * time.Second,
		StreamMessages:    4096,
		SendQueue:         4096,
		MaxVoters:         3,
		MaxBatch:          10000,
		PublishTimeout:    10 * time.Second,
	}
}

// Validate reports the first bad field, by its flag-facing name.
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
	for _, a := range []struct{ v, name string }{{c.PublicAddr, "public-addr"}, {c.ClusterAddr, "cluster-addr"}, {c.GossipAddr, "gossip-addr"}} {
		if a.v == "" {
			errs = append(errs, fmt.Errorf("%s is required", a.name))
		} else if _, _, err := net.SplitHostPort(a.v); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %v", a.name, a.v, err))
		}
	}
	if len(c.TokenSecret) == 0 {
		errs = append(errs, errors.New("token secret is empty (token-secret-file)"))
	}
	req(c.APIKey, "api key (api-key-file)")
	req(c.AdminKey, "admin key (admin-key-file)")
	switch c.Profile {
	case "lan", "wan", "local":
	default:
		errs = append(errs, fmt.Errorf("profile %q: want lan, wan or local", c.Profile))
	}
	pos := func(ok bool, name string) {
		if !ok {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	pos(c.Heartbeat > 0, "heartbeat")
	pos(c.HelloTimeout > 0, "hello-timeout")
	pos(c.MaxFrameBytes > 0, "max-frame-bytes")
	pos(c.MaxBodyBytes > 0, "max-body-bytes")
	pos(c.ResumeWindow > 0, "resume-window")
	pos(c.IdempotencyWindow > 0, "idempotency-window")
	pos(c.StreamMessages > 0, "stream-messages")
	pos(c.SendQueue > 0, "send-queue")
	pos(c.MaxVoters > 0, "max-voters")
	pos(c.MaxBatch > 0, "max-batch")
	pos(c.PublishTimeout > 0, "publish-timeout")
	return errors.Join(errs...)
}

func (c Config) advertised(bind, adv string) string {
	if adv != "" {
		return adv
	}
	return bind
}
