package protocol

import (
	"encoding/json"
	"time"
)

// Publish is the body of POST /v1/publish and one message of a batch
// (DESIGN.md §4): to a user or to a channel, exactly one of the two.
// User, Channel and ID are pointers so that a node can tell a missing
// field from an empty one: a missing id is generated, an empty one is
// refused.
type Publish struct {
	User    *string         `json:"user,omitempty"`
	Channel *string         `json:"channel,omitempty"`
	Data    json.RawMessage `json:"data"`
	ID      *string         `json:"id,omitempty"`
}

// NewPublish returns the body that publishes data to user; id "" leaves
// the id for the node to choose.
func NewPublish(user string, data json.RawMessage, id string) Publish {
	p := Publish{User: &user, Data: data}
	if id != "" {
		p.ID = &id
	}
	return p
}

// NewChannelPublish returns the body that publishes data to channel; id
// "" leaves the id for the node to choose.
func NewChannelPublish(channel string, data json.RawMessage, id string) Publish {
	p := Publish{Channel: &channel, Data: data}
	if id != "" {
		p.ID = &id
	}
	return p
}

// PublishResult answers one publish: the stored message's seq, its id
// and the owner node that stored it; or, within a batch, Error alone.
type PublishResult struct {
	User    string `json:"user,omitempty"`
	Channel string `json:"channel,omitempty"`
	Seq     uint64 `json:"seq,omitempty"`
	ID      string `json:"id,omitempty"`
	Node    string `json:"node,omitempty"`
	Error   string `json:"error,omitempty"`
}

// PublishBatch is the body of POST /v1/publish/batch.
type PublishBatch struct {
	Messages []Publish `json:"messages"`
}

// RawPublishBatch is PublishBatch with each message left undecoded: a node
// falls back to it when some message does not decode, so that each bad
// message gets its own error and the others are still published.
type RawPublishBatch struct {
	Messages []json.RawMessage `json:"messages"`
}

// PublishBatchResult answers a batch: one result per message, in order.
type PublishBatchResult struct {
	Results []PublishResult `json:"results"`
}

// Error is the body of every error answer of the HTTP APIs.
type Error struct {
	Error string `json:"error"`
}

// Health answers GET /healthz and GET /readyz; Reason says why a node is
// not ready.
type Health struct {
	Status string `json:"status"`
	Node   string `json:"node"`
	Reason string `json:"reason,omitempty"`
}

// Cluster answers GET /v1/cluster.
type Cluster struct {
	Leader      string        `json:"leader"`
	Term        uint64        `json:"term"`
	CommitIndex uint64        `json:"commit_index"`
	Nodes       []ClusterNode `json:"nodes"`
	// Durability is "replicated" when acknowledged messages are on two
	// live nodes, "local" when this node sees no other live node.
	Durability string `json:"durability"`
	// ClusterTLS says whether this node's cluster port takes only mutual
	// TLS with a certificate of the cluster CA; false means the cluster
	// ports must be on a private network.
	ClusterTLS bool `json:"cluster_tls"`
}

// ClusterNode is one node of a Cluster answer.
type ClusterNode struct {
	ID            string `json:"id"`
	Region        string `json:"region"`
	Zone          string `json:"zone"`
	PublicURL     string `json:"public_url"`
	State         string `json:"state"` // alive, suspect, dead, left or draining
	Raft          string `json:"raft"`  // leader, voter, nonvoter or none
	Connections   int    `json:"connections"`
	SessionsOwned int    `json:"sessions_owned"`
}

// Session answers GET /v1/sessions/{user}.
type Session struct {
	User    string `json:"user"`
	Session string `json:"session"`
	Owner   string `json:"owner"`
	Backup  string `json:"backup"`
	Epoch   uint64 `json:"epoch"`
	State   string `json:"state"` // attached or detached
	Seq     uint64 `json:"seq"`
}

// Raft answers GET /v1/raft: this node's view of the Raft configuration.
type Raft struct {
	Leader       string       `json:"leader"`
	Term         uint64       `json:"term"`
	CommitIndex  uint64       `json:"commit_index"`
	AppliedIndex uint64       `json:"applied_index"`
	Servers      []RaftServer `json:"servers"`
}

// RaftServer is one server of the Raft configuration, with the place
// gossip knows for it ("" when gossip does not know the node).
type RaftServer struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"` // voter or nonvoter
	Region   string `json:"region"`
	Zone     string `json:"zone"`
}

// NodeState answers POST /v1/nodes/{id}/drain.
type NodeState struct {
	Node  string `json:"node"`
	State string `json:"state"`
}

// LeadershipTransfer answers POST /v1/raft/transfer-leadership.
type LeadershipTransfer struct {
	Previous string `json:"previous"`
	Leader   string `json:"leader"`
}

// GossipKeys answers GET /v1/gossip/keys: the gossip keyrings of the live
// nodes, by fingerprint; never the keys themselves.
type GossipKeys struct {
	// Encrypted says whether the node answering encrypts its gossip.
	Encrypted bool            `json:"encrypted"`
	Keys      []GossipKeyInfo `json:"keys"`
	// Nodes is how many live nodes told their keyring; Unreachable lists
	// the live nodes that could not be asked.
	Nodes       int      `json:"nodes"`
	Unreachable []string `json:"unreachable,omitempty"`
}

// GossipKeyInfo is one key of a GossipKeys answer.
type GossipKeyInfo struct {
	Fingerprint string `json:"fingerprint"` // first 16 hex digits of the key's SHA-256
	// Primary: the key is the primary on every node that answered.
	Primary bool `json:"primary"`
	// Nodes holding the key, and on how many of them it is the primary
	// (during a rotation's use step, fewer than all).
	Nodes     int `json:"nodes"`
	PrimaryOn int `json:"primary_on"`
}

// GossipKeyOp is the body of POST /v1/gossip/keys: op "install", "use"
// or "remove", and the key in base64.
type GossipKeyOp struct {
	Op  string `json:"op"`
	Key string `json:"key"`
}

// GossipKeyOpResult answers POST /v1/gossip/keys: the op's outcome on each
// live node. Error says why when the answer is not 200.
type GossipKeyOpResult struct {
	Op          string          `json:"op"`
	Fingerprint string          `json:"fingerprint"`
	Nodes       []GossipKeyNode `json:"nodes"`
	Error       string          `json:"error,omitempty"`
}

// GossipKeyNode is one node's outcome in a GossipKeyOpResult: OK and
// whether its keyring changed (installing a key it holds changes
// nothing), or why not.
type GossipKeyNode struct {
	Node    string `json:"node"`
	OK      bool   `json:"ok"`
	Changed bool   `json:"changed"`
	Error   string `json:"error,omitempty"`
}

// Stats answers GET /v1/stats: what the dashboard polls. Each live node
// reports its own figures; At is when the answering node gathered them.
type Stats struct {
	At    time.Time   `json:"at"`
	Nodes []NodeStats `json:"nodes"`
}

// NodeStats is one live node of a Stats answer. Rates are messages per
// second over the node's last few seconds (WindowMS): PublishRate counts
// the messages accepted by its publish API, DeliveryRate the message
// frames it handed to its own client connections. Error says why a node
// could not be asked; its figures are then zero.
type NodeStats struct {
	ID            string  `json:"id"`
	Region        string  `json:"region"`
	Zone          string  `json:"zone"`
	State         string  `json:"state"` // alive, suspect or draining
	Raft          string  `json:"raft"`  // leader, voter, nonvoter or none
	Connections   int     `json:"connections"`
	SessionsOwned int     `json:"sessions_owned"` // user streams held
	ChannelsOwned int     `json:"channels_owned"` // channel streams held
	Attached      int     `json:"attached"`       // streams served here from another owner
	Replicas      int     `json:"replicas"`       // streams backed up here
	PublishRate   float64 `json:"publish_rate"`
	DeliveryRate  float64 `json:"delivery_rate"`
	Published     uint64  `json:"published"` // totals since the node started
	Delivered     uint64  `json:"delivered"`
	WindowMS      int64   `json:"window_ms"`
	Error         string  `json:"error,omitempty"`
}
