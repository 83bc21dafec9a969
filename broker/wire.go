package broker

import (
	"errors"
	"fmt"

	"github.com/switchboard/switchboard/internal/wire"
	"github.com/switchboard/switchboard/session"
)

// Peer-link methods the broker serves. Values are part of the node-to-node
// protocol: never reuse one. 1..9 belong to other components.
const (
	methodPublish = 10 // batch of publishes forwarded to the owner
	methodAttach  = 11 // a node attaches a connection to the owner's stream
	methodDetach  = 12 // ... and detaches its last one (one-way)
	methodDeliver = 13 // owner → attached node: new messages, in order (one-way)
	methodEvict   = 14 // owner → attached node: stream moved, reconnect clients (one-way)
	methodHandoff = 15 // new owner → old owner: seal at epoch, return the stream
)

// ErrBadPayload means a peer sent a payload that does not decode.
var ErrBadPayload = errors.New("bad peer payload")

func badPayload(what string, err error) error {
	return fmt.Errorf("%w: %s: %v", ErrBadPayload, what, err)
}

type publishItem struct {
	User, ID string
	Data     []byte
}

func encodePublish(items []publishItem) []byte {
	b := wire.AppendUvarint(nil, uint64(len(items)))
	for _, it := range items {
		b = wire.AppendString(b, it.User)
		b = wire.AppendString(b, it.ID)
		b = wire.AppendBytes(b, it.Data)
	}
	return b
}

func decodePublish(p []byte) ([]publishItem, error) {
	r := wire.NewReader(p)
	n := r.Count(3)
	items := make([]publishItem, 0, n)
	for i := 0; i < n && r.Err() == nil; i++ {
		items = append(items, publishItem{User: r.String(), ID: r.String(), Data: r.Bytes()})
	}
	if r.Err() != nil {
		return nil, badPayload("publish", r.Err())
	}
	return items, nil
}

// Per-item outcomes of a forwarded publish.
const (
	itemOK          = 0
	itemNotOwner    = 1 // re-route: ownership is elsewhere (or moving)
	itemUnavailable = 2
	itemFailed      = 3
)

type publishOutcome struct {
	Code byte
	Seq  uint64
	Msg  string
}

func encodePublishReply(out []publishOutcome) []byte {
	b := wire.AppendUvarint(nil, uint64(len(out)))
	for _, o := range out {
		b = append(b, o.Code)
		b = wire.AppendUvarint(b, o.Seq)
		b = wire.AppendString(b, o.Msg)
	}
	return b
}

func decodePublishReply(p []byte) ([]publishOutcome, error) {
	r := wire.NewReader(p)
	n := r.Count(3)
	out := make([]publishOutcome, 0, n)
	for i := 0; i < n && r.Err() == nil; i++ {
		out = append(out, publishOutcome{Code: r.Byte(), Seq: r.Uvarint(), Msg: r.String()})
	}
	if r.Err() != nil {
		return nil, badPayload("publish reply", r.Err())
	}
	return out, nil
}

type attachRequest struct {
	User, Node, Session string
	After               uint64
}

func encodeAttach(a attachRequest) []byte {
	b := wire.AppendString(nil, a.User)
	b = wire.AppendString(b, a.Node)
	b = wire.AppendString(b, a.Session)
	return wire.AppendUvarint(b, a.After)
}

func decodeAttach(p []byte) (attachRequest, error) {
	r := wire.NewReader(p)
	a := attachRequest{User: r.String(), Node: r.String(), Session: r.String(), After: r.Uvarint()}
	if r.Err() != nil {
		return a, badPayload("attach", r.Err())
	}
	return a, nil
}

type attachReply struct {
	Session string
	Epoch   uint64
	Last    uint64
	Resumed bool
	Msgs    []session.Message
}

func encodeAttachReply(a attachReply) []byte {
	b := wire.AppendString(nil, a.Session)
	b = wire.AppendUvarint(b, a.Epoch)
	b = wire.AppendUvarint(b, a.Last)
	b = wire.AppendBool(b, a.Resumed)
	return session.AppendMessages(b, a.Msgs)
}

func decodeAttachReply(p []byte) (attachReply, error) {
	r := wire.NewReader(p)
	a := attachReply{Session: r.String(), Epoch: r.Uvarint(), Last: r.Uvarint(), Resumed: r.Bool()}
	if r.Err() != nil {
		return a, badPayload("attach reply", r.Err())
	}
	msgs, err := session.DecodeMessages(p[len(p)-r.Len():])
	if err != nil {
		return a, badPayload("attach reply", err)
	}
	a.Msgs = msgs
	return a, nil
}

// userNode is the payload of detach (user, node) and evict (user, "").
type userNode struct{ User, Node string }

func encodeUserNode(u userNode) []byte {
	return wire.AppendString(wire.AppendString(nil, u.User), u.Node)
}

func decodeUserNode(p []byte) (userNode, error) {
	r := wire.NewReader(p)
	u := userNode{User: r.String(), Node: r.String()}
	if r.Err() != nil {
		return u, badPayload("user/node", r.Err())
	}
	return u, nil
}

type deliver struct {
	User  string
	Epoch uint64
	Msgs  []session.Message
}

func encodeDeliver(d deliver) []byte {
	b := wire.AppendString(nil, d.User)
	b = wire.AppendUvarint(b, d.Epoch)
	return session.AppendMessages(b, d.Msgs)
}

func decodeDeliver(p []byte) (deliver, error) {
	r := wire.NewReader(p)
	d := deliver{User: r.String(), Epoch: r.Uvarint()}
	if r.Err() != nil {
		return d, badPayload("deliver", r.Err())
	}
	msgs, err := session.DecodeMessages(p[len(p)-r.Len():])
	if err != nil {
		return d, badPayload("deliver", err)
	}
	d.Msgs = msgs
	return d, nil
}

type handoffRequest struct {
	User  string
	Epoch uint64
	// Keep (seal only) asks the backup to keep its sealed replica as the
	// copy of the caller, the new owner at Epoch, instead of waiting for a
	// full copy of the very same messages. It travels as an optional
	// trailing byte, which nodes that predate it ignore.
	Keep bool
}

func encodeHandoff(h handoffRequest) []byte {
	b := wire.AppendUvarint(wire.AppendString(nil, h.User), h.Epoch)
	if h.Keep {
		b = wire.AppendBool(b, true)
	}
	return b
}

func decodeHandoff(p []byte) (handoffRequest, error) {
	r := wire.NewReader(p)
	h := handoffRequest{User: r.String(), Epoch: r.Uvarint()}
	if r.Len() > 0 {
		h.Keep = r.Bool()
	}
	if r.Err() != nil {
		return h, badPayload("handoff", r.Err())
	}
	return h, nil
}

type handoffReply struct {
	Session string
	Last    uint64
	Msgs    []session.Message
	// Kept says the backup kept exactly these messages as the new owner's
	// replica (an answer to a seal with Keep). Like Keep it is an optional
	// trailing byte: only a caller that asked for it ever receives it.
	Kept bool
}

func encodeHandoffReply(h handoffReply) []byte {
	b := wire.AppendString(nil, h.Session)
	b = wire.AppendUvarint(b, h.Last)
	b = session.AppendMessages(b, h.Msgs)
	if h.Kept {
		b = wire.AppendBool(b, true)
	}
	return b
}

func decodeHandoffReply(p []byte) (handoffReply, error) {
	r := wire.NewReader(p)
	h := handoffReply{Session: r.String(), Last: r.Uvarint()}
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
}

// Replication methods (zero-loss streams).
const (
	methodReplicate = 16 // owner → backup: appended messages (or the whole stream)
	methodSeal      = 17 // new owner → backup: fence at epoch, return the replica
	methodTakeover  = 18 // draining owner → backup: take this stream over now
	methodProbe     = 19 // does this node hold user's stream or replica? (1 byte)
	// methodReplicateBatch carries many users' appends to one backup in
	// one call; the answer has one result per request.
	methodReplicateBatch = 20
	// methodTip (one-way, owner → attached node, every heartbeat) says how
	// far each stream attached there is acknowledged, so a node whose
	// deliveries were lost on the way finds out even when nothing follows.
	methodTip = 21
)

// tip is how far one user's stream is acknowledged at its owner.
type tip struct {
	User string
	Last uint64
}

func encodeTips(tips []tip) []byte {
	b := wire.AppendUvarint(nil, uint64(len(tips)))
	for _, t := range tips {
		b = wire.AppendString(b, t.User)
		b = wire.AppendUvarint(b, t.Last)
	}
	return b
}

// decodeTips ignores trailing bytes, so that a later version may append.
func decodeTips(p []byte) ([]tip, error) {
	r := wire.NewReader(p)
	n := r.Count(2)
	tips := make([]tip, 0, n)
	for i := 0; i < n && r.Err() == nil; i++ {
		tips = append(tips, tip{User: r.String(), Last: r.Uvarint()})
	}
	if r.Err() != nil {
		return nil, badPayload("tip", r.Err())
	}
	return tips, nil
}

type replicateRequest struct {
	User, Session string
	Epoch, Last   uint64
	Full          bool
	Msgs          []session.Message
}

func encodeReplicate(r replicateRequest) []byte {
	b := wire.AppendString(nil, r.User)
	b = wire.AppendString(b, r.Session)
	b = wire.AppendUvarint(b, r.Epoch)
	b = wire.AppendUvarint(b, r.Last)
	b = wire.AppendBool(b, r.Full)
	return session.AppendMessages(b, r.Msgs)
}

func decodeReplicate(p []byte) (replicateRequest, error) {
	rd := wire.NewReader(p)
	r := replicateRequest{User: rd.String(), Session: rd.String(), Epoch: rd.Uvarint(), Last: rd.Uvarint(), Full: rd.Bool()}
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

// encodeReplicateBatch frames a batch of replications to one backup.
func encodeReplicateBatch(reqs []replicateRequest) []byte {
	b := wire.AppendUvarint(nil, uint64(len(reqs)))
	for _, r := range reqs {
		b = wire.AppendBytes(b, encodeReplicate(r))
	}
	return b
}

func decodeReplicateBatch(p []byte) ([]replicateRequest, error) {
	rd := wire.NewReader(p)
	n := rd.Count(2)
	reqs := make([]replicateRequest, 0, n)
	for range n {
		b := rd.Bytes()
		if rd.Err() != nil {
			break
		}
		r, err := decodeReplicate(b)
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
}

// Results of a batched replication, one per request. Only what the owner
// acts on differently is told apart.
const (
	replOK     byte = 0
	replStale  byte = 1 // session.ErrStaleEpoch: the stream was taken over
	replGap    byte = 2 // session.ErrGap: the backup needs a full copy
	replFailed byte = 3
)

func encodeReplicateResults(errs []error) []byte {
	b := wire.AppendUvarint(nil, uint64(len(errs)))
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
}

func decodeReplicateResults(p []byte, want int) ([]error, error) {
	rd := wire.NewReader(p)
	n := rd.Count(1)
	if rd.Err() == nil && n != want {
		return nil, badPayload("replicate results", fmt.Errorf("%d results for %d requests", n, want))
	}
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
}
