package protocol

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Frame types (the `type` field of every frame).
const (
	TypeHello     = "hello"
	TypePing      = "ping"
	TypePong      = "pong"
	TypeAck       = "ack"
	TypeRefresh   = "refresh"
	TypeRefreshed = "refreshed"
	TypeWelcome   = "welcome"
	TypeMessage   = "message"
	TypeHeartbeat = "heartbeat"
	TypeError     = "error"
)

// Resume is the resume point a client sends in its hello: the session it
// had and the last seq it processed.
type Resume struct {
	Session string `json:"session,omitempty"`
	Seq     uint64 `json:"seq"`
}

// ClientFrame is any frame a client sends; which fields matter depends on
// Type: hello (Token, Resume, Subscriptions), ping (ID), ack (Seq),
// refresh (Token), subscribe (Sub), unsubscribe and presence (Channel).
type ClientFrame struct {
	Type   string          `json:"type"`
	Token  string          `json:"token,omitempty"`
	Resume *Resume         `json:"resume,omitempty"`
	ID     json.RawMessage `json:"id,omitempty"` // ping id, echoed verbatim in the pong
	Seq    uint64          `json:"seq,omitempty"`
	// Channel names the channel of an unsubscribe or presence frame.
	Channel string `json:"channel,omitempty"`
	// Subscriptions are a hello's channels to subscribe (or resume).
	Subscriptions []Subscription `json:"subscriptions,omitempty"`
	// Sub is a subscribe frame's request, decoded from the same object
	// (its seq may be absent, which Seq cannot tell from 0).
	Sub *Subscription `json:"-"`
}

// ErrBadFrame wraps every DecodeClientFrame error; it matches
// ErrBadRequest, so a bad frame closes the connection with 4002.
var ErrBadFrame = fmt.Errorf("%w: bad frame", ErrBadRequest)

// DecodeClientFrame parses one client text frame. It never panics; every
// malformed input yields an error wrapping ErrBadFrame.
func DecodeClientFrame(b []byte) (ClientFrame, error) {
	var f ClientFrame
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%w: not a JSON object: %v", ErrBadFrame, err)
	}
	switch f.Type {
	case "":
		return f, fmt.Errorf("%w: missing type", ErrBadFrame)
	case TypeHello, TypeAck, TypeRefresh, TypeUnsubscribe, TypePresence:
	case TypeSubscribe:
		var sub Subscription
		if err := json.Unmarshal(b, &sub); err != nil {
			return f, fmt.Errorf("%w: subscribe: %v", ErrBadFrame, err)
		}
		f.Sub = &sub
	case TypePing:
		if len(f.ID) > 0 && !json.Valid(f.ID) {
			return f, fmt.Errorf("%w: bad ping id", ErrBadFrame)
		}
	default:
		return f, fmt.Errorf("%w: unknown type %q", ErrBadFrame, f.Type)
	}
	return f, nil
}

// Welcome answers a hello.
type Welcome struct {
	Type        string   `json:"type"`
	Session     string   `json:"session"`
	Node        string   `json:"node"`
	Region      string   `json:"region"`
	Zone        string   `json:"zone"`
	Resumed     bool     `json:"resumed"`
	Seq         uint64   `json:"seq"`
	HeartbeatMS int64    `json:"heartbeat_ms"`
	Endpoints   []string `json:"endpoints"`
}

// EncodeWelcome encodes a welcome frame.
func EncodeWelcome(w Welcome) []byte {
	w.Type = TypeWelcome
	if w.Endpoints == nil {
		w.Endpoints = []string{}
	}
	b, _ := json.Marshal(w)
	return b
}

// ErrorFrame precedes a close (other than 1000).
type ErrorFrame struct {
	Type      string   `json:"type"`
	Code      string   `json:"code"`
	Message   string   `json:"message"`
	Endpoints []string `json:"endpoints,omitempty"` // on 4010: where to reconnect
}

// EncodeError encodes an error frame with code slug.
func EncodeError(slug, msg string, endpoints []string) []byte {
	b, _ := json.Marshal(ErrorFrame{Type: TypeError, Code: slug, Message: msg, Endpoints: endpoints})
	return b
}

// Heartbeat is written on an idle connection: seq is the highest seq the
// connection has been sent.
type Heartbeat struct {
	Type string `json:"type"`
	Seq  uint64 `json:"seq"`
}

// AppendHeartbeat appends a heartbeat frame to dst.
func AppendHeartbeat(dst []byte, seq uint64) []byte {
	dst = append(dst, `{"type":"heartbeat","seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	return append(dst, '}')
}

// Pong answers an application ping, echoing its id.
type Pong struct {
	Type string          `json:"type"`
	ID   json.RawMessage `json:"id,omitempty"`
}

// AppendPong appends a pong echoing a ping's id verbatim; id must be
// valid JSON (DecodeClientFrame checked it) or empty.
func AppendPong(dst []byte, id []byte) []byte {
	if len(id) == 0 {
		return append(dst, `{"type":"pong"}`...)
	}
	dst = append(dst, `{"type":"pong","id":`...)
	dst = append(dst, id...)
	return append(dst, '}')
}

// Refreshed answers a refresh that replaced the connection's token: Exp is
// the new token's expiry, in unix seconds.
type Refreshed struct {
	Type string `json:"type"`
	Exp  int64  `json:"exp"`
}

// EncodeRefreshed encodes a refreshed frame for a token that expires at
// exp (unix seconds).
func EncodeRefreshed(exp int64) []byte {
	b, _ := json.Marshal(Refreshed{Type: TypeRefreshed, Exp: exp})
	return b
}

// FrameType returns the type of a server frame without decoding the rest;
// a frame that is not a JSON object with a string type is an error.
func FrameType(b []byte) (string, error) {
	var t struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	return t.Type, nil
}
