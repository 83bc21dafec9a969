package node

import (
	"context"
	"time"

	"github.com/switchboard/switchboard/session"
)

// RegistryClient reaches the node's Raft-replicated session registry
// directly, below the broker. It is a hook for tests and tools that check
// the registry itself (the linearizability test); serving clients goes
// through the broker, which fences by epochs instead.
type RegistryClient struct{ n *Node }

// Registry returns the node's registry client.
func (n *Node) Registry() RegistryClient { return RegistryClient{n} }

// Propose stamps cmd with this node's clock and commits it through the
// node's batching proposer, forwarded to the leader when this node
// follows. The command's own outcome (ErrStaleEpoch, ErrNotOwner…) is in
// Result.Err; the error is consensus's: consensus.ErrNotCommitted means
// the command may or may not have been applied.
func (c RegistryClient) Propose(ctx context.Context, cmd session.Command) (session.Result, error) {
	// Once, without the broker's retry of unknown outcomes: a checker must
	// see exactly what each attempt reported.
	cmd.Now = time.Now().UnixMilli()
	return registry(c).proposeOnce(ctx, cmd.Encode(nil), cmd.Kind, time.Now())
}

// Read returns user's entry as it was at some instant between the call and
// its return: a linearizable read. It waits for this replica to apply the
// leader's read index (a leader barrier), then reads locally, as the admin
// API's /v1/sessions does.
func (c RegistryClient) Read(ctx context.Context, user string) (session.Entry, bool, error) {
	if err := c.n.raft.ReadBarrier(ctx); err != nil {
		return session.Entry{}, false, err
	}
	e, ok := registry(c).Get(user)
	return e, ok, nil
}

// Local returns user's entry from this node's replica, which may lag the
// leader: what routing reads.
func (c RegistryClient) Local(user string) (session.Entry, bool) {
	return registry(c).Get(user)
}
