package membership

import (
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/switchboard/switchboard/transport/netfault"
)

// Gossip timing profiles, mapped to memberlist's defaults.
const (
	ProfileLAN   = "lan"   // memberlist.DefaultLANConfig: one datacenter
	ProfileWAN   = "wan"   // memberlist.DefaultWANConfig: across regions
	ProfileLocal = "local" // memberlist.DefaultLocalConfig: loopback, tests
)

// Config configures a Pool.
type Config struct {
	NodeID string
	Region string
	Zone   string
	// BindAddr is the gossip host:port to bind, e.g. "127.0.0.1:7702". Port 0
	// picks a free port; Local().GossipAddr then reports it. An empty host
	// binds all interfaces.
	BindAddr string
	// AdvertiseAddr is the IP:port peers should use, when it differs from
	// BindAddr (NAT, containers). Optional.
	AdvertiseAddr string
	PublicURL     string // base URL of the public listener
	ClusterAddr   string // host:port of the raft + peer listener
	// Profile selects gossip timings: "lan" (default), "wan" or "local".
	Profile string
	// Keys, when set, encrypt and authenticate gossip (AES-GCM with 16-,
	// 24- or 32-byte keys): the first is the primary, which encrypts; every
	// key is tried to decrypt, so that keys rotate online (keyring.go).
	// Nodes must share at least the primary keys of each other. Optional.
	Keys [][]byte
	// KeyringFile, when set, is where the pool keeps its keyring: read at
	// start in preference to Keys once it exists, written (0600, replaced
	// whole) when Keys seed it and after every change, so that a restarted
	// node keeps the keys rotated since. Optional.
	KeyringFile string
	// Logger receives pool and memberlist logs; nil means slog.Default().
	Logger *slog.Logger
	// Gate, when set, puts gossip behind the node's injected network
	// faults (fault injection's isolate). Optional.
	Gate *netfault.Gate

	// tune, set only by tests in this package, adjusts memberlist timings.
	tune func(*memberlist.Config)
}

// DefaultConfig returns a Config with the LAN profile. NodeID, Region, Zone,
// BindAddr, PublicURL and ClusterAddr must still be set.
func DefaultConfig() Config {
	return Config{Profile: ProfileLAN}
}

// Validate reports the first invalid field, wrapped in ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...))
	}
	if c.NodeID == "" {
		return bad("NodeID", "required")
	}
	if c.Region == "" {
		return bad("Region", "required")
	}
	if c.Zone == "" {
		return bad("Zone", "required")
	}
	if _, _, err := splitIPPort(c.BindAddr, true); err != nil {
		return bad("BindAddr", "%v", err)
	}
	if c.AdvertiseAddr != "" {
		if _, _, err := splitIPPort(c.AdvertiseAddr, false); err != nil {
			return bad("AdvertiseAddr", "%v", err)
		}
	}
	u, err := url.Parse(c.PublicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return bad("PublicURL", "%q is not an absolute http(s) URL", c.PublicURL)
	}
	if _, port, err := net.SplitHostPort(c.ClusterAddr); err != nil || port == "" {
		return bad("ClusterAddr", "%q is not host:port", c.ClusterAddr)
	}
	if _, err := profileConfig(c.Profile); err != nil {
		return bad("Profile", "%v", err)
	}
	if err := validateKeys(c.Keys); err != nil {
		return bad("Keys", "%v", err)
	}
	// Check with the leaving flag set: it is the largest form gossiped.
	if _, err := encodeMeta(c.meta(), true); err != nil {
		return bad("NodeID, Region, Zone, PublicURL, ClusterAddr", "%v", err)
	}
	return nil
}

func (c Config) meta() Meta {
	return Meta{ID: c.NodeID, Region: c.Region, Zone: c.Zone, PublicURL: c.PublicURL, ClusterAddr: c.ClusterAddr}
}

// profileConfig returns memberlist's defaults for a profile name.
func profileConfig(profile string) (*memberlist.Config, error) {
	switch profile {
	case "", ProfileLAN:
		return memberlist.DefaultLANConfig(), nil
	case ProfileWAN:
		return memberlist.DefaultWANConfig(), nil
	case ProfileLocal:
		return memberlist.DefaultLocalConfig(), nil
	}
	return nil, fmt.Errorf("unknown profile %q, want %q, %q or %q", profile, ProfileLAN, ProfileWAN, ProfileLocal)
}

// splitIPPort parses "ip:port". memberlist needs IP literals: it does not
// resolve names for its own addresses.
func splitIPPort(addr string, allowEmptyHost bool) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("%q has an invalid port", addr)
	}
	switch {
	case host == "" && allowEmptyHost:
		host = "0.0.0.0"
	case net.ParseIP(host) == nil:
		return "", 0, fmt.Errorf("%q: host must be an IP address", addr)
	}
	return host, int(port), nil
}

// memberlistConfig builds memberlist's configuration for a validated Config.
func (c Config) memberlistConfig(d *delegate, logger *slog.Logger) (*memberlist.Config, error) {
	mc, err := profileConfig(c.Profile)
	if err != nil {
		return nil, err
	}
	mc.Name = c.NodeID
	if mc.BindAddr, mc.BindPort, err = splitIPPort(c.BindAddr, true); err != nil {
		return nil, err
	}
	mc.AdvertiseAddr, mc.AdvertisePort = "", mc.BindPort
	if c.AdvertiseAddr != "" {
		if mc.AdvertiseAddr, mc.AdvertisePort, err = splitIPPort(c.AdvertiseAddr, false); err != nil {
			return nil, err
		}
	}
	mc.Delegate = d
	mc.Events = d
	mc.Logger = log.New(&logWriter{logger: logger.With("lib", "memberlist")}, "", 0)
	// Let a restarted node with the same ID but a new address (rescheduled
	// container, port 0) reclaim its name as soon as SWIM has declared the old
	// instance dead; memberlist's default (0) rejects it until the dead entry
	// is reaped after GossipToTheDeadTime. The suspicion timeout already
	// guards against reclaiming a live node, so no extra wait is added.
	mc.DeadNodeReclaimTime = time.Nanosecond
	if c.tune != nil {
		c.tune(mc)
	}
	return mc, nil
}
