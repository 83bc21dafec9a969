// Package peerapi is the table of every node-to-node call: one named
// method per call, with its id, its typed request and answer, and whether
// it is served in arrival order on the link's read loop. A reader finds
// every call between nodes here; each component registers its own
// handlers (Serve) and makes its calls (Call, Send) through these values.
//
// Ids and payload encodings are part of the node-to-node protocol: never
// reuse an id, and only add fields at the end of a payload.
package peerapi

import (
	"errors"

	"github.com/switchboard/switchboard/consensus"
	"github.com/switchboard/switchboard/membership"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/peer"
)

// Node and cluster calls, served by node/.
var (
	// Forward carries a follower's registry proposals (or a read-index
	// query) to the Raft leader, in consensus's own framing.
	Forward = peer.Method[[]byte, []byte]{ID: 1, Name: "forward", Req: bytesCodec, Resp: bytesCodec}
	// Drain asks a node to drain itself (admin API on another node).
	Drain = peer.Method[Empty, Empty]{ID: 2, Name: "drain", Req: emptyCodec, Resp: emptyCodec}
	// Connections asks a node how many client connections it has, for
	// /v1/cluster.
	Connections = peer.Method[Empty, uint64]{ID: 3, Name: "connections", Req: emptyCodec, Resp: uvarintCodec}
	// Stats asks a node for its own figures and the rates it computed,
	// for GET /v1/stats (id 9: ids follow the order methods were added).
	Stats = peer.Method[Empty, NodeStats]{ID: 9, Name: "stats", Req: emptyCodec, Resp: nodeStatsCodec}
	// StreamSeq asks a stream's owner for its highest acknowledged seq,
	// for /v1/sessions.
	StreamSeq = peer.Method[session.Key, uint64]{ID: 4, Name: "stream-seq", Req: keyCodec, Resp: uvarintCodec}
	// TransferLeadership asks the Raft leader to hand leadership over.
	TransferLeadership = peer.Method[Empty, Empty]{ID: 5, Name: "transfer-leadership", Req: emptyCodec, Resp: emptyCodec}
	// GossipKeys asks a node for its gossip keyring, as fingerprints, for
	// GET /v1/gossip/keys.
	GossipKeys = peer.Method[Empty, []membership.KeyInfo]{ID: 6, Name: "gossip-keys", Req: emptyCodec, Resp: keyInfosCodec}
	// GossipKeyOp asks a node to install, use or remove a gossip key, for
	// POST /v1/gossip/keys; the answer says whether its keyring changed.
	// The key itself travels: see docs/security.md.
	GossipKeyOp = peer.Method[KeyChange, bool]{ID: 7, Name: "gossip-key-op", Req: keyChangeCodec, Resp: flagCodec}
	// InjectFault asks a node to inject a fault into itself, for POST
	// /v1/nodes/{id}/faults; the node's --enable-fault-injection decides
	// (protocol.ErrForbidden when off). A crash answers before it strikes.
	InjectFault = peer.Method[protocol.Fault, Empty]{ID: 8, Name: "inject-fault", Req: faultCodec, Resp: emptyCodec}
)

// Stream calls, served by broker/: routing, replication, takeover and
// attached delivery.
var (
	// Publish forwards publishes to the owner of their streams.
	Publish = peer.Method[[]PublishItem, []PublishOutcome]{ID: 10, Name: "publish", Req: publishItemsCodec, Resp: publishOutcomesCodec}
	// Attach registers a node's connection with the owner's stream and
	// returns the welcome data and the replay. Inline: deliveries that
	// follow it on the same link are served after it.
	Attach = peer.Method[AttachRequest, AttachReply]{ID: 11, Name: "attach", Inline: true, Req: attachRequestCodec, Resp: attachReplyCodec}
	// Detach tells the owner a node's last attached connection left.
	Detach = peer.OneWay[KeyNode]{ID: 12, Name: "detach", Inline: true, Msg: keyNodeCodec}
	// Deliver carries new messages from the owner to a node with attached
	// connections, in seq order.
	Deliver = peer.OneWay[Delivery]{ID: 13, Name: "deliver", Inline: true, Msg: deliveryCodec}
	// Evict tells an attached node the stream moved: its connections
	// reconnect.
	Evict = peer.OneWay[KeyNode]{ID: 14, Name: "evict", Inline: true, Msg: keyNodeCodec}
	// Handoff asks the old owner to seal the stream at the new owner's
	// epoch and return everything it holds.
	Handoff = peer.Method[HandoffRequest, session.Tail]{ID: 15, Name: "handoff", Req: handoffRequestCodec, Resp: tailCodec}
	// Replicate sends the owner's appends (or the whole stream) to its
	// backup.
	Replicate = peer.Method[session.Replication, Empty]{ID: 16, Name: "replicate", Inline: true, Req: replicationCodec, Resp: emptyCodec}
	// Seal asks the backup to fence its replica at the new owner's epoch
	// and return it (and, with Keep, keep it as the new owner's copy).
	Seal = peer.Method[HandoffRequest, session.Tail]{ID: 17, Name: "seal", Req: handoffRequestCodec, Resp: tailCodec}
	// Takeover asks a node (a draining owner's backup) to take a stream
	// over now.
	Takeover = peer.Method[session.Key, Empty]{ID: 18, Name: "takeover", Req: keyCodec, Resp: emptyCodec}
	// Probe asks whether a node holds a stream or a replica of it.
	Probe = peer.Method[session.Key, bool]{ID: 19, Name: "probe", Inline: true, Req: keyCodec, Resp: flagCodec}
	// ReplicateBatch carries many streams' appends to one backup; the
	// answer has one result per replication.
	ReplicateBatch = peer.Method[[]session.Replication, []error]{ID: 20, Name: "replicate-batch", Inline: true, Req: replicationsCodec, Resp: replicationResultsCodec}
	// Tips tell a node with attached connections, every heartbeat, how far
	// each of their streams is acknowledged, so that a lost delivery is
	// found even when nothing follows it.
	Tips = peer.OneWay[[]Tip]{ID: 21, Name: "tip", Inline: true, Msg: tipsCodec}
)

// Channel calls, served by broker/: presence lives with a channel's owner.
var (
	// ReportPresence tells a channel's owner the members a node's
	// connections make. Nodes now send ReportPresenceBatch; this one is
	// still served, for nodes of the version before.
	ReportPresence = peer.OneWay[PresenceReport]{ID: 22, Name: "presence-report", Inline: true, Msg: presenceReportCodec}
	// PresenceEvents carries joins and leaves from a channel's owner to a
	// node with subscribers, in order.
	PresenceEvents = peer.OneWay[[]PresenceEvent]{ID: 23, Name: "presence-events", Inline: true, Msg: presenceEventsCodec}
	// Presence asks a channel's owner for its presence set; the request is
	// the asking node's own report, taken first, so that a connection sees
	// its own subscription in the answer.
	Presence = peer.Method[PresenceReport, []session.Member]{ID: 24, Name: "presence", Inline: true, Req: presenceReportCodec, Resp: membersCodec}
	// Subscribers asks a node how many of its connections subscribe to a
	// channel, for GET /v1/channels/{channel}.
	Subscribers = peer.Method[session.Key, uint64]{ID: 25, Name: "subscribers", Inline: true, Req: keyCodec, Resp: uvarintCodec}
	// History asks a channel's owner for acknowledged messages after a seq.
	History = peer.Method[HistoryRequest, HistoryReply]{ID: 26, Name: "history", Req: historyRequestCodec, Resp: historyReplyCodec}
	// PresenceSnapshot gives a channel's backup the owner's presence set
	// (Members are the users present, over every node): a node that takes
	// the channel over after its owner failed compares the set it rebuilds
	// with it, so that the failed owner's members leave.
	PresenceSnapshot = peer.OneWay[PresenceReport]{ID: 27, Name: "presence-snapshot", Inline: true, Msg: presenceReportCodec}
	// FetchPresenceSnapshot asks a channel's former backup for the
	// snapshot it keeps, when a node that was not the backup took the
	// channel over (ErrNotHere: none).
	FetchPresenceSnapshot = peer.Method[session.Key, PresenceReport]{ID: 28, Name: "fetch-presence-snapshot", Inline: true, Req: keyCodec, Resp: presenceReportCodec}
	// ReportPresenceBatch tells one owner, in one frame, the members a
	// node's connections make in each of the channels it owns: sent
	// soon after a change and every half heartbeat interval, each report
	// renews the node's lease on its members (session.Presence).
	ReportPresenceBatch = peer.OneWay[[]PresenceReport]{ID: 29, Name: "presence-reports", Inline: true, Msg: presenceReportsCodec}
)

// ErrNotHere answers a call about a stream this node does not hold.
var ErrNotHere = errors.New("stream not held here")

// ErrIdle answers an attach that asked an idle owner to release its
// stream: the stream is promised to the caller's takeover for a moment.
var ErrIdle = errors.New("stream idle here: take it over")

// Errors is the table of errors that keep their identity across a link
// (peer.Config.Errors): the index is the wire code. Append only.
var Errors = []error{
	session.ErrStaleEpoch,
	session.ErrNotOwner,
	session.ErrNotFound,
	session.ErrGap,
	protocol.ErrUnavailable,
	ErrNotHere,
	ErrBadPayload,
	consensus.ErrNotLeader,
	consensus.ErrNoLeader,
	ErrIdle,
	membership.ErrInvalidKey,
	membership.ErrEncryptionOff,
	membership.ErrKeyNotInstalled,
	membership.ErrPrimaryKey,
	protocol.ErrForbidden,
	protocol.ErrBadRequest,
}
