package gateway

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/testenv"
	"github.com/switchboard/switchboard/protocol"
)

// rawWS is a WebSocket client on a bare TCP socket, so that a test can
// send any bytes at all and see exactly what the server sends back,
// down to when it closes TCP.
type rawWS struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

// dialRaw opens a TCP connection from local (nil: any) and performs the
// upgrade handshake by hand.
func (h *gwHarness) dialRaw(local net.Addr, header http.Header) *rawWS {
	h.t.Helper()
	nc, br, status, err := h.rawUpgrade(local, header)
	if err != nil {
		h.t.Fatalf("upgrade: %v", err)
	}
	h.t.Cleanup(func() { nc.Close() })
	if status != http.StatusSwitchingProtocols {
		h.t.Fatalf("upgrade answered %d", status)
	}
	return &rawWS{t: h.t, nc: nc, br: br}
}

// addr is the gateway's host:port.
func (h *gwHarness) addr() string {
	return strings.TrimPrefix(strings.TrimPrefix(strings.TrimSuffix(h.url, "/v1/connect"), "ws://"), "wss://")
}

// rawUpgrade is the package's rawUpgrade to h's gateway, over TLS if h
// serves it.
func (h *gwHarness) rawUpgrade(local net.Addr, header http.Header) (net.Conn, *bufio.Reader, int, error) {
	return rawUpgrade(h.addr(), local, header, h.clientTLS)
}

// rawUpgrade asks for a WebSocket upgrade on a new TCP connection from
// local (nil: any) to addr, and returns the connection and the answer's
// status; the caller closes nc.
func rawUpgrade(addr string, local net.Addr, header http.Header, tlsCfg *tls.Config) (nc net.Conn, br *bufio.Reader, status int, err error) {
	d := net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}
	if tlsCfg != nil {
		nc, err = tls.DialWithDialer(&d, "tcp", addr, tlsCfg)
	} else {
		nc, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return nil, nil, 0, err
	}
	var req bytes.Buffer
	fmt.Fprintf(&req, "GET /v1/connect HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n", addr)
	for k, vs := range header {
		for _, v := range vs {
			fmt.Fprintf(&req, "%s: %s\r\n", k, v)
		}
	}
	req.WriteString("\r\n")
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err = nc.Write(req.Bytes()); err != nil {
		nc.Close()
		return nil, nil, 0, err
	}
	br = bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, nil, 0, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	return nc, br, resp.StatusCode, nil
}

func (c *rawWS) write(b []byte) {
	c.t.Helper()
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// rawFrame is a frame the server sent.
type rawFrame struct {
	op      byte
	payload []byte
}

func (f rawFrame) String() string {
	switch f.op {
	case wsOpText:
		return "text " + string(f.payload)
	case wsOpPong:
		return fmt.Sprintf("pong %q", f.payload)
	case wsOpPing:
		return fmt.Sprintf("ping %q", f.payload)
	case wsOpClose:
		if len(f.payload) >= 2 {
			return fmt.Sprintf("close %d %q", binary.BigEndian.Uint16(f.payload), f.payload[2:])
		}
		return fmt.Sprintf("close %q", f.payload)
	}
	return fmt.Sprintf("op %d %q", f.op, f.payload)
}

// read reads one server frame, checking that it is well formed for a
// server frame: final, unmasked, no reserved bits.
func (c *rawWS) read(deadline time.Time) (rawFrame, error) {
	_ = c.nc.SetReadDeadline(deadline)
	var hdr [2]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return rawFrame{}, err
	}
	if hdr[0]&0xF0 != 0x80 || hdr[1]&0x80 != 0 {
		c.t.Fatalf("server frame header % x: want FIN, no reserved bits, unmasked", hdr)
	}
	n := uint64(hdr[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return rawFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return rawFrame{}, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 1<<20 {
		c.t.Fatalf("server frame of %d bytes", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return rawFrame{}, err
	}
	return rawFrame{op: hdr[0] & 0x0F, payload: p}, nil
}

// hello says hello as user and reads the welcome.
func (c *rawWS) hello(user string) {
	c.t.Helper()
	c.write(wsClientFrame(true, wsOpText, []byte(`{"type":"hello","token":"good-`+user+`"}`)))
	f, err := c.read(time.Now().Add(5 * time.Second))
	if err != nil || f.op != wsOpText || !bytes.Contains(f.payload, []byte(`"welcome"`)) {
		c.t.Fatalf("got %v, %v; want the welcome", f, err)
	}
}

// wsFrame builds a client frame with every detail under control: rsv are
// the reserved bits (0x70 mask), lenBytes the length encoding (0: the
// shortest, 2: 16 bits, 8: 64 bits, even for a short payload).
func wsFrame(fin bool, rsv, op byte, masked bool, lenBytes int, payload []byte) []byte {
	b0 := rsv&0x70 | op&0x0F
	if fin {
		b0 |= 0x80
	}
	var mbit byte
	if masked {
		mbit = 0x80
	}
	out := []byte{b0}
	n := len(payload)
	switch {
	case lenBytes == 8 || lenBytes == 0 && n > 0xFFFF:
		out = append(out, mbit|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	case lenBytes == 2 || lenBytes == 0 && n > 125:
		out = append(out, mbit|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, mbit|byte(n))
	}
	if !masked {
		return append(out, payload...)
	}
	mask := []byte{0xa1, 0x0b, 0x5c, 0x7e}
	out = append(out, mask...)
	for i, c := range payload {
		out = append(out, c^mask[i%4])
	}
	return out
}

// TestGatewayConformance checks the gateway's RFC 6455 framing on a real
// connection, frame by frame: what is answered, with which close, that
// no JSON frame explains a close the WebSocket layer fails with, and that
// the server closes TCP right after its close frame.
func TestGatewayConformance(t *testing.T) {
	testenv.NoLeaks(t)
	const limit = 64 << 10
	join := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	text := func(s string) []byte { return wsClientFrame(true, wsOpText, []byte(s)) }
	frag := func(fin bool, op byte, s string) []byte { return wsClientFrame(fin, op, []byte(s)) }
	closeBody := func(code int, reason string) []byte { return wsClientFrame(true, wsOpClose, wsCloseBody(code, reason)) }
	pingJSON := func(id string) []byte { return text(`{"type":"ping","id":"` + id + `"}`) }
	padPing := func(size int) []byte { // a valid ping message of exactly size bytes
		head := `{"type":"ping","id":"x","pad":"`
		return []byte(head + strings.Repeat("p", size-len(head)-2) + `"}`)
	}
	pong := func(id string) string { return `text {"type":"pong","id":"` + id + `"}` }
	wsPong := func(p string) string { return fmt.Sprintf("pong %q", p) }
	pings := func(n int) (in []byte, want []string) {
		for i := range n {
			p := fmt.Sprintf("p%d", i)
			in = append(in, wsClientFrame(true, wsOpPing, []byte(p))...)
			want = append(want, wsPong(p))
		}
		return in, want
	}
	tenPings, tenPongs := pings(10)
	manyPings, manyPongs := pings(maxQueuedPongs) // answered one each, as long as the client reads

	type tc struct {
		name   string
		cfg    Config
		first  bool     // sent instead of the hello, not after the welcome
		send   []byte   // raw client bytes
		want   []string // the frames the server answers with, in order, before any close
		close  protocol.CloseCode
		slug   string // with close: the error frame's code and close reason; "" for an echo of the client's close
		noEcho bool   // close is ours, not an echo of the client's
		// ignorePongs: how many pings (WebSocket or JSON) are answered
		// before the close depends on timing.
		ignorePongs bool
	}
	fail := func(name string, send []byte, code protocol.CloseCode) tc {
		return tc{name: name, send: send, close: code, slug: code.Slug(), noEcho: true}
	}
	var tests []tc

	// Opcodes 0-15.
	for op := byte(0); op < 16; op++ {
		name := fmt.Sprintf("opcode %#x", op)
		switch op {
		case wsOpContinuation:
			tests = append(tests, fail(name+" (continuation without a start)", frag(true, op, "a"), protocol.CloseProtocolViolation))
		case wsOpText:
			tests = append(tests, tc{name: name, send: pingJSON("t"), want: []string{pong("t")}})
		case wsOpBinary:
			tests = append(tests, fail(name+" (binary)", frag(true, op, `{"type":"ping"}`), protocol.CloseUnsupportedData))
		case wsOpClose:
			tests = append(tests, tc{name: name, send: closeBody(1000, "bye"), close: 1000})
		case wsOpPing:
			tests = append(tests, tc{name: name, send: frag(true, op, "hi"), want: []string{wsPong("hi")}})
		case wsOpPong:
			tests = append(tests, tc{name: name + " (unsolicited pong is ignored)", send: join(frag(true, op, "x"), pingJSON("after")), want: []string{pong("after")}})
		default:
			tests = append(tests, fail(name+" (reserved)", frag(true, op, ""), protocol.CloseProtocolViolation))
		}
	}
	// Reserved bits, masking, lengths.
	for _, rsv := range []byte{0x40, 0x20, 0x10} {
		tests = append(tests,
			fail(fmt.Sprintf("reserved bit %#x on text", rsv), wsFrame(true, rsv, wsOpText, true, 0, []byte(`{"type":"ping"}`)), protocol.CloseProtocolViolation),
			fail(fmt.Sprintf("reserved bit %#x on ping", rsv), wsFrame(true, rsv, wsOpPing, true, 0, nil), protocol.CloseProtocolViolation))
	}
	tests = append(tests,
		fail("unmasked text", wsFrame(true, 0, wsOpText, false, 0, []byte(`{"type":"ping"}`)), protocol.CloseProtocolViolation),
		fail("unmasked ping", wsFrame(true, 0, wsOpPing, false, 0, []byte("x")), protocol.CloseProtocolViolation),
		fail("unmasked close", wsFrame(true, 0, wsOpClose, false, 0, wsCloseBody(1000, "")), protocol.CloseProtocolViolation),
		fail("unmasked as the first frame", wsFrame(true, 0, wsOpText, false, 0, []byte(`{"type":"hello"}`)), protocol.CloseProtocolViolation),
		tc{name: "7-bit length, 125 bytes", send: wsFrame(true, 0, wsOpText, true, 0, padPing(125)), want: []string{pong("x")}},
		tc{name: "16-bit length, 126 bytes", send: wsFrame(true, 0, wsOpText, true, 0, padPing(126)), want: []string{pong("x")}},
		tc{name: "16-bit length, 65535 bytes", send: wsFrame(true, 0, wsOpText, true, 0, padPing(65535)), want: []string{pong("x")}},
		tc{name: "64-bit length, at the limit", send: wsFrame(true, 0, wsOpText, true, 0, padPing(limit)), want: []string{pong("x")}},
		tc{name: "non-minimal 16-bit length", send: wsFrame(true, 0, wsOpText, true, 2, []byte(`{"type":"ping","id":"n"}`)), want: []string{pong("n")}},
		tc{name: "non-minimal 64-bit length", send: wsFrame(true, 0, wsOpText, true, 8, []byte(`{"type":"ping","id":"n"}`)), want: []string{pong("n")}},
		tc{name: "non-minimal 16-bit length on a ping", send: wsFrame(true, 0, wsOpPing, true, 2, []byte("n")), want: []string{wsPong("n")}},
		fail("64-bit length with its most significant bit set",
			append([]byte{0x81, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 5}, 1, 2, 3, 4, 'a', 'b', 'c', 'd', 'e'), protocol.CloseProtocolViolation),
		fail("one byte over the limit", wsFrame(true, 0, wsOpText, true, 0, padPing(limit+1)), protocol.CloseTooLarge),
		fail("far over the limit, header only", []byte{0x81, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0}, protocol.CloseTooLarge),
		fail("fragments add up past the limit", join(frag(false, wsOpText, string(padPing(limit)[:limit-10])), frag(true, wsOpContinuation, strings.Repeat("z", 11))), protocol.CloseTooLarge),
	)
	// Fragmentation.
	tests = append(tests,
		tc{name: "fragmented text", send: join(frag(false, wsOpText, `{"type":"pi`), frag(false, wsOpContinuation, `ng","id":`), frag(true, wsOpContinuation, `"f"}`)),
			want: []string{pong("f")}},
		tc{name: "control frames between fragments",
			send: join(frag(false, wsOpText, `{"type":"pi`), frag(true, wsOpPing, "c1"), frag(false, wsOpContinuation, `ng","id":`),
				frag(true, wsOpPong, "c2"), frag(true, wsOpPing, "c3"), frag(true, wsOpContinuation, `"f"}`)),
			want: []string{wsPong("c1"), wsPong("c3"), pong("f")}},
		tc{name: "empty fragments", send: join(frag(false, wsOpText, ""), frag(false, wsOpContinuation, `{"type":"ping","id":"e"}`), frag(true, wsOpContinuation, "")),
			want: []string{pong("e")}},
		func() tc {
			c := fail("continuation after a complete message", join(pingJSON("a"), frag(true, wsOpContinuation, "x")), protocol.CloseProtocolViolation)
			c.ignorePongs = true // the ping's pong may beat the failure, which drops what is queued
			return c
		}(),
		fail("text inside a fragmented message", join(frag(false, wsOpText, `{"type"`), frag(true, wsOpText, `{}`)), protocol.CloseProtocolViolation),
		fail("binary inside a fragmented message", join(frag(false, wsOpText, `{"type"`), frag(true, wsOpBinary, `{}`)), protocol.CloseProtocolViolation),
		fail("fragmented binary", join(frag(false, wsOpBinary, "a"), frag(true, wsOpContinuation, "b")), protocol.CloseUnsupportedData),
		fail("fragmented ping", frag(false, wsOpPing, "a"), protocol.CloseProtocolViolation),
		fail("fragmented close", wsClientFrame(false, wsOpClose, wsCloseBody(1000, "")), protocol.CloseProtocolViolation),
		fail("ping of 126 bytes", frag(true, wsOpPing, strings.Repeat("p", 126)), protocol.CloseProtocolViolation),
		fail("close of 126 bytes", closeBody(1000, strings.Repeat("r", 124)), protocol.CloseProtocolViolation),
		tc{name: "ping of 125 bytes", send: frag(true, wsOpPing, strings.Repeat("p", 125)), want: []string{wsPong(strings.Repeat("p", 125))}},
	)
	// UTF-8.
	tests = append(tests,
		fail("invalid UTF-8", text("{\"type\":\"ping\",\"id\":\"\xff\"}"), protocol.CloseInvalidUTF8),
		fail("invalid UTF-8 before the hello", text("{\"type\":\"hello\",\"token\":\"\xc3\x28\"}"), protocol.CloseInvalidUTF8),
		fail("overlong encoding", text("{\"type\":\"ping\",\"id\":\"\xc0\xaf\"}"), protocol.CloseInvalidUTF8),
		fail("surrogate", text("{\"type\":\"ping\",\"id\":\"\xed\xa0\x80\"}"), protocol.CloseInvalidUTF8),
		fail("beyond U+10FFFF", text("{\"type\":\"ping\",\"id\":\"\xf4\x90\x80\x80\"}"), protocol.CloseInvalidUTF8),
		tc{name: "valid UTF-8 split across fragments", send: join(frag(false, wsOpText, "{\"type\":\"ping\",\"id\":\"\xe2\x82"), frag(true, wsOpContinuation, "\xac\"}")),
			want: []string{pong("€")}},
		fail("invalid UTF-8 split across fragments", join(frag(false, wsOpText, "{\"type\":\"ping\",\"id\":\"\xe2\x82"), frag(true, wsOpContinuation, "\x28\"}")), protocol.CloseInvalidUTF8),
		// The message never ends: only a check of each fragment can fail it.
		fail("invalid UTF-8 in the first fragment fails at once", frag(false, wsOpText, "{\"type\":\"ping\",\"id\":\"\xff"), protocol.CloseInvalidUTF8),
		fail("invalid UTF-8 in a middle fragment fails at once",
			join(frag(false, wsOpText, "{\"type\":\"ping\",\"id\":\"\xe2"), frag(false, wsOpContinuation, "\x82\x28")), protocol.CloseInvalidUTF8),
		fail("message ends inside a character", join(frag(false, wsOpText, "{\"a\":\"\xe2"), frag(true, wsOpContinuation, "\x82")), protocol.CloseInvalidUTF8),
	)
	// Close payloads (RFC 6455 §5.5.1, §7.4).
	tests = append(tests,
		tc{name: "close without a code", send: wsClientFrame(true, wsOpClose, nil), close: 1000},
		fail("close with a one-byte payload", wsClientFrame(true, wsOpClose, []byte{0x03}), protocol.CloseProtocolViolation),
		fail("close reason not UTF-8", closeBody(1000, "\xff"), protocol.CloseProtocolViolation),
		tc{name: "close with a 123-byte reason", send: closeBody(1000, strings.Repeat("r", 123)), close: 1000},
	)
	for _, code := range []int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		tests = append(tests, tc{name: fmt.Sprintf("close code %d", code), send: closeBody(code, "ok"), close: protocol.CloseCode(code)})
	}
	for _, code := range []int{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		tests = append(tests, fail(fmt.Sprintf("close code %d", code), closeBody(code, ""), protocol.CloseProtocolViolation))
	}
	// Pings, and what a violation leaves unanswered.
	tests = append(tests,
		tc{name: "ten pings back to back", send: tenPings, want: tenPongs},
		tc{name: "many pings back to back", send: manyPings, want: manyPongs},
		tc{name: "frames after a violation are ignored",
			send: join(frag(true, wsOpPing, "before"), []byte{0x89, 0x00}, frag(true, wsOpPing, "after"), pingJSON("after")),
			want: []string{wsPong("before")}, close: protocol.CloseProtocolViolation, slug: "protocol_violation", noEcho: true},
		tc{name: "ping flood over the frame rate", cfg: Config{FrameRate: 20}, send: bytes.Repeat(frag(true, wsOpPing, ""), 100),
			ignorePongs: true, close: protocol.CloseRateLimited, slug: "rate_limited", noEcho: true},
		tc{name: "violation as the first frame", first: true, send: frag(true, 0x3, ""),
			close: protocol.CloseProtocolViolation, slug: "protocol_violation", noEcho: true},
		tc{name: "binary as the first frame", first: true, send: frag(true, wsOpBinary, `{"type":"hello","token":"good-u"}`),
			close: protocol.CloseUnsupportedData, slug: "unsupported_data", noEcho: true},
	)

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.MaxFrameBytes = limit
			h := startGW(t, cfg, nil)
			// Whatever the server waits for after its close, it must not
			// hold the client's EOF back (this client sends no close).
			h.g.closeWait = time.Minute
			c := h.dialRaw(nil, nil)
			if !tt.first {
				c.hello("u")
			}
			c.write(tt.send)

			// The answers, in order.
			var got []string
			var closed *rawFrame
			deadline := time.Now().Add(5 * time.Second)
			for closed == nil && (tt.close != 0 || len(got) < len(tt.want)) {
				f, err := c.read(deadline)
				if err != nil {
					t.Fatalf("after %q: read: %v", got, err)
				}
				switch {
				case f.op == wsOpClose:
					closed = &f
				case f.op == wsOpPing:
					// The server's own pings may come at any time.
				case tt.ignorePongs && (f.op == wsOpPong || strings.HasPrefix(f.String(), `text {"type":"pong"`)):
				default:
					got = append(got, f.String())
				}
			}
			if tt.close == 0 {
				if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
					t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
				}
				// The connection lives on: close it ourselves, as a client should.
				c.write(closeBody(1000, ""))
				f, err := c.read(deadline)
				if err != nil || f.op != wsOpClose {
					t.Fatalf("got %v, %v; want the echo of our close", f, err)
				}
				closed = &f
				tt.close = 1000
			}
			var errorFrame string
			if n := len(got); n > 0 && strings.HasPrefix(got[n-1], `text {"type":"error"`) {
				errorFrame, got = got[n-1], got[:n-1]
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("before the close got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if len(closed.payload) < 2 {
				t.Fatalf("close frame %v has no code", closed)
			}
			code, reason := protocol.CloseCode(binary.BigEndian.Uint16(closed.payload)), string(closed.payload[2:])
			if code != tt.close {
				t.Errorf("close %d %q, want %d", code, reason, tt.close)
			}
			switch {
			case tt.close.Failed() && errorFrame != "":
				t.Errorf("error frame %s before close %d, which must come alone", errorFrame, code)
			case !tt.close.Failed() && tt.noEcho && !strings.Contains(errorFrame, `"code":"`+tt.slug+`"`):
				t.Errorf("error frame %q before close %d, want code %q", errorFrame, code, tt.slug)
			case !tt.noEcho && errorFrame != "":
				t.Errorf("error frame %s before the echo of our close", errorFrame)
			}
			if tt.noEcho && reason != tt.slug {
				t.Errorf("close reason %q, want %q", reason, tt.slug)
			}

			// Nothing follows the close frame, and TCP closes at once, not
			// after closeWait (a minute here): the old gateway waited for
			// a close reply it would not even read.
			start := time.Now()
			f, err := c.read(start.Add(5 * time.Second))
			if err == nil {
				t.Fatalf("frame %v after the close frame", f)
			}
			if !errors.Is(err, io.EOF) {
				t.Fatalf("read after the close frame: %v, want EOF", err)
			}
			t.Logf("EOF %v after the close frame", time.Since(start))
			c.nc.Close()
			h.waitIdle()
		})
	}
}
