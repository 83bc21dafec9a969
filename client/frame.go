package client

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// messagePrefix is how every message frame a Switchboard node writes
// begins (transport.AppendMessageFrame).
var messagePrefix = []byte(`{"type":"message","seq":`)

// decodeMessage is the fast path for message frames, the bulk of what a
// client reads: it takes a frame apart if it has exactly the layout a node
// writes, {"type":"message","seq":N,"id":"…","ts":N,"data":…}, with an id
// free of escapes, and checks that data is valid JSON. Anything else is
// ok=false and goes through encoding/json instead, so this path decides
// nothing the general one would decide differently; it only skips the
// reflection, which was 40 % of a load generator's CPU.
func decodeMessage(b []byte) (seq uint64, id string, ts int64, data []byte, ok bool) {
	rest, ok := bytes.CutPrefix(b, messagePrefix)
	if !ok {
		return 0, "", 0, nil, false
	}
	var num []byte
	if num, rest, ok = cutNumber(rest, `,"id":"`); !ok {
		return 0, "", 0, nil, false
	}
	seq, err := strconv.ParseUint(string(num), 10, 64)
	if err != nil {
		return 0, "", 0, nil, false
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 || bytes.IndexByte(rest[:end], '\\') >= 0 || !validIDBytes(rest[:end]) {
		return 0, "", 0, nil, false
	}
	id, rest = string(rest[:end]), rest[end+1:]
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"ts":`)); !ok {
		return 0, "", 0, nil, false
	}
	if num, rest, ok = cutNumber(rest, `,"data":`); !ok {
		return 0, "", 0, nil, false
	}
	if ts, err = strconv.ParseInt(string(num), 10, 64); err != nil {
		return 0, "", 0, nil, false
	}
	if len(rest) < 2 || rest[len(rest)-1] != '}' {
		return 0, "", 0, nil, false
	}
	data = rest[:len(rest)-1]
	if len(data) == 0 || isSpace(data[0]) || isSpace(data[len(data)-1]) || !json.Valid(data) {
		return 0, "", 0, nil, false
	}
	return seq, id, ts, data, true
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

// validIDBytes accepts what a JSON string may hold unescaped, as long as
// it is printable ASCII; other ids take the general path, which also
// handles their UTF-8.
func validIDBytes(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
