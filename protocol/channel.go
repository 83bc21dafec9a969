package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Channel frame types (DESIGN.md §3a). TypePresence names both the
// client's question and the server's answer.
const (
	TypeSubscribe    = "subscribe"
	TypeUnsubscribe  = "unsubscribe"
	TypePresence     = "presence"
	TypeSubscribed   = "subscribed"
	TypeUnsubscribed = "unsubscribed"
	TypeJoin         = "join"
	TypeLeave        = "leave"
)

// MaxChannelName is the longest channel name, in bytes.
const MaxChannelName = 255

// Channel errors. They are answered with an error frame naming the
// channel and never close the connection (ChannelSlugOf); over HTTP the
// first two are 400 and 403.
var (
	// ErrBadChannel: a name that breaks the channel name rules, reserved
	// `$` names included.
	ErrBadChannel = fmt.Errorf("%w: bad channel", ErrBadRequest)
	// ErrChannelForbidden: the token's channels claim does not allow it.
	ErrChannelForbidden = fmt.Errorf("%w: channel not allowed", ErrForbidden)
	// ErrTooManyChannels: the connection is at --max-channels-per-conn.
	ErrTooManyChannels = errors.New("too many channels")
	// ErrNotSubscribed: a presence or unsubscribe for a channel the
	// connection has not subscribed.
	ErrNotSubscribed = errors.New("not subscribed")
)

// ChannelSlugOf is the error frame code for a subscription error: one of
// forbidden, bad_channel, too_many_channels, not_subscribed, unavailable.
func ChannelSlugOf(err error) string {
	switch {
	case errors.Is(err, ErrBadChannel):
		return "bad_channel"
	case errors.Is(err, ErrChannelForbidden):
		return "forbidden"
	case errors.Is(err, ErrTooManyChannels):
		return "too_many_channels"
	case errors.Is(err, ErrNotSubscribed):
		return "not_subscribed"
	}
	return "unavailable"
}

// ValidChannel checks a channel name: 1–255 bytes of printable ASCII
// without space, not beginning with `$` (reserved).
func ValidChannel(name string) error {
	switch {
	case name == "":
		return Errorf(ErrBadChannel, "channel name is empty")
	case len(name) > MaxChannelName:
		return Errorf(ErrBadChannel, "channel name is %d bytes, over %d", len(name), MaxChannelName)
	case name[0] == '$':
		return Errorf(ErrBadChannel, "channel names beginning with $ are reserved")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f {
			return Errorf(ErrBadChannel, "channel name has a byte 0x%02x at %d: printable ASCII without space only", c, i)
		}
	}
	return nil
}

// ChannelAllowed reports whether a token's channels claim allows name: a
// pattern is an exact name or a prefix ending in `*`. No patterns, no
// channels.
func ChannelAllowed(patterns []string, name string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(name, prefix) {
				return true
			}
		} else if p == name {
			return true
		}
	}
	return false
}

// Subscription is what a subscribe frame asks, and one entry of a hello's
// subscriptions. Seq nil asks for live messages only; 0 for the channel
// from its start; n for the messages after n.
type Subscription struct {
	Channel   string  `json:"channel"`
	Seq       *uint64 `json:"seq,omitempty"`
	Presence  bool    `json:"presence,omitempty"`
	JoinLeave bool    `json:"join_leave,omitempty"`
}

// Subscribe is the subscribe frame as a client writes it.
type Subscribe struct {
	Type string `json:"type"`
	Subscription
}

// NewSubscribe returns the subscribe frame for s.
func NewSubscribe(s Subscription) Subscribe { return Subscribe{Type: TypeSubscribe, Subscription: s} }

// ChannelRequest is the unsubscribe and presence frames a client writes.
type ChannelRequest struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
}

// Subscribed answers a subscribe (and each of a hello's subscriptions);
// when Resumed, the messages after the asked position follow in order.
type Subscribed struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
	Seq     uint64 `json:"seq"`
	Resumed bool   `json:"resumed"`
}

// AppendSubscribed appends a subscribed frame to dst.
func AppendSubscribed(dst []byte, channel string, seq uint64, resumed bool) []byte {
	dst = append(dst, `{"type":"subscribed","channel":`...)
	dst = appendJSONString(dst, channel)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"resumed":`...)
	dst = strconv.AppendBool(dst, resumed)
	return append(dst, '}')
}

// Unsubscribed answers an unsubscribe.
type Unsubscribed struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
}

// EncodeUnsubscribed encodes an unsubscribed frame.
func EncodeUnsubscribed(channel string) []byte {
	b, _ := json.Marshal(Unsubscribed{Type: TypeUnsubscribed, Channel: channel})
	return b
}

// Member is one user of a channel's presence set: Conns counts its
// connections subscribed with presence:true.
type Member struct {
	User  string `json:"user"`
	Conns int    `json:"conns"`
}

// Presence answers a presence frame, and is the body of GET
// /v1/channels/{channel}/presence.
type Presence struct {
	Type    string   `json:"type"`
	Channel string   `json:"channel"`
	Count   int      `json:"count"`
	Members []Member `json:"members"`
}

// EncodePresence encodes p as a presence frame.
func EncodePresence(p Presence) []byte {
	p.Type = TypePresence
	if p.Members == nil {
		p.Members = []Member{}
	}
	b, _ := json.Marshal(p)
	return b
}

// JoinLeave tells subscribers that a user's first presence subscription
// on a channel started (join) or its last one ended (leave).
type JoinLeave struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
	User    string `json:"user"`
}

// AppendJoinLeave appends a join (join true) or leave frame to dst.
func AppendJoinLeave(dst []byte, join bool, channel, user string) []byte {
	if join {
		dst = append(dst, `{"type":"join","channel":`...)
	} else {
		dst = append(dst, `{"type":"leave","channel":`...)
	}
	dst = appendJSONString(dst, channel)
	dst = append(dst, `,"user":`...)
	dst = appendJSONString(dst, user)
	return append(dst, '}')
}

// ChannelError is the error frame of a subscription error: it names the
// channel, and the connection stays open.
type ChannelError struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Channel string `json:"channel"`
	Message string `json:"message"`
}

// EncodeChannelError encodes the error frame for err about channel.
func EncodeChannelError(channel string, err error) []byte {
	b, _ := json.Marshal(ChannelError{Type: TypeError, Code: ChannelSlugOf(err), Channel: channel, Message: err.Error()})
	return b
}

// channelMessagePrefix begins every channel message frame.
const channelMessagePrefix = `{"type":"message","channel":`

// AppendChannelMessage appends a channel message frame to dst; like
// AppendMessage it is encoded once per message and shared by every
// subscriber on a node.
func AppendChannelMessage(dst []byte, channel string, seq uint64, id string, ts int64, data json.RawMessage) []byte {
	if dst == nil {
		dst = make([]byte, 0, len(channelMessagePrefix)+len(`,"seq":,"id":"","ts":,"data":}`)+40+len(channel)+len(id)+len(data))
	}
	dst = append(dst, channelMessagePrefix...)
	dst = appendJSONString(dst, channel)
	dst = append(dst, `,"seq":`...)
	return appendMessageRest(dst, seq, id, ts, data)
}

// History answers GET /v1/channels/{channel}/history: the channel's
// highest seq and the messages asked for, oldest first.
type History struct {
	Channel  string           `json:"channel"`
	Seq      uint64           `json:"seq"`
	Messages []HistoryMessage `json:"messages"`
}

// HistoryMessage is one message of a History.
type HistoryMessage struct {
	Seq  uint64          `json:"seq"`
	ID   string          `json:"id"`
	TS   int64           `json:"ts"`
	Data json.RawMessage `json:"data"`
}

// ChannelInfo answers GET /v1/channels/{channel}.
type ChannelInfo struct {
	Channel     string   `json:"channel"`
	Owner       string   `json:"owner"`
	Backup      string   `json:"backup"`
	Epoch       uint64   `json:"epoch"`
	Seq         uint64   `json:"seq"`
	Subscribers int      `json:"subscribers"`
	Nodes       []string `json:"nodes"`
}
