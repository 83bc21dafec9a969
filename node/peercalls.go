package node

import (
	"context"
	"fmt"

	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/peer"
)

// serve registers the node and cluster methods of peerapi this node
// serves; the broker registers its own.
func (n *Node) serve(r peer.Registry) {
	peerapi.Forward.Serve(r, func(ctx context.Context, _ string, p []byte) ([]byte, error) {
		return n.raft.HandleForward(ctx, p)
	})
	peerapi.Drain.Serve(r, func(context.Context, string, peerapi.Empty) (peerapi.Empty, error) {
		n.startDrain()
		return peerapi.Empty{}, nil
	})
	peerapi.Connections.Serve(r, func(context.Context, string, peerapi.Empty) (uint64, error) {
		return uint64(n.gateway.Connections()), nil
	})
	peerapi.StreamSeq.Serve(r, func(_ context.Context, _ string, key session.Key) (uint64, error) {
		seq, ok := n.broker.Seq(key)
		if !ok {
			return 0, errNoStream
		}
		return seq, nil
	})
	peerapi.TransferLeadership.Serve(r, func(context.Context, string, peerapi.Empty) (peerapi.Empty, error) {
		return peerapi.Empty{}, n.raft.TransferLeadership()
	})
	peerapi.InjectFault.Serve(r, func(_ context.Context, _ string, f protocol.Fault) (peerapi.Empty, error) {
		return peerapi.Empty{}, n.injectFault(f)
	})
	n.serveGossipKeys(r)
	n.serveStats(r)
}

var errNoStream = protocol.Errorf(protocol.ErrNotFound, "stream not held here")

// clusterAddr is the cluster address gossip knows for node: where its
// peer links are dialed.
func (n *Node) clusterAddr(node string) (string, error) {
	m, ok := n.pool.Member(node)
	if !ok || m.ClusterAddr == "" {
		return "", fmt.Errorf("unknown node %q", node)
	}
	return m.ClusterAddr, nil
}

// streamSeq asks the owner for the highest seq of key's stream.
func (n *Node) streamSeq(ctx context.Context, owner string, key session.Key) (uint64, error) {
	if owner == n.cfg.NodeID {
		seq, ok := n.broker.Seq(key)
		if !ok {
			return 0, errNoStream
		}
		return seq, nil
	}
	return peerapi.StreamSeq.Call(ctx, n.peers, owner, key)
}
