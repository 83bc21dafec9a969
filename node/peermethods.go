package node

import (
	"context"
	"errors"

	"github.com/switchboard/switchboard/internal/wire"
)

// Peer-link methods the node itself serves; 10 and up belong to the broker.
const (
	methodForward  = 1 // follower's proposer → leader (consensus forward protocol)
	methodDrain    = 2 // admin API on another node: drain yourself
	methodStats    = 3 // connection count for /v1/cluster
	methodSeq      = 4 // highest seq of a held stream for /v1/sessions
	methodTransfer = 5 // admin API on a follower: leader, transfer leadership
)

func (n *Node) registerPeerMethods() {
	n.peers.Handle(methodForward, func(ctx context.Context, _ string, p []byte) ([]byte, error) {
		return n.raft.HandleForward(ctx, p)
	}, false)
	n.peers.Handle(methodDrain, func(context.Context, string, []byte) ([]byte, error) {
		n.startDrain()
		return nil, nil
	}, false)
	n.peers.Handle(methodStats, func(context.Context, string, []byte) ([]byte, error) {
		return wire.AppendUvarint(nil, uint64(n.gateway.Connections())), nil
	}, false)
	n.peers.Handle(methodSeq, func(_ context.Context, _ string, p []byte) ([]byte, error) {
		seq, ok := n.broker.Seq(string(p))
		if !ok {
			return nil, errNoStream
		}
		return wire.AppendUvarint(nil, seq), nil
	}, false)
	n.peers.Handle(methodTransfer, func(context.Context, string, []byte) ([]byte, error) {
		return nil, n.raft.TransferLeadership()
	}, false)
	for _, h := range n.broker.Handlers() {
		n.peers.Handle(h.Method, h.Fn, h.Inline)
	}
}

var errNoStream = errors.New("stream not held here")

func (n *Node) remoteConnections(ctx context.Context, id string) (int, error) {
	p, err := (peersByID{n}).Call(ctx, id, methodStats, nil)
	if err != nil {
		return 0, err
	}
	r := wire.NewReader(p)
	c := r.Uvarint()
	return int(c), r.Err()
}

// streamSeq asks the owner for the highest seq of user's stream.
func (n *Node) streamSeq(ctx context.Context, owner, user string) (uint64, error) {
	if owner == n.cfg.NodeID {
		seq, ok := n.broker.Seq(user)
		if !ok {
			return 0, errNoStream
		}
		return seq, nil
	}
	p, err := (peersByID{n}).Call(ctx, owner, methodSeq, []byte(user))
	if err != nil {
		return 0, err
	}
	r := wire.NewReader(p)
	seq := r.Uvarint()
	return seq, r.Err()
}
