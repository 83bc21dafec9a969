package gateway

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/switchboard/switchboard/protocol"
)

// wsClientFrame builds a masked client frame as a browser would send it.
func wsClientFrame(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	n := len(payload)
	switch {
	case n <= 125:
		out = append(out, 0x80|byte(n))
	case n <= 0xFFFF:
		out = append(out, 0x80|126, byte(n>>8), byte(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	mask := []byte{0x37, 0xfa, 0x21, 0x3d}
	out = append(out, mask...)
	for i, c := range payload {
		out = append(out, c^mask[i%4])
	}
	return out
}

func wsCloseBody(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

// wsEventString renders what the reader made of its input, for comparison.
func wsEventString(ev wsEvent) string {
	switch ev.kind {
	case wsMessage:
		return fmt.Sprintf("msg(text=%v,%q)", ev.text, ev.payload)
	case wsPing:
		return fmt.Sprintf("ping(%q)", ev.payload)
	case wsPong:
		return fmt.Sprintf("pong(%q)", ev.payload)
	case wsClose:
		return fmt.Sprintf("close(%d,%q)", ev.code, ev.payload)
	}
	return fmt.Sprintf("kind %d", ev.kind)
}

// wsDecodeAll feeds input in pieces of at most step bytes (0: all at once),
// as reads would deliver it, and renders every event and violation. It
// also checks what the reader may hold between reads: an entry starting
// "bug:" reports a broken promise.
func wsDecodeAll(limit int, input []byte, step int) []string {
	r := wsReader{limit: limit}
	var out []string
	in := append([]byte(nil), input...)
	if step <= 0 {
		step = len(in) + 1
	}
	for len(in) > 0 {
		k := min(step, len(in))
		piece := append([]byte(nil), in[:k]...) // a read buffer that is reused after keep
		in = in[k:]
		r.feed(piece)
		for {
			ev, ok, err := r.next()
			if err != nil {
				var v *wsViolation
				if !errors.As(err, &v) {
					out = append(out, "bug: error "+err.Error())
					continue
				}
				code, slug := protocol.CloseOf(v), protocol.SlugOf(v)
				if !code.Failed() || !code.Sendable() || slug != code.Slug() {
					out = append(out, fmt.Sprintf("bug: violation %q closes with %d %q", v, code, slug))
				}
				out = append(out, fmt.Sprintf("violation(%d,%s)", code, slug))
				continue
			}
			if !ok {
				break
			}
			if len(ev.payload) > limit {
				out = append(out, fmt.Sprintf("bug: event of %d bytes, limit %d", len(ev.payload), limit))
			}
			out = append(out, wsEventString(ev))
		}
		r.keep()
		clear(piece) // the reader must not look at it again
		// Between reads it holds at most one incomplete frame, which is
		// never over the limit, and a message never over the limit.
		if bound := max(limit, wsMaxControlPayload) + wsMaxHeader; len(r.buf) > bound || len(r.msg) > limit {
			out = append(out, fmt.Sprintf("bug: holds %d bytes of frame and %d of message, limit %d", len(r.buf), len(r.msg), limit))
		}
	}
	return out
}

func TestWSReader(t *testing.T) {
	long := strings.Repeat("a", 300)
	huge := strings.Repeat("b", 70_000)
	join := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	tests := []struct {
		name  string
		limit int
		in    []byte
		want  []string
	}{
		{name: "text", in: wsClientFrame(true, wsOpText, []byte(`{"type":"ping"}`)),
			want: []string{`msg(text=true,"{\"type\":\"ping\"}")`}},
		{name: "empty text", in: wsClientFrame(true, wsOpText, nil), want: []string{`msg(text=true,"")`}},
		{name: "16-bit length", in: wsClientFrame(true, wsOpText, []byte(long)), want: []string{`msg(text=true,"` + long + `")`}},
		{name: "64-bit length", limit: 1 << 20, in: wsClientFrame(true, wsOpText, []byte(huge)), want: []string{`msg(text=true,"` + huge + `")`}},
		{name: "fragmented with a ping in between",
			in: join(wsClientFrame(false, wsOpText, []byte("he")), wsClientFrame(true, wsOpPing, []byte("p")),
				wsClientFrame(false, wsOpContinuation, []byte("ll")), wsClientFrame(true, wsOpContinuation, []byte("o"))),
			want: []string{`ping("p")`, `msg(text=true,"hello")`}},
		{name: "UTF-8 split across fragments",
			in:   join(wsClientFrame(false, wsOpText, []byte("\xc3")), wsClientFrame(true, wsOpContinuation, []byte("\xa9"))),
			want: []string{`msg(text=true,"é")`}},
		{name: "pong and close", in: join(wsClientFrame(true, wsOpPong, []byte("x")), wsClientFrame(true, wsOpClose, wsCloseBody(1000, "bye"))),
			want: []string{`pong("x")`, `close(1000,"bye")`}},
		{name: "close without code", in: wsClientFrame(true, wsOpClose, nil), want: []string{`close(1005,"")`}},
		{name: "two messages", in: join(wsClientFrame(true, wsOpText, []byte("a")), wsClientFrame(true, wsOpText, []byte("b"))),
			want: []string{`msg(text=true,"a")`, `msg(text=true,"b")`}},

		{name: "reserved bits", in: func() []byte { f := wsClientFrame(true, wsOpText, []byte("a")); f[0] |= 0x40; return f }(),
			want: []string{"violation(1002,protocol_violation)"}},
		{name: "unmasked", in: []byte{0x81, 0x01, 'a'}, want: []string{"violation(1002,protocol_violation)"}},
		{name: "unknown opcode", in: wsClientFrame(true, 0x3, []byte("a")), want: []string{"violation(1002,protocol_violation)"}},
		{name: "unknown control opcode", in: wsClientFrame(true, 0xB, nil), want: []string{"violation(1002,protocol_violation)"}},
		{name: "fragmented control", in: wsClientFrame(false, wsOpPing, nil), want: []string{"violation(1002,protocol_violation)"}},
		{name: "control too long", in: wsClientFrame(true, wsOpPing, []byte(long)), want: []string{"violation(1002,protocol_violation)"}},
		{name: "continuation without a start", in: wsClientFrame(true, wsOpContinuation, []byte("a")), want: []string{"violation(1002,protocol_violation)"}},
		{name: "new message inside a fragmented one",
			in:   join(wsClientFrame(false, wsOpText, []byte("a")), wsClientFrame(true, wsOpText, []byte("b"))),
			want: []string{"violation(1002,protocol_violation)"}},
		{name: "framing error drops the rest", in: join([]byte{0x81, 0x01, 'a'}, wsClientFrame(true, wsOpClose, nil)),
			want: []string{"violation(1002,protocol_violation)"}},
		{name: "one-byte close", in: wsClientFrame(true, wsOpClose, []byte{3}), want: []string{"violation(1002,protocol_violation)"}},
		{name: "reserved close code", in: wsClientFrame(true, wsOpClose, wsCloseBody(1005, "")), want: []string{"violation(1002,protocol_violation)"}},
		{name: "close reason not UTF-8", in: wsClientFrame(true, wsOpClose, wsCloseBody(1000, "\xff")), want: []string{"violation(1002,protocol_violation)"}},
		{name: "text not UTF-8", in: wsClientFrame(true, wsOpText, []byte("\xff")), want: []string{"violation(1007,invalid_utf8)"}},

		// A refused frame of known length is skipped: the client's close
		// that answers ours is still read.
		{name: "binary refused, close still read",
			in:   join(wsClientFrame(true, wsOpBinary, []byte("bin")), wsClientFrame(true, wsOpClose, wsCloseBody(1000, ""))),
			want: []string{"violation(1003,unsupported_data)", `close(1000,"")`}},
		{name: "too large refused, close still read", limit: 100,
			in:   join(wsClientFrame(true, wsOpText, []byte(huge)), wsClientFrame(true, wsOpClose, wsCloseBody(1000, ""))),
			want: []string{"violation(1009,frame_too_large)", `close(1000,"")`}},
		{name: "fragments add up past the limit", limit: 4,
			in:   join(wsClientFrame(false, wsOpText, []byte("abc")), wsClientFrame(true, wsOpContinuation, []byte("de")), wsClientFrame(true, wsOpText, []byte("ok"))),
			want: []string{"violation(1009,frame_too_large)", `msg(text=true,"ok")`}},
		{name: "fragmented binary skipped whole, close still read",
			in: join(wsClientFrame(false, wsOpBinary, []byte("b1")), wsClientFrame(false, wsOpContinuation, []byte("b2")),
				wsClientFrame(true, wsOpPing, []byte("p")), wsClientFrame(true, wsOpContinuation, []byte("b3")),
				wsClientFrame(true, wsOpClose, wsCloseBody(1000, ""))),
			want: []string{"violation(1003,unsupported_data)", `ping("p")`, `close(1000,"")`}},
		{name: "continuations past the limit skipped", limit: 4,
			in: join(wsClientFrame(false, wsOpText, []byte("abc")), wsClientFrame(false, wsOpContinuation, []byte("de")),
				wsClientFrame(true, wsOpContinuation, []byte("fgh")), wsClientFrame(true, wsOpClose, wsCloseBody(1001, ""))),
			want: []string{"violation(1009,frame_too_large)", `close(1001,"")`}},
		{name: "at the limit", limit: 3, in: wsClientFrame(true, wsOpText, []byte("abc")), want: []string{`msg(text=true,"abc")`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit := tt.limit
			if limit == 0 {
				limit = 64 << 10
			}
			want := strings.Join(tt.want, "\n")
			// However the bytes are cut into reads, the events are the same.
			for _, step := range []int{0, 1, 2, 3, 7, 100, 4096} {
				if got := strings.Join(wsDecodeAll(limit, tt.in, step), "\n"); got != want {
					t.Fatalf("reads of %d bytes:\ngot  %s\nwant %s", step, got, want)
				}
			}
		})
	}
}

func TestWSReaderIdleHoldsNoMemory(t *testing.T) {
	r := wsReader{limit: 1024}
	frame := wsClientFrame(true, wsOpText, []byte("hello"))
	r.feed(append([]byte(nil), frame[:3]...))
	if _, ok, _ := r.next(); ok {
		t.Fatal("event from half a frame")
	}
	r.keep()
	if r.buf == nil {
		t.Fatal("half a frame was not kept")
	}
	r.feed(append([]byte(nil), frame[3:]...))
	if ev, ok, err := r.next(); !ok || err != nil || string(ev.payload) != "hello" {
		t.Fatalf("next = %v %v %v", wsEventString(ev), ok, err)
	}
	r.keep()
	if r.buf != nil || r.in != nil || r.msg != nil {
		t.Errorf("idle reader holds buf=%d in=%d msg=%d bytes", cap(r.buf), cap(r.in), cap(r.msg))
	}
}

func TestWSAppendFrame(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		f := wsAppendFrame(nil, wsOpText, bytes.Repeat([]byte{'x'}, n))
		var hdr int
		switch {
		case n <= 125:
			hdr = 2
		case n <= 65535:
			hdr = 4
		default:
			hdr = 10
		}
		if len(f) != hdr+n || f[0] != 0x81 || f[1]&0x80 != 0 {
			t.Errorf("n=%d: frame of %d bytes, header % x", n, len(f), f[:min(len(f), 10)])
		}
	}
	c := wsAppendClose(nil, 4010, strings.Repeat("é", 100))
	if len(c) > 2+wsMaxControlPayload || c[0] != 0x88 {
		t.Errorf("close frame of %d bytes, first byte %#x", len(c), c[0])
	}
	if code := binary.BigEndian.Uint16(c[2:]); code != 4010 {
		t.Errorf("close code %d", code)
	}
}

// FuzzWSReader feeds the reader arbitrary bytes, cut into reads of
// arbitrary size: it must never panic, never hold more than the limit,
// decode the same whatever the cuts, and fail every violation with a code
// of the WebSocket layer.
func FuzzWSReader(f *testing.F) {
	f.Add(wsClientFrame(true, wsOpText, []byte(`{"type":"hello"}`)), uint8(3))
	f.Add(append(wsClientFrame(false, wsOpText, []byte("a")), wsClientFrame(true, wsOpContinuation, []byte("b"))...), uint8(1))
	f.Add(wsClientFrame(true, wsOpClose, wsCloseBody(1000, "x")), uint8(0))
	f.Add([]byte{0x81, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, uint8(2))
	f.Add(append(wsClientFrame(false, wsOpText, []byte("\xe2\x82")), wsClientFrame(true, wsOpContinuation, []byte("\xac"))...), uint8(5))
	f.Add(append(wsClientFrame(false, wsOpBinary, []byte("b")), wsClientFrame(true, wsOpPing, []byte("p"))...), uint8(4))
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		const limit = 256
		whole := wsDecodeAll(limit, in, 0)
		if got := wsDecodeAll(limit, in, int(step)); strings.Join(got, "\n") != strings.Join(whole, "\n") {
			t.Fatalf("split reads change the result:\n%q\nvs\n%q", got, whole)
		}
		for _, e := range whole {
			if strings.HasPrefix(e, "bug:") {
				t.Fatal(e)
			}
		}
	})
}
