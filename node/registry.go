package node

import (
	"context"
	"errors"
	"time"

	"github.com/switchboard/switchboard/consensus"
	"github.com/switchboard/switchboard/session"
)

// registry is the broker's view of the Raft-replicated session registry:
// reads from the local replica, proposals through the batching proposer.
type registry struct{ n *Node }

func (r registry) Get(name string) (e session.Entry, ok bool) {
	r.n.raft.Read(func() { e, ok = r.n.machine.Registry.Get(name) })
	return e, ok
}

// Propose stamps the command with the proposer's clock (apply reads none)
// and commits it through the batching proposer. A command whose outcome is
// unknown (the leader died mid-commit) is sent again, unchanged, until ctx
// ends: every registry command is a compare-and-set that recognises its
// own retry, so this cannot apply anything twice, and a leader election
// costs a request a short wait instead of an error.
func (r registry) Propose(ctx context.Context, c session.Command) (session.Result, error) {
	c.Now = time.Now().UnixMilli()
	cmd := c.Encode(nil)
	start := time.Now()
	wait := 20 * time.Millisecond
	for {
		res, err := r.proposeOnce(ctx, cmd, c.Kind, start)
		if err == nil {
			return res, nil
		}
		if !errors.Is(err, consensus.ErrNotCommitted) && !errors.Is(err, consensus.ErrNoLeader) || errors.Is(err, consensus.ErrClosed) {
			return session.Result{}, err
		}
		select {
		case <-ctx.Done():
			return session.Result{}, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// proposeOnce commits an encoded command once, recording its latency.
func (r registry) proposeOnce(ctx context.Context, cmd []byte, kind session.Kind, start time.Time) (session.Result, error) {
	out, err := r.n.raft.Propose(ctx, cmd)
	r.n.metrics.proposed(ctx, kind, time.Since(start), err)
	if err != nil {
		return session.Result{}, err
	}
	return session.DecodeResult(out)
}

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
