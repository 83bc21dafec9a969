package membership

import (
	"github.com/hashicorp/memberlist"
)

// delegate receives memberlist callbacks for a Pool.
//
// memberlist invokes the event callbacks while holding its internal node
// lock, so they must not call back into memberlist and must not block: they
// update the table under Pool.mu (never held while calling memberlist) and
// signal Changes without blocking.
type delegate struct {
	p *Pool
}

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
)

// NodeMeta returns the local node's encoded Meta for alive messages.
func (d *delegate) NodeMeta(limit int) []byte {
	d.p.mu.Lock()
	defer d.p.mu.Unlock()
	if len(d.p.encoded) > limit {
		// Unreachable: Config.Validate checks the largest form. memberlist
		// panics on oversized meta, so degrade to none and say why.
		d.p.logger.Error("node metadata exceeds memberlist limit; gossiping none",
			"size", len(d.p.encoded), "limit", limit)
		return nil
	}
	return d.p.encoded
}

// NotifyMsg ignores user messages: the pool gossips only node metadata.
func (d *delegate) NotifyMsg([]byte) {}

// GetBroadcasts returns nothing: the pool queues no user broadcasts.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState returns nothing: metadata travels in alive messages.
func (d *delegate) LocalState(join bool) []byte { return nil }

// MergeRemoteState ignores push/pull user state; see LocalState.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {}

// NotifyJoin records a node that joined or came back after dead/left.
func (d *delegate) NotifyJoin(n *memberlist.Node) { d.p.observeAlive(n) }

// NotifyUpdate records a metadata change of a live node.
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.p.observeAlive(n) }

// NotifyLeave records a node that failed or left. n.State is always
// StateAlive here in memberlist v0.6.0 (hashicorp/memberlist#293), so the
// leaving flag in the node's last metadata tells left from dead.
func (d *delegate) NotifyLeave(n *memberlist.Node) { d.p.observeGone(n) }
