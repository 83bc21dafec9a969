package gateway

import (
	"encoding/binary"
	"errors"
	"unicode/utf8"

	"github.com/switchboard/switchboard/protocol"
)

// The gateway speaks RFC 6455 framing itself once gorilla/websocket has
// done the upgrade handshake: reading frames from whatever bytes a socket
// has ready (no goroutine blocked per idle connection) and writing many
// frames in one syscall need a codec that works on byte slices, not on a
// blocking io.Reader.

// WebSocket opcodes (RFC 6455 §5.2).
const (
	wsOpContinuation = 0x0
	wsOpText         = 0x1
	wsOpBinary       = 0x2
	wsOpClose        = 0x8
	wsOpPing         = 0x9
	wsOpPong         = 0xA

	// wsOpDiscard marks, as the opcode of the message in progress, a
	// fragmented message refused at an earlier fragment: its remaining
	// fragments are skipped.
	wsOpDiscard = 0xFF
)

// Close codes the codec itself reports, besides those of frame.go.
const (
	wsCloseNoStatus     = 1005 // a close frame without a code (never sent)
	wsMaxControlPayload = 125
	wsMaxHeader         = 14 // 2 + 8 bytes of length + 4 bytes of mask
)

// wsEventKind says what a complete client frame or message was.
type wsEventKind uint8

const (
	wsMessage wsEventKind = iota + 1 // a complete text or binary message
	wsPing
	wsPong
	wsClose
)

// wsEvent is one thing the client said. payload is valid until the next
// call to the reader's next or keep.
type wsEvent struct {
	kind    wsEventKind
	text    bool   // wsMessage: text (true) or binary
	payload []byte // message data, ping/pong application data, close reason
	code    int    // wsClose: the client's close code (wsCloseNoStatus if none)
}

// wsViolation is a client frame that breaks RFC 6455 or the gateway's
// limits; err is the contract error the connection fails with: 1002 for
// a framing violation, 1003 for a binary message, 1007 for invalid UTF-8,
// 1009 for a message over the limit (protocol.CloseCode.Failed).
type wsViolation struct{ err error }

func (v *wsViolation) Error() string { return v.err.Error() }
func (v *wsViolation) Unwrap() error { return v.err }

func wsViolationOf(sentinel error, format string, args ...any) *wsViolation {
	return &wsViolation{protocol.Errorf(sentinel, format, args...)}
}

func wsProtocolError(format string, args ...any) *wsViolation {
	return wsViolationOf(protocol.ErrProtocolViolation, format, args...)
}

// wsReader decodes the frames a client sends into events. Input arrives in
// arbitrary pieces (whatever one read returned); feed lends the reader a
// piece, next decodes complete frames from it, and keep copies what is left
// of an incomplete frame before the piece is reused. Between messages an
// idle reader holds no memory.
//
// Frames are unmasked in place, so fed bytes must be the caller's to change.
type wsReader struct {
	limit int // largest message payload accepted; beyond it: 1009

	in    []byte // bytes being decoded: lent by feed, or buf
	off   int    // decoded up to here
	owned bool   // in is buf, not a lent slice
	buf   []byte // owned copy of an incomplete frame kept between feeds
	msg   []byte // payload of a fragmented message so far
	msgOp byte   // opcode of the fragmented message in progress; 0 if none
	valid int    // msg[:valid] is known to be complete, valid UTF-8
	// frames counts the frames decoded since takeFrames last asked, close
	// frames aside: what a connection's frame rate limit charges.
	frames int

	// After a violation the connection is closing, but the client's
	// close frame should still be seen: a refused frame whose length is
	// known is skipped (skip bytes still to drop), after a framing error
	// nothing can be trusted and all input is dropped (broken).
	skip   uint64
	broken bool
}

// feed adds p to the input. p is borrowed until keep is called.
func (r *wsReader) feed(p []byte) {
	if r.off >= len(r.in) {
		r.in, r.off, r.owned, r.buf = p, 0, false, nil
		return
	}
	// append moves overlapping bytes correctly when rest lies in buf.
	r.buf = append(r.buf[:0], r.in[r.off:]...)
	r.buf = append(r.buf, p...)
	r.in, r.off, r.owned = r.buf, 0, true
}

// keep copies the undecoded rest of the input into memory the reader owns,
// so the slice lent to feed may be reused, and frees what is not needed.
func (r *wsReader) keep() {
	rest := r.in[r.off:]
	switch {
	case len(rest) == 0:
		r.buf = nil
	case r.owned:
		r.buf = r.buf[:copy(r.buf, rest)]
	default:
		r.buf = append([]byte(nil), rest...)
	}
	r.in, r.off, r.owned = r.buf, 0, r.buf != nil
}

// next decodes the next complete event. ok is false when the input ends
// inside a frame (feed more); err is a *wsViolation, after which the
// connection must be closed.
func (r *wsReader) next() (ev wsEvent, ok bool, err error) {
	for {
		if r.broken {
			r.off = len(r.in)
			return ev, false, nil
		}
		if r.skip > 0 {
			k := min(r.skip, uint64(len(r.in)-r.off))
			r.off += int(k)
			if r.skip -= k; r.skip > 0 {
				return ev, false, nil
			}
		}
		p := r.in[r.off:]
		if len(p) < 2 {
			return ev, false, nil
		}
		b0, b1 := p[0], p[1]
		fin, op := b0&0x80 != 0, b0&0x0F
		if b0&0x70 != 0 {
			return ev, false, r.fail(wsProtocolError("reserved bits set without an extension"))
		}
		if b1&0x80 == 0 {
			return ev, false, r.fail(wsProtocolError("client frame is not masked"))
		}
		hdr, n := 2, uint64(b1&0x7F)
		switch n {
		case 126:
			if len(p) < 4 {
				return ev, false, nil
			}
			n, hdr = uint64(binary.BigEndian.Uint16(p[2:])), 4
		case 127:
			if len(p) < 10 {
				return ev, false, nil
			}
			n, hdr = binary.BigEndian.Uint64(p[2:]), 10
			if n>>63 != 0 {
				return ev, false, r.fail(wsProtocolError("frame length has its most significant bit set"))
			}
		}
		control := op&0x8 != 0
		switch {
		case control && (op != wsOpClose && op != wsOpPing && op != wsOpPong):
			return ev, false, r.fail(wsProtocolError("unknown control opcode %#x", op))
		case control && !fin:
			return ev, false, r.fail(wsProtocolError("fragmented control frame"))
		case control && n > wsMaxControlPayload:
			return ev, false, r.fail(wsProtocolError("control frame payload of %d bytes", n))
		case !control && op != wsOpContinuation && op != wsOpText && op != wsOpBinary:
			return ev, false, r.fail(wsProtocolError("unknown data opcode %#x", op))
		case op == wsOpContinuation && r.msgOp == wsOpDiscard:
			// The rest of a message refused at its first fragment.
			r.skip = uint64(hdr+4) + n
			if fin {
				r.msgOp = 0
			}
			continue
		case op == wsOpContinuation && r.msgOp == 0:
			return ev, false, r.fail(wsProtocolError("continuation frame outside a fragmented message"))
		case (op == wsOpText || op == wsOpBinary) && r.msgOp != 0:
			return ev, false, r.fail(wsProtocolError("new message inside a fragmented message"))
		case op == wsOpBinary:
			return ev, false, r.refuse(uint64(hdr+4)+n, fin, wsViolationOf(protocol.ErrUnsupportedData, "binary messages are not supported"))
		case !control && n+uint64(len(r.msg)) > uint64(r.limit):
			return ev, false, r.refuse(uint64(hdr+4)+n, fin, wsViolationOf(protocol.ErrTooLarge, "frame exceeds %d bytes", r.limit))
		}
		if len(p) < hdr+4 || uint64(len(p)-hdr-4) < n {
			return ev, false, nil // the frame is not all here yet
		}
		mask := p[hdr : hdr+4]
		payload := p[hdr+4 : hdr+4+int(n)]
		wsUnmask(payload, mask)
		r.off += hdr + 4 + int(n)
		if op != wsOpClose {
			r.frames++
		}

		switch op {
		case wsOpPing:
			return wsEvent{kind: wsPing, payload: payload}, true, nil
		case wsOpPong:
			return wsEvent{kind: wsPong, payload: payload}, true, nil
		case wsOpClose:
			ev, ok, err := wsDecodeClose(payload)
			if err != nil {
				var v *wsViolation
				errors.As(err, &v)
				return ev, false, r.fail(v)
			}
			return ev, ok, nil
		}
		if op != wsOpContinuation {
			if fin {
				return r.message(op, payload)
			}
			r.msgOp, r.valid = op, 0
			r.msg = append(r.msg[:0], payload...)
		} else {
			r.msg = append(r.msg, payload...)
		}
		if r.msgOp == wsOpText {
			// Fail fast: as soon as the text so far cannot be the start of
			// valid UTF-8, not only once the message is whole.
			k, ok := wsValidUTF8Prefix(r.msg[r.valid:], fin)
			if !ok {
				r.msg, r.msgOp, r.valid = nil, 0, 0
				if !fin {
					r.msgOp = wsOpDiscard
				}
				return ev, false, wsViolationOf(protocol.ErrInvalidUTF8, "text message is not valid UTF-8")
			}
			r.valid += k
		}
		if !fin {
			continue
		}
		op, payload = r.msgOp, r.msg
		r.msgOp, r.msg = 0, nil
		return r.message(op, payload)
	}
}

// takeFrames returns how many frames were decoded since it was last
// called.
func (r *wsReader) takeFrames() int {
	n := r.frames
	r.frames = 0
	return n
}

// wsValidUTF8Prefix checks text that continues a valid prefix. It returns
// how many bytes of it are complete, valid UTF-8 and whether the rest can
// still become valid: an incomplete last character is fine unless the
// text is whole (fin).
func wsValidUTF8Prefix(p []byte, fin bool) (int, bool) {
	tail := len(p)
	if !fin {
		// Find the start of the last character: at most 3 bytes back.
		for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax; i-- {
			if !utf8.RuneStart(p[i]) {
				continue
			}
			if !utf8.FullRune(p[i:]) {
				tail = i // a character cut short, valid so far
			}
			break
		}
	}
	return tail, utf8.Valid(p[:tail])
}

// refuse drops the frame of size bytes at the read position, with the
// message it belongs to (the fragments so far, and those still to come
// unless fin), and returns v.
func (r *wsReader) refuse(size uint64, fin bool, v *wsViolation) *wsViolation {
	r.skip = size
	r.msg, r.msgOp, r.valid = nil, 0, 0
	if !fin {
		r.msgOp = wsOpDiscard
	}
	return v
}

// fail reports a framing error: everything after it is dropped.
func (r *wsReader) fail(v *wsViolation) *wsViolation {
	r.broken = true
	r.msg, r.msgOp, r.valid = nil, 0, 0
	return v
}

// message completes a message; fragmented text was checked fragment by
// fragment already.
func (r *wsReader) message(op byte, payload []byte) (wsEvent, bool, error) {
	text := op == wsOpText
	if text && r.valid < len(payload) && !utf8.Valid(payload[r.valid:]) {
		r.valid = 0
		return wsEvent{}, false, wsViolationOf(protocol.ErrInvalidUTF8, "text message is not valid UTF-8")
	}
	r.valid = 0
	return wsEvent{kind: wsMessage, text: text, payload: payload}, true, nil
}

// wsDecodeClose reads a close frame's code and reason (RFC 6455 §5.5.1).
func wsDecodeClose(p []byte) (wsEvent, bool, error) {
	switch {
	case len(p) == 0:
		return wsEvent{kind: wsClose, code: wsCloseNoStatus}, true, nil
	case len(p) == 1:
		return wsEvent{}, false, wsProtocolError("close frame with a one-byte payload")
	}
	code := int(binary.BigEndian.Uint16(p))
	if !protocol.CloseCode(code).Sendable() || code == wsCloseNoStatus || code == 1006 {
		return wsEvent{}, false, wsProtocolError("invalid close code %d", code)
	}
	if !utf8.Valid(p[2:]) {
		return wsEvent{}, false, wsProtocolError("close reason is not valid UTF-8")
	}
	return wsEvent{kind: wsClose, code: code, payload: p[2:]}, true, nil
}

// wsUnmask XORs payload with the 4-byte mask key, in place.
func wsUnmask(payload, mask []byte) {
	if len(payload) >= 8 {
		k := uint64(binary.LittleEndian.Uint32(mask))
		k |= k << 32
		for len(payload) >= 8 {
			v := binary.LittleEndian.Uint64(payload)
			binary.LittleEndian.PutUint64(payload, v^k)
			payload = payload[8:]
		}
	}
	for i := range payload {
		payload[i] ^= mask[i&3]
	}
}

// wsAppendFrame appends one unmasked server frame (FIN set) with payload.
func wsAppendFrame(dst []byte, op byte, payload []byte) []byte {
	dst = wsAppendHeader(dst, op, len(payload))
	return append(dst, payload...)
}

// wsAppendHeader appends the header of an unmasked server frame (FIN set)
// whose payload of n bytes follows.
func wsAppendHeader(dst []byte, op byte, n int) []byte {
	b0 := 0x80 | op
	switch {
	case n <= 125:
		return append(dst, b0, byte(n))
	case n <= 0xFFFF:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, b0, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
}

// wsAppendClose appends a close frame with code and reason (cut to fit a
// control frame, on a UTF-8 boundary).
func wsAppendClose(dst []byte, code int, reason string) []byte {
	if len(reason) > wsMaxControlPayload-2 {
		reason = reason[:wsMaxControlPayload-2]
		for len(reason) > 0 && !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	dst = wsAppendHeader(dst, wsOpClose, 2+len(reason))
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	return append(dst, reason...)
}
