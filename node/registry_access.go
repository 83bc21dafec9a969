package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/switchboard/switchboard/session"
)

// ErrReadProbe means a registry read's probe command changed the registry,
// which the probe's design rules out: the registry's rules have moved.
var ErrReadProbe = errors.New("node: registry read probe was applied")

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
	return registry(c).Propose(ctx, cmd)
}

// Read returns user's entry as it was at some instant between the call and
// its return: a linearizable read.
//
// consensus exports no read index yet, so the read is ordered through the
// Raft log: it proposes an attach for no node at epoch 0, which can never
// match (every entry's epoch is at least 1 and has an owner), so it
// changes nothing and its result carries the entry at its place in the
// log. It costs one log entry; it is not for hot paths.
func (c RegistryClient) Read(ctx context.Context, user string) (session.Entry, bool, error) {
	res, err := registry(c).Propose(ctx, session.Command{Kind: session.KindAttach, User: user})
	if err != nil {
		return session.Entry{}, false, err
	}
	switch {
	case errors.Is(res.Err, session.ErrNotFound):
		return session.Entry{}, false, nil
	case errors.Is(res.Err, session.ErrStaleEpoch), errors.Is(res.Err, session.ErrNotOwner):
		return res.Entry, true, nil
	case res.Err == nil:
		return session.Entry{}, false, fmt.Errorf("%w: user %q", ErrReadProbe, user)
	default:
		return session.Entry{}, false, fmt.Errorf("node: registry read %q: %w", user, res.Err)
	}
}

// Local returns user's entry from this node's replica, which may lag the
// leader: what routing reads.
func (c RegistryClient) Local(user string) (session.Entry, bool) {
	return registry(c).Get(user)
}
