package protocol

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// Message is one stream message as sent to a client.
type Message struct {
	Type string `json:"type"`
	// Channel names the channel of a channel message; a user-stream
	// message has none.
	Channel string          `json:"channel,omitempty"`
	Seq     uint64          `json:"seq"`
	ID      string          `json:"id"`
	TS      int64           `json:"ts"`
	Data    json.RawMessage `json:"data"`
}

// AppendMessage appends the encoded message frame to dst. A stream encodes
// a message once and shares the bytes among all of a user's connections,
// so this is on the hot path and avoids reflection.
func AppendMessage(dst []byte, seq uint64, id string, ts int64, data json.RawMessage) []byte {
	if dst == nil {
		dst = make([]byte, 0, len(`{"type":"message","seq":,"id":"","ts":,"data":}`)+40+len(id)+len(data))
	}
	dst = append(dst, messagePrefix...)
	return appendMessageRest(dst, seq, id, ts, data)
}

// appendMessageRest appends a message frame from its seq's value on.
func appendMessageRest(dst []byte, seq uint64, id string, ts int64, data json.RawMessage) []byte {
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

// messagePrefix is how every message frame AppendMessage writes begins.
const messagePrefix = `{"type":"message","seq":`

// ParseMessage is the fast path for message frames, the bulk of what a
// client reads: it takes a frame apart if it has exactly the layout
// AppendMessage (or AppendChannelMessage, with a channel name free of
// escapes) writes, with an id free of escapes, and checks that data
// is valid JSON. Anything else is ok=false, for encoding/json to decode;
// so this path decides nothing the general one would decide differently,
// it only skips the reflection (40 % of a load generator's CPU). Data
// aliases b.
func ParseMessage(b []byte) (m Message, ok bool) {
	rest, ok := bytes.CutPrefix(b, []byte(messagePrefix))
	channel := ""
	if !ok {
		// A channel message: AppendChannelMessage's layout, with a name
		// free of escapes.
		if rest, ok = bytes.CutPrefix(b, []byte(channelMessagePrefix+`"`)); !ok {
			return m, false
		}
		end := bytes.IndexByte(rest, '"')
		if end <= 0 || bytes.IndexByte(rest[:end], '\\') >= 0 || !printableASCII(rest[:end]) {
			return m, false
		}
		channel = string(rest[:end])
		if rest, ok = bytes.CutPrefix(rest[end+1:], []byte(`,"seq":`)); !ok {
			return m, false
		}
	}
	var num []byte
	if num, rest, ok = cutNumber(rest, `,"id":"`); !ok {
		return m, false
	}
	seq, err := strconv.ParseUint(string(num), 10, 64)
	if err != nil {
		return m, false
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 || bytes.IndexByte(rest[:end], '\\') >= 0 || !printableASCII(rest[:end]) {
		return m, false
	}
	id := string(rest[:end])
	rest = rest[end+1:]
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"ts":`)); !ok {
		return m, false
	}
	if num, rest, ok = cutNumber(rest, `,"data":`); !ok {
		return m, false
	}
	ts, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil {
		return m, false
	}
	if len(rest) < 2 || rest[len(rest)-1] != '}' {
		return m, false
	}
	data := rest[:len(rest)-1]
	if len(data) == 0 || isSpace(data[0]) || isSpace(data[len(data)-1]) || !json.Valid(data) {
		return m, false
	}
	return Message{Type: TypeMessage, Channel: channel, Seq: seq, ID: id, TS: ts, Data: data}, true
}

// cutNumber splits b at sep, which must follow a run of digits (and an
// optional leading minus).
func cutNumber(b []byte, sep string) (num, rest []byte, ok bool) {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	start := i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == start || b[start] == '0' && i-start > 1 { // JSON has no leading zeros
		return nil, nil, false
	}
	rest, ok = bytes.CutPrefix(b[i:], []byte(sep))
	return b[:i], rest, ok
}

// printableASCII accepts what a JSON string may hold unescaped, as long as
// it is printable ASCII; other ids take the general path, which also
// handles their UTF-8.
func printableASCII(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

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
