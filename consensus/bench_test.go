package consensus

import (
	"context"
	"fmt"
	"github.com/switchboard/switchboard/internal/benchload"
	"testing"
)

// benchProposers is the number of concurrent proposers in the benchmarks.
const benchProposers = 256

// fsyncOn is the production setting: default LAN timing and fsync on, so
// the benchmarks measure group commit against real fsyncs.
func fsyncOn(c *Config) {
	d := DefaultConfig()
	c.HeartbeatTimeout, c.ElectionTimeout = d.HeartbeatTimeout, d.ElectionTimeout
	c.LeaderLeaseTimeout, c.CommitTimeout = d.LeaderLeaseTimeout, d.CommitTimeout
	c.NoSync = false
}

// benchCmd is a small command, about 60 bytes, with a unique key.
func benchCmd(i int64) []byte {
	return fmt.Appendf(nil, "set user-%010d owner=node-7,epoch=42,session=0123456789abcdef", i)
}

// runLoad runs op b.N times over benchProposers goroutines (benchload.Run).
func runLoad(b *testing.B, op func(ctx context.Context, i int64) error) {
	benchload.Run(b, benchProposers, op)
}

func benchCluster(b *testing.B, tweak ...func(*Config)) (leader, follower *testNode) {
	c := newCluster(b)
	c.form(3, append([]func(*Config){fsyncOn}, tweak...)...)
	leader = c.leader()
	for _, n := range c.nodes() {
		if n != leader {
			follower = n
		}
	}
	return leader, follower
}

// BenchmarkProposer3Nodes measures Propose with group commit on a 3-node
// cluster with fsync on, from the leader and from a follower (forwarded),
// with the default MaxInFlightBatches and with one batch in flight.
func BenchmarkProposer3Nodes(b *testing.B) {
	for _, bc := range []struct {
		name     string
		follower bool
		inFlight int
	}{
		{"leader", false, 0},
		{"follower", true, 0},
		{"leader/inflight=1", false, 1},
		{"follower/inflight=1", true, 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			leader, follower := benchCluster(b, func(c *Config) { c.MaxInFlightBatches = bc.inFlight })
			target := leader
			if bc.follower {
				target = follower
			}
			runLoad(b, func(ctx context.Context, i int64) error {
				_, err := target.r.Propose(ctx, benchCmd(i))
				return err
			})
		})
	}
}

// BenchmarkRaftApplyPlain is the baseline: one raft.Apply, one log entry,
// per command, on the same cluster shape.
func BenchmarkRaftApplyPlain(b *testing.B) {
	leader, _ := benchCluster(b)
	runLoad(b, func(_ context.Context, i int64) error {
		return leader.r.raft.Apply(encodeFrames([][]byte{benchCmd(i)}), 0).Error()
	})
}
