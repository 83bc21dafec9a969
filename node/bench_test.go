package node_test

import (
	"context"
	"fmt"
	"github.com/switchboard/switchboard/internal/benchload"
	"sync/atomic"
	"testing"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/node"
	"github.com/switchboard/switchboard/session"
)

// benchProposers is the number of concurrent proposers, as in
// consensus/bench_test.go, so the two benchmarks compare directly.
const benchProposers = 256

// benchRun makes user names unique across the runs of one process: the
// testing package calls a benchmark more than once (N=1, then N).
var benchRun atomic.Int64

// BenchmarkRegistryClaims3Nodes measures registry claims through the
// node's proposer (session codec, batching proposer, Raft with fsync on,
// apply) on an in-process 3-node cluster, from the leader and from a
// follower (batches forwarded over the peer link). The baseline is
// consensus's BenchmarkRaftApplyPlain: one raft.Apply per command.
func BenchmarkRegistryClaims3Nodes(b *testing.B) {
	// clustertest keeps node.DefaultConfig's RaftNoSync=false: fsync on.
	c := clustertest.Start(b, 3)
	for _, bc := range []struct {
		name     string
		follower bool
	}{
		{"leader", false},
		{"follower", true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			leader := c.WaitLeader()
			target := leader
			if bc.follower {
				for _, id := range c.Running() {
					if id != leader {
						target = id
						break
					}
				}
			}
			nd := c.Node(target)
			if nd == nil {
				b.Fatalf("node %s not running", target)
			}
			reg := nd.Registry()
			run := benchRun.Add(1)
			runClaims(b, func(ctx context.Context, i int64) error {
				return claim(ctx, reg, fmt.Sprintf("bench-%d-%s-%d", run, bc.name, i))
			})
		})
	}
}

// claim proposes a first claim for user and checks the registry took it.
func claim(ctx context.Context, reg node.RegistryClient, user string) error {
	res, err := reg.Propose(ctx, session.Command{
		Kind: session.KindClaim, User: user, Node: "n1", Session: "s", Epoch: 0,
	})
	if err != nil {
		return fmt.Errorf("claim %s: %w", user, err)
	}
	if res.Err != nil {
		return fmt.Errorf("claim %s: registry: %w", user, res.Err)
	}
	return nil
}

// runClaims runs op b.N times over benchProposers goroutines (benchload.Run).
func runClaims(b *testing.B, op func(ctx context.Context, i int64) error) {
	benchload.Run(b, benchProposers, op)
}
