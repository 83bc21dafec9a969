package peerapi

import (
	"errors"
	"fmt"

	"github.com/switchboard/switchboard/internal/wire"
	"github.com/switchboard/switchboard/membership"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/peer"
)

// The payloads of the methods in methods.go. Their encodings are part of
// the node-to-node protocol: a field is only ever added at the end, as an
// optional trailing value that older nodes ignore.

// PublishItem is one publish forwarded to a stream's owner.
type PublishItem struct {
	Key  session.Key
	ID   string
	Data []byte
}

var publishItemsCodec = peer.Codec[[]PublishItem]{
	Append: func(b []byte, items []PublishItem) []byte {
		b = wire.AppendUvarint(b, uint64(len(items)))
		for _, it := range items {
			b = appendKey(b, it.Key)
			b = wire.AppendString(b, it.ID)
			b = wire.AppendBytes(b, it.Data)
		}
		return b
	},
	Decode: func(p []byte) ([]PublishItem, error) {
		r := wire.NewReader(p)
		n := r.Count(3)
		items := make([]PublishItem, 0, n)
		for i := 0; i < n && r.Err() == nil; i++ {
			items = append(items, PublishItem{Key: readKey(r), ID: r.String(), Data: r.Bytes()})
		}
		if r.Err() != nil {
			return nil, badPayload("publish", r.Err())
		}
		return items, nil
	},
}

// Outcome codes of a forwarded publish, one per item.
const (
	PublishOK          = 0
	PublishNotOwner    = 1 // re-route: ownership is elsewhere (or moving)
	PublishUnavailable = 2
	PublishFailed      = 3
)

// PublishOutcome is the owner's answer to one forwarded publish.
type PublishOutcome struct {
	Code byte
	Seq  uint64
	Msg  string
}

var publishOutcomesCodec = peer.Codec[[]PublishOutcome]{
	Append: func(b []byte, out []PublishOutcome) []byte {
		b = wire.AppendUvarint(b, uint64(len(out)))
		for _, o := range out {
			b = append(b, o.Code)
			b = wire.AppendUvarint(b, o.Seq)
			b = wire.AppendString(b, o.Msg)
		}
		return b
	},
	Decode: func(p []byte) ([]PublishOutcome, error) {
		r := wire.NewReader(p)
		n := r.Count(3)
		out := make([]PublishOutcome, 0, n)
		for i := 0; i < n && r.Err() == nil; i++ {
			out = append(out, PublishOutcome{Code: r.Byte(), Seq: r.Uvarint(), Msg: r.String()})
		}
		if r.Err() != nil {
			return nil, badPayload("publish reply", r.Err())
		}
		return out, nil
	},
}

// AttachRequest asks a stream's owner to deliver to Node, from the
// position (Session, After) of the connection attaching.
type AttachRequest struct {
	Key     session.Key
	Node    string
	Session string
	After   uint64
	// Release asks an owner whose stream is idle to let Node take it over
	// (ErrIdle) rather than attach: the stream follows its connections. An
	// optional trailing byte: nodes that predate it attach.
	Release bool
	// Nonce names this attachment of Node (they only grow), so that a
	// detach it overtook on its way leaves it alone. An optional trailing
	// value after Release.
	Nonce uint64
	// Live asks for what comes next only (a channel subscription without
	// seq): resumed, with no replay. An optional trailing byte after
	// Nonce.
	Live bool
}

var attachRequestCodec = peer.Codec[AttachRequest]{
	Append: func(b []byte, a AttachRequest) []byte {
		b = appendKey(b, a.Key)
		b = wire.AppendString(b, a.Node)
		b = wire.AppendString(b, a.Session)
		b = wire.AppendUvarint(b, a.After)
		if a.Release || a.Nonce != 0 || a.Live {
			b = wire.AppendBool(b, a.Release)
		}
		if a.Nonce != 0 || a.Live {
			b = wire.AppendUvarint(b, a.Nonce)
		}
		if a.Live {
			b = wire.AppendBool(b, a.Live)
		}
		return b
	},
	Decode: func(p []byte) (AttachRequest, error) {
		r := wire.NewReader(p)
		a := AttachRequest{Key: readKey(r), Node: r.String(), Session: r.String(), After: r.Uvarint()}
		if r.Len() > 0 {
			a.Release = r.Bool()
		}
		if r.Len() > 0 {
			a.Nonce = r.Uvarint()
		}
		if r.Len() > 0 {
			a.Live = r.Bool()
		}
		if r.Err() != nil {
			return a, badPayload("attach", r.Err())
		}
		return a, nil
	},
}

// AttachReply is the welcome data and the replay for an attaching node.
type AttachReply struct {
	Session string
	Epoch   uint64
	Last    uint64
	Resumed bool
	Msgs    []session.Message
}

var attachReplyCodec = peer.Codec[AttachReply]{
	Append: func(b []byte, a AttachReply) []byte {
		b = wire.AppendString(b, a.Session)
		b = wire.AppendUvarint(b, a.Epoch)
		b = wire.AppendUvarint(b, a.Last)
		b = wire.AppendBool(b, a.Resumed)
		return session.AppendMessages(b, a.Msgs)
	},
	Decode: func(p []byte) (AttachReply, error) {
		r := wire.NewReader(p)
		a := AttachReply{Session: r.String(), Epoch: r.Uvarint(), Last: r.Uvarint(), Resumed: r.Bool()}
		if r.Err() != nil {
			return a, badPayload("attach reply", r.Err())
		}
		msgs, err := session.DecodeMessages(p[len(p)-r.Len():])
		if err != nil {
			return a, badPayload("attach reply", err)
		}
		a.Msgs = msgs
		return a, nil
	},
}

// KeyNode names a stream and a node: detach (the node that leaves) and
// evict (Node empty).
type KeyNode struct {
	Key  session.Key
	Node string
	// Lost (evict only) says the stream's continuity was lost: the
	// connections resync (4011) rather than resume. An optional trailing
	// byte, which nodes that predate it ignore.
	Lost bool
	// Nonce (detach only) ends the attachments of Node up to this nonce
	// (AttachRequest.Nonce), not a newer one; 0 ends any. An optional
	// trailing value after Lost.
	Nonce uint64
}

var keyNodeCodec = peer.Codec[KeyNode]{
	Append: func(b []byte, u KeyNode) []byte {
		b = wire.AppendString(appendKey(b, u.Key), u.Node)
		if u.Lost || u.Nonce != 0 {
			b = wire.AppendBool(b, u.Lost)
		}
		if u.Nonce != 0 {
			b = wire.AppendUvarint(b, u.Nonce)
		}
		return b
	},
	Decode: func(p []byte) (KeyNode, error) {
		r := wire.NewReader(p)
		u := KeyNode{Key: readKey(r), Node: r.String()}
		if r.Len() > 0 {
			u.Lost = r.Bool()
		}
		if r.Len() > 0 {
			u.Nonce = r.Uvarint()
		}
		if r.Err() != nil {
			return u, badPayload("key/node", r.Err())
		}
		return u, nil
	},
}

// Delivery is new messages of a stream, in order, from its owner to a
// node with attached connections.
type Delivery struct {
	Key   session.Key
	Epoch uint64
	Msgs  []session.Message
}

var deliveryCodec = peer.Codec[Delivery]{
	Append: func(b []byte, d Delivery) []byte {
		b = appendKey(b, d.Key)
		b = wire.AppendUvarint(b, d.Epoch)
		return session.AppendMessages(b, d.Msgs)
	},
	Decode: func(p []byte) (Delivery, error) {
		r := wire.NewReader(p)
		d := Delivery{Key: readKey(r), Epoch: r.Uvarint()}
		if r.Err() != nil {
			return d, badPayload("deliver", r.Err())
		}
		msgs, err := session.DecodeMessages(p[len(p)-r.Len():])
		if err != nil {
			return d, badPayload("deliver", err)
		}
		d.Msgs = msgs
		return d, nil
	},
}

// HandoffRequest asks the old owner (handoff) or the backup (seal) to fence
// a stream at a new owner's Epoch and return what it holds.
type HandoffRequest struct {
	Key   session.Key
	Epoch uint64
	// Keep (seal only) asks the backup to keep its sealed replica as the
	// copy of the caller, the new owner at Epoch, instead of waiting for a
	// full copy of the very same messages. It travels as an optional
	// trailing byte, which nodes that predate it ignore.
	Keep bool
}

var handoffRequestCodec = peer.Codec[HandoffRequest]{
	Append: func(b []byte, h HandoffRequest) []byte {
		b = wire.AppendUvarint(appendKey(b, h.Key), h.Epoch)
		if h.Keep {
			b = wire.AppendBool(b, true)
		}
		return b
	},
	Decode: func(p []byte) (HandoffRequest, error) {
		r := wire.NewReader(p)
		h := HandoffRequest{Key: readKey(r), Epoch: r.Uvarint()}
		if r.Len() > 0 {
			h.Keep = r.Bool()
		}
		if r.Err() != nil {
			return h, badPayload("handoff", r.Err())
		}
		return h, nil
	},
}

// tailCodec carries a session.Tail. Kept, like Keep, is an optional
// trailing byte: only a caller that asked for it ever receives it.
var tailCodec = peer.Codec[session.Tail]{
	Append: func(b []byte, h session.Tail) []byte {
		b = wire.AppendString(b, h.Session)
		b = wire.AppendUvarint(b, h.Last)
		b = session.AppendMessages(b, h.Msgs)
		if h.Kept {
			b = wire.AppendBool(b, true)
		}
		return b
	},
	Decode: func(p []byte) (session.Tail, error) {
		r := wire.NewReader(p)
		h := session.Tail{Session: r.String(), Last: r.Uvarint()}
		if r.Err() != nil {
			return h, badPayload("handoff reply", r.Err())
		}
		msgs, err := session.ReadMessages(r)
		if err != nil {
			return h, badPayload("handoff reply", err)
		}
		h.Msgs = msgs
		if r.Len() > 0 {
			h.Kept = r.Bool()
		}
		if r.Err() == nil && r.Len() != 0 {
			r.Fail("trailing bytes")
		}
		if r.Err() != nil {
			return h, badPayload("handoff reply", r.Err())
		}
		return h, nil
	},
}

// Tip is how far one stream is acknowledged at its owner.
type Tip struct {
	Key  session.Key
	Last uint64
}

var tipsCodec = peer.Codec[[]Tip]{
	Append: func(b []byte, tips []Tip) []byte {
		b = wire.AppendUvarint(b, uint64(len(tips)))
		for _, t := range tips {
			b = appendKey(b, t.Key)
			b = wire.AppendUvarint(b, t.Last)
		}
		return b
	},
	// Trailing bytes are ignored, so that a later version may append.
	Decode: func(p []byte) ([]Tip, error) {
		r := wire.NewReader(p)
		n := r.Count(2)
		tips := make([]Tip, 0, n)
		for i := 0; i < n && r.Err() == nil; i++ {
			tips = append(tips, Tip{Key: readKey(r), Last: r.Uvarint()})
		}
		if r.Err() != nil {
			return nil, badPayload("tip", r.Err())
		}
		return tips, nil
	},
}

func appendReplication(b []byte, r session.Replication) []byte {
	b = appendKey(b, r.Key)
	b = wire.AppendString(b, r.Session)
	b = wire.AppendUvarint(b, r.Epoch)
	b = wire.AppendUvarint(b, r.Last)
	b = wire.AppendBool(b, r.Full)
	return session.AppendMessages(b, r.Msgs)
}

func decodeReplication(p []byte) (session.Replication, error) {
	rd := wire.NewReader(p)
	r := session.Replication{Key: readKey(rd), Session: rd.String(), Epoch: rd.Uvarint(), Last: rd.Uvarint(), Full: rd.Bool()}
	if rd.Err() != nil {
		return r, badPayload("replicate", rd.Err())
	}
	msgs, err := session.DecodeMessages(p[len(p)-rd.Len():])
	if err != nil {
		return r, badPayload("replicate", err)
	}
	r.Msgs = msgs
	return r, nil
}

var replicationCodec = peer.Codec[session.Replication]{Append: appendReplication, Decode: decodeReplication}

// replicationsCodec frames many streams' replications to one backup.
var replicationsCodec = peer.Codec[[]session.Replication]{
	Append: func(b []byte, reqs []session.Replication) []byte {
		b = wire.AppendUvarint(b, uint64(len(reqs)))
		for _, r := range reqs {
			b = wire.AppendBytes(b, appendReplication(nil, r))
		}
		return b
	},
	Decode: func(p []byte) ([]session.Replication, error) {
		rd := wire.NewReader(p)
		n := rd.Count(2)
		reqs := make([]session.Replication, 0, n)
		for range n {
			b := rd.Bytes()
			if rd.Err() != nil {
				break
			}
			r, err := decodeReplication(b)
			if err != nil {
				return nil, err
			}
			reqs = append(reqs, r)
		}
		if err := rd.Err(); err != nil {
			return nil, badPayload("replicate batch", err)
		}
		if rd.Len() != 0 {
			return nil, badPayload("replicate batch", fmt.Errorf("%d trailing bytes", rd.Len()))
		}
		return reqs, nil
	},
}

// Results of a batched replication, one per request. Only what the owner
// acts on differently is told apart.
const (
	replOK     byte = 0
	replStale  byte = 1 // session.ErrStaleEpoch: the stream was taken over
	replGap    byte = 2 // session.ErrGap: the backup needs a full copy
	replFailed byte = 3
)

// replicationResultsCodec carries one error (nil for success) per request.
var replicationResultsCodec = peer.Codec[[]error]{
	Append: func(b []byte, errs []error) []byte {
		b = wire.AppendUvarint(b, uint64(len(errs)))
		for _, err := range errs {
			switch {
			case err == nil:
				b = append(b, replOK)
				continue
			case errors.Is(err, session.ErrStaleEpoch):
				b = append(b, replStale)
			case errors.Is(err, session.ErrGap):
				b = append(b, replGap)
			default:
				b = append(b, replFailed)
			}
			b = wire.AppendString(b, err.Error())
		}
		return b
	},
	Decode: func(p []byte) ([]error, error) {
		rd := wire.NewReader(p)
		n := rd.Count(1)
		errs := make([]error, n)
		for i := range errs {
			code := rd.Byte()
			if code == replOK || rd.Err() != nil {
				continue
			}
			msg := "remote: " + rd.String()
			switch code {
			case replStale:
				errs[i] = fmt.Errorf("%w: %s", session.ErrStaleEpoch, msg)
			case replGap:
				errs[i] = fmt.Errorf("%w: %s", session.ErrGap, msg)
			default:
				errs[i] = errors.New(msg)
			}
		}
		if err := rd.Err(); err != nil {
			return nil, badPayload("replicate results", err)
		}
		return errs, nil
	},
}

// keyInfosCodec carries a gossip keyring as fingerprints, primary first.
var keyInfosCodec = peer.Codec[[]membership.KeyInfo]{
	Append: func(b []byte, keys []membership.KeyInfo) []byte {
		b = wire.AppendUvarint(b, uint64(len(keys)))
		for _, k := range keys {
			b = wire.AppendString(b, k.Fingerprint)
			b = wire.AppendBool(b, k.Primary)
		}
		return b
	},
	// Trailing bytes are ignored, so that a later version may append.
	Decode: func(p []byte) ([]membership.KeyInfo, error) {
		r := wire.NewReader(p)
		n := r.Count(2)
		keys := make([]membership.KeyInfo, 0, n)
		for i := 0; i < n && r.Err() == nil; i++ {
			keys = append(keys, membership.KeyInfo{Fingerprint: r.String(), Primary: r.Bool()})
		}
		if r.Err() != nil {
			return nil, badPayload("gossip keys", r.Err())
		}
		return keys, nil
	},
}

// KeyChange is one change to a node's gossip keyring.
type KeyChange struct {
	Op  membership.KeyOp
	Key []byte
}

var keyChangeCodec = peer.Codec[KeyChange]{
	Append: func(b []byte, c KeyChange) []byte {
		return wire.AppendBytes(append(b, byte(c.Op)), c.Key)
	},
	// Trailing bytes are ignored, so that a later version may append.
	Decode: func(p []byte) (KeyChange, error) {
		r := wire.NewReader(p)
		c := KeyChange{Op: membership.KeyOp(r.Byte()), Key: r.Bytes()}
		if r.Err() != nil {
			return c, badPayload("gossip key op", r.Err())
		}
		return c, nil
	},
}

// faultCodec carries a fault: its kind, duration and latency in ms.
var faultCodec = peer.Codec[protocol.Fault]{
	Append: func(b []byte, f protocol.Fault) []byte {
		b = wire.AppendString(b, f.Kind)
		b = wire.AppendUvarint(b, uint64(max(f.DurationMS, 0)))
		return wire.AppendUvarint(b, uint64(max(f.LatencyMS, 0)))
	},
	// Trailing bytes are ignored, so that a later version may append.
	Decode: func(p []byte) (protocol.Fault, error) {
		r := wire.NewReader(p)
		f := protocol.Fault{Kind: r.String()}
		d, l := r.Uvarint(), r.Uvarint()
		if r.Err() != nil {
			return f, badPayload("fault", r.Err())
		}
		if d > protocol.MaxFaultDurationMS || l > protocol.MaxFaultDurationMS {
			return f, badPayload("fault", fmt.Errorf("duration %d or latency %d out of range", d, l))
		}
		f.DurationMS, f.LatencyMS = int64(d), int64(l)
		return f, nil
	},
}
