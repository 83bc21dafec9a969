package transport

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Close codes of the client protocol (DESIGN.md §3).
const (
	CloseNormal        = 1000
	CloseGoingAway     = 1001 // node shutting down
	CloseInvalidUTF8   = 1007
	CloseTooLarge      = 1009
	CloseTryAgainLater = 1013 // registry unavailable (no quorum); not in §3, standard RFC 6455 code
	CloseUnauthorized  = 4001
	CloseProtocol      = 4002
	CloseHelloTimeout  = 4003
	CloseSlowConsumer  = 4008
	CloseDraining      = 4010
	CloseExpired       = 4011
	CloseRateLimited   = 4029
)

// Error codes carried in error frames, one per close code.
const (
	CodeUnauthorized = "unauthorized"
	CodeProtocol     = "protocol_error"
	CodeHelloTimeout = "hello_timeout"
	CodeTooLarge     = "frame_too_large"
	CodeInvalidUTF8  = "invalid_utf8"
	CodeSlowConsumer = "slow_consumer"
	CodeDraining     = "draining"
	CodeExpired      = "session_expired"
	CodeRateLimited  = "rate_limited"
	CodeShutdown     = "shutting_down"
	CodeUnavailable  = "unavailable"
)

// Frame types.
const (
	TypeHello     = "hello"
	TypePing      = "ping"
	TypePong      = "pong"
	TypeAck       = "ack"
	TypeWelcome   = "welcome"
	TypeMessage   = "message"
	TypeHeartbeat = "heartbeat"
	TypeError     = "error"
)

// Resume is the resume point a client sends in its hello.
type Resume struct {
	Session string `json:"session,omitempty"`
	Seq     uint64 `json:"seq"`
}

// ClientFrame is any frame a client sends; which fields matter depends on Type.
type ClientFrame struct {
	Type   string          `json:"type"`
	Token  string          `json:"token,omitempty"`
	Resume *Resume         `json:"resume,omitempty"`
	ID     json.RawMessage `json:"id,omitempty"` // ping id, echoed verbatim in the pong
	Seq    uint64          `json:"seq,omitempty"`
}

// ErrBadFrame is returned by DecodeClientFrame for frames that break §3.
var ErrBadFrame = errors.New("bad frame")

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
	case TypeHello, TypeAck:
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

// Message is one stream message as sent to a client.
type Message struct {
	Type string          `json:"type"`
	Seq  uint64          `json:"seq"`
	ID   string          `json:"id"`
	TS   int64           `json:"ts"`
	Data json.RawMessage `json:"data"`
}

// ErrorFrame precedes a close.
type ErrorFrame struct {
	Type      string   `json:"type"`
	Code      string   `json:"code"`
	Message   string   `json:"message"`
	Endpoints []string `json:"endpoints,omitempty"` // on draining: where to go
}

// Heartbeat is sent on an idle connection.
type Heartbeat struct {
	Type string `json:"type"`
	Seq  uint64 `json:"seq"`
}

// Pong answers an application ping.
type Pong struct {
	Type string          `json:"type"`
	ID   json.RawMessage `json:"id,omitempty"`
}

// AppendMessageFrame appends the encoded message frame to dst. The stream
// encodes a message once and shares the bytes among all of a user's
// connections, so this is on the hot path and avoids reflection.
func AppendMessageFrame(dst []byte, seq uint64, id string, ts int64, data json.RawMessage) []byte {
	if dst == nil {
		dst = make([]byte, 0, len(`{"type":"message","seq":,"id":"","ts":,"data":}`)+40+len(id)+len(data))
	}
	dst = append(dst, `{"type":"message","seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"id":`...)
	dst = appendJSONString(dst, id)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, `,"data":`...)
	if len(data) == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, data...)
	}
	return append(dst, '}')
}

// AppendHeartbeatFrame appends a heartbeat frame to dst.
func AppendHeartbeatFrame(dst []byte, seq uint64) []byte {
	dst = append(dst, `{"type":"heartbeat","seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	return append(dst, '}')
}

// EncodeError encodes an error frame.
func EncodeError(code, msg string, endpoints []string) []byte {
	b, _ := json.Marshal(ErrorFrame{Type: TypeError, Code: code, Message: msg, Endpoints: endpoints})
	return b
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

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, escaping what JSON requires.
// Invalid UTF-8 is replaced by U+FFFD like encoding/json does. Runs of
// bytes that need no escaping are copied whole.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			if c == '"' || c == '\\' {
				dst = append(dst, '\\', c)
			} else {
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\ufffd"...)
		case r == 0x2028 || r == 0x2029:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\u202`...)
			dst = append(dst, hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
