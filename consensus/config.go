package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Config configures one Raft node. Start from DefaultConfig; zero values of
// fields that have a default are replaced by it.
type Config struct {
	// NodeID is this node's stable Raft server ID.
	NodeID string
	// DataDir holds raft.db (log and stable store) and snapshots/.
	DataDir string
	// Bootstrap bootstraps a single-voter cluster only if the node has no
	// Raft state yet; on a restart it is ignored, so restarting with the
	// original flags is always safe.
	Bootstrap bool
	// AdvertiseAddr is this node's cluster host:port (its raft.ServerAddress).
	AdvertiseAddr string
	// Listener is Raft's share of the cluster port (already demultiplexed).
	// Close takes ownership of it and closes it.
	Listener net.Listener
	// Dial opens a connection to Raft on a peer's cluster port.
	Dial func(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error)
	// Forward carries a payload to HandleForward on the leader at leaderAddr
	// and returns its answer. Errors that wrap ErrNotLeader should be kept
	// recognisable (errors.Is) across the pipe: the proposer retries those
	// transparently because nothing was submitted. Any other error leaves the
	// outcome of the forwarded commands unknown.
	Forward func(ctx context.Context, leaderAddr string, payload []byte) ([]byte, error)

	// MaxVoters is the number of voters placement aims for (default 3).
	MaxVoters int
	// DeadServerGrace is how long a dead (not left) server stays in the Raft
	// configuration before Reconcile removes it (default 30s).
	DeadServerGrace time.Duration

	// BatchMaxCommands caps the commands packed into one log entry (default 4096).
	BatchMaxCommands int
	// BatchMaxBytes caps the command bytes packed into one log entry (default 1 MiB).
	BatchMaxBytes int
	// MaxInFlightBatches is the number of batches a proposer keeps in flight (default 4).
	MaxInFlightBatches int

	// Raft timing. The defaults suit a LAN and fail over fast; raise them for WAN.
	HeartbeatTimeout   time.Duration // default 300ms
	ElectionTimeout    time.Duration // default 300ms
	LeaderLeaseTimeout time.Duration // default 300ms; must not exceed HeartbeatTimeout
	CommitTimeout      time.Duration // default 10ms

	// Snapshotting, as in raft.Config.
	SnapshotInterval  time.Duration // default 120s
	SnapshotThreshold uint64        // default 8192
	TrailingLogs      uint64        // default 10240

	// NoSync turns off fsync in raft-boltdb. Only for tests that opt in:
	// a node that acknowledges without fsync can lose acknowledged commands.
	NoSync bool

	// Logger receives Raft's logs (adapted from hclog); nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns a production-safe configuration without the
// node-specific fields (NodeID, DataDir, AdvertiseAddr, Listener, Dial, Forward).
func DefaultConfig() Config {
	return Config{
		MaxVoters:          3,
		DeadServerGrace:    30 * time.Second,
		BatchMaxCommands:   4096,
		BatchMaxBytes:      1 << 20,
		MaxInFlightBatches: 4,
		// LAN timing: a dead leader is replaced within about one second
		// even when the first pre-vote is refused (RTO target, G5). The
		// lease only decides when a leader that hears from no quorum steps
		// down; at 150 ms a leader stepped down in most 10,000-user
		// reconnect storms on a busy machine (followers' answers waited
		// that long behind thousands of runnable goroutines), stalling
		// every claim for an election.
		HeartbeatTimeout:   300 * time.Millisecond,
		ElectionTimeout:    300 * time.Millisecond,
		LeaderLeaseTimeout: 300 * time.Millisecond,
		CommitTimeout:      10 * time.Millisecond,
		SnapshotInterval:   120 * time.Second,
		SnapshotThreshold:  8192,
		TrailingLogs:       10240,
	}
}

// withDefaults fills zero-valued fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	setDefault(&c.MaxVoters, d.MaxVoters)
	setDefault(&c.DeadServerGrace, d.DeadServerGrace)
	setDefault(&c.BatchMaxCommands, d.BatchMaxCommands)
	setDefault(&c.BatchMaxBytes, d.BatchMaxBytes)
	setDefault(&c.MaxInFlightBatches, d.MaxInFlightBatches)
	setDefault(&c.HeartbeatTimeout, d.HeartbeatTimeout)
	setDefault(&c.ElectionTimeout, d.ElectionTimeout)
	setDefault(&c.LeaderLeaseTimeout, d.LeaderLeaseTimeout)
	setDefault(&c.CommitTimeout, d.CommitTimeout)
	setDefault(&c.SnapshotInterval, d.SnapshotInterval)
	setDefault(&c.SnapshotThreshold, d.SnapshotThreshold)
	setDefault(&c.TrailingLogs, d.TrailingLogs)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func setDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// ErrInvalidConfig is wrapped by every error Validate returns.
var ErrInvalidConfig = errors.New("consensus: invalid config")

// Validate reports the first invalid field, by name. Zero values of fields
// that have a default are valid.
func (c Config) Validate() error {
	c = c.withDefaults()
	bad := func(field, why string) error {
		return fmt.Errorf("%w: %s %s", ErrInvalidConfig, field, why)
	}
	switch {
	case c.NodeID == "":
		return bad("NodeID", "is empty")
	case c.DataDir == "":
		return bad("DataDir", "is empty")
	case c.Listener == nil:
		return bad("Listener", "is nil")
	case c.Dial == nil:
		return bad("Dial", "is nil")
	case c.Forward == nil:
		return bad("Forward", "is nil")
	case c.MaxVoters < 1:
		return bad("MaxVoters", "must be at least 1")
	case c.DeadServerGrace < 0:
		return bad("DeadServerGrace", "is negative")
	case c.BatchMaxCommands < 1:
		return bad("BatchMaxCommands", "must be at least 1")
	case c.BatchMaxBytes < 1:
		return bad("BatchMaxBytes", "must be at least 1")
	case c.MaxInFlightBatches < 1:
		return bad("MaxInFlightBatches", "must be at least 1")
	case c.HeartbeatTimeout < 5*time.Millisecond:
		return bad("HeartbeatTimeout", "must be at least 5ms")
	case c.ElectionTimeout < c.HeartbeatTimeout:
		return bad("ElectionTimeout", "must be at least HeartbeatTimeout")
	case c.LeaderLeaseTimeout < 5*time.Millisecond:
		return bad("LeaderLeaseTimeout", "must be at least 5ms")
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return bad("LeaderLeaseTimeout", "must not exceed HeartbeatTimeout")
	case c.CommitTimeout < time.Millisecond:
		return bad("CommitTimeout", "must be at least 1ms")
	case c.SnapshotInterval < 5*time.Millisecond:
		return bad("SnapshotInterval", "must be at least 5ms")
	}
	host, port, err := net.SplitHostPort(c.AdvertiseAddr)
	if err != nil || host == "" || port == "" {
		return bad("AdvertiseAddr", fmt.Sprintf("%q is not host:port", c.AdvertiseAddr))
	}
	return nil
}
