package session

import (
	"errors"
	"fmt"
	"strings"
)

// StreamKind says whose a stream is.
type StreamKind uint8

// Stream kinds. A user's stream and a channel's are the same kind of log,
// owned, replicated, taken over and resumed by the same code; only the
// delivery differs.
const (
	UserStream StreamKind = iota
	ChannelStream
)

func (k StreamKind) String() string {
	switch k {
	case UserStream:
		return "user"
	case ChannelStream:
		return "channel"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Key names a stream: its kind and the user id or channel name.
type Key struct {
	Kind StreamKind
	Name string
}

// UserKey is the key of user's stream.
func UserKey(user string) Key { return Key{Kind: UserStream, Name: user} }

// channelPrefix starts the registry name of a channel's stream. User ids
// never contain control characters, so no user's name can collide with it.
const channelPrefix = "\x01c:"

// String is the key as the registry and the peer links carry it: a user's
// stream is named by the user id itself (as before streams had kinds), a
// channel's by a prefix no user id can hold.
func (k Key) String() string {
	if k.Kind == ChannelStream {
		return channelPrefix + k.Name
	}
	return k.Name
}

// ErrBadKey is ParseKey's error for a name that is no stream's.
var ErrBadKey = errors.New("session: bad stream key")

// ParseKey reads a key written by Key.String.
func ParseKey(s string) (Key, error) {
	if name, ok := strings.CutPrefix(s, channelPrefix); ok {
		return Key{Kind: ChannelStream, Name: name}, nil
	}
	if s != "" && s[0] < 0x20 {
		return Key{}, fmt.Errorf("%w: %q", ErrBadKey, s)
	}
	return UserKey(s), nil
}

// ChannelKey is the key of channel's stream.
func ChannelKey(channel string) Key { return Key{Kind: ChannelStream, Name: channel} }
