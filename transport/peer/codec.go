package peer

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"go.opentelemetry.io/otel/trace"
)

// Peer link wire format. Every frame is
//
//	[u32 length][u8 kind][u8 method][u64 request id][body]
//
// where length counts the bytes after itself. Bodies by kind:
//
//	request:  [u32 caller timeout, ms; 0 = none][payload]
//	response: [u8 0][payload]  or  [u8 1][u16 error code][message]
//	oneway:   [payload]
//	ping/pong: empty (the pong echoes the ping's id)
//	traced request: [trace context][u32 caller timeout, ms][payload]
//	traced oneway:  [trace context][payload]
//
// A trace context is the caller's sampled W3C span context, so that the
// spans a call causes on the other node belong to the caller's trace:
//
//	[u8 n][16 trace id][8 span id][u8 trace flags][n-25 bytes tracestate]
//
// Only sampled calls are traced frames; every other frame is exactly what
// it was before trace context existed. A node of an older version refuses
// a traced frame (unknown kind) and drops the link, so tracing is turned
// on once every node runs a version that knows them.
//
// Before any frame each side sends a hello: [magic "SBPL"][u8 version][u16 len][node id].
// The dialer speaks first; the acceptor answers with its own hello.
const (
	kindRequest  byte = 1
	kindResponse byte = 2
	kindOneway   byte = 3
	kindPing     byte = 4
	kindPong     byte = 5
	// kindRequestTraced and kindOnewayTraced are request and oneway
	// frames whose body begins with the caller's trace context.
	kindRequestTraced byte = 6
	kindOnewayTraced  byte = 7
)

const (
	statusOK    byte = 0
	statusError byte = 1
)

const (
	headerLen    = 14                      // length, kind, method, id
	fixedLen     = 10                      // part of the header counted by the length field
	bodyOverhead = 4 + 1 + maxTraceContext // most bytes a body adds to a payload (trace context, request timeout)
	version      = 1
	maxNodeID    = 1024
	maxErrMsg    = 4096 // error messages are diagnostics; keep them from bloating frames
	poolMaxCap   = 64 << 10

	traceIDsLen     = 16 + 8 + 1 // trace id, span id, flags
	maxTraceContext = 255        // n's bound: a longer tracestate is not carried
)

var magic = [4]byte{'S', 'B', 'P', 'L'}

// bufPool recycles encoded frames between callers and the writer goroutine.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func getBuf(n int) *[]byte {
	bp := bufPool.Get().(*[]byte)
	if cap(*bp) < n {
		*bp = make([]byte, 0, n)
	}
	*bp = (*bp)[:0]
	return bp
}

func putBuf(bp *[]byte) {
	if cap(*bp) > poolMaxCap {
		return // let big one-off frames go to the GC instead of pinning memory
	}
	bufPool.Put(bp)
}

// newFrame returns a pooled buffer holding the header of a frame whose body
// will be bodyLen bytes; the caller appends the body.
func newFrame(kind, method byte, id uint64, bodyLen int) *[]byte {
	bp := getBuf(headerLen + bodyLen)
	b := binary.BigEndian.AppendUint32(*bp, uint32(fixedLen+bodyLen))
	b = append(b, kind, method)
	*bp = binary.BigEndian.AppendUint64(b, id)
	return bp
}

// encodeRequest encodes a request; a valid sc makes it a traced request.
func encodeRequest(method byte, id uint64, timeoutMs uint32, sc trace.SpanContext, payload []byte) *[]byte {
	kind, state, tcLen := kindRequest, "", 0
	if sc.IsValid() {
		kind, state = kindRequestTraced, traceState(sc)
		tcLen = 1 + traceIDsLen + len(state)
	}
	bp := newFrame(kind, method, id, tcLen+4+len(payload))
	b := *bp
	if tcLen > 0 {
		b = appendTraceContext(b, sc, state)
	}
	b = binary.BigEndian.AppendUint32(b, timeoutMs)
	*bp = append(b, payload...)
	return bp
}

// encodeOneway encodes a one-way frame; a valid sc makes it traced.
func encodeOneway(method byte, sc trace.SpanContext, payload []byte) *[]byte {
	kind, state, tcLen := kindOneway, "", 0
	if sc.IsValid() {
		kind, state = kindOnewayTraced, traceState(sc)
		tcLen = 1 + traceIDsLen + len(state)
	}
	bp := newFrame(kind, method, 0, tcLen+len(payload))
	b := *bp
	if tcLen > 0 {
		b = appendTraceContext(b, sc, state)
	}
	*bp = append(b, payload...)
	return bp
}

// traceState is sc's tracestate as carried: dropped when too long for
// the frame's trace context (it is advisory; the ids are what parent).
func traceState(sc trace.SpanContext) string {
	if sc.TraceState().Len() == 0 {
		return ""
	}
	s := sc.TraceState().String()
	if len(s) > maxTraceContext-traceIDsLen {
		return ""
	}
	return s
}

func appendTraceContext(b []byte, sc trace.SpanContext, state string) []byte {
	b = append(b, byte(traceIDsLen+len(state)))
	tid, sid := sc.TraceID(), sc.SpanID()
	b = append(b, tid[:]...)
	b = append(b, sid[:]...)
	b = append(b, byte(sc.TraceFlags()))
	return append(b, state...)
}

// decodeTraceContext splits a traced body into the caller's span context
// and the rest. Ids that are not a valid span context, or a tracestate
// that does not parse, are dropped rather than refused: they only decide
// which trace the spans join.
func decodeTraceContext(body []byte) (trace.SpanContext, []byte, error) {
	if len(body) < 1 {
		return trace.SpanContext{}, nil, fmt.Errorf("%w: traced frame without trace context", errProtocol)
	}
	n := int(body[0])
	if n < traceIDsLen || len(body) < 1+n {
		return trace.SpanContext{}, nil, fmt.Errorf("%w: trace context of %d bytes in a body of %d", errProtocol, n, len(body))
	}
	tc, rest := body[1:1+n], body[1+n:]
	cfg := trace.SpanContextConfig{
		TraceID:    trace.TraceID(tc[0:16]),
		SpanID:     trace.SpanID(tc[16:24]),
		TraceFlags: trace.TraceFlags(tc[24]),
		Remote:     true,
	}
	if n > traceIDsLen {
		if ts, err := trace.ParseTraceState(string(tc[traceIDsLen:])); err == nil {
			cfg.TraceState = ts
		}
	}
	sc := trace.NewSpanContext(cfg)
	if !sc.IsValid() {
		return trace.SpanContext{}, rest, nil
	}
	return sc, rest, nil
}

func encodeResponse(method byte, id uint64, payload []byte) *[]byte {
	bp := newFrame(kindResponse, method, id, 1+len(payload))
	b := append(*bp, statusOK)
	*bp = append(b, payload...)
	return bp
}

func encodeError(method byte, id uint64, code uint16, msg string) *[]byte {
	if len(msg) > maxErrMsg {
		msg = msg[:maxErrMsg]
	}
	bp := newFrame(kindResponse, method, id, 3+len(msg))
	b := append(*bp, statusError)
	b = binary.BigEndian.AppendUint16(b, code)
	*bp = append(b, msg...)
	return bp
}

func encodeControl(kind byte, id uint64) *[]byte {
	return newFrame(kind, 0, id, 0)
}

// frameHeader is a decoded frame header.
type frameHeader struct {
	bodyLen int
	kind    byte
	method  byte
	id      uint64
}

// readHeader reads one header; maxBody bounds the body so a corrupt or
// hostile length cannot make the reader allocate without limit.
func readHeader(r io.Reader, buf *[headerLen]byte, maxBody int) (frameHeader, error) {
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return frameHeader{}, err
	}
	n := binary.BigEndian.Uint32(buf[0:4])
	if n < fixedLen || uint64(n)-fixedLen > uint64(maxBody) {
		return frameHeader{}, fmt.Errorf("%w: frame length %d (max body %d)", ErrFrameTooLarge, n, maxBody)
	}
	return frameHeader{
		bodyLen: int(n) - fixedLen,
		kind:    buf[4],
		method:  buf[5],
		id:      binary.BigEndian.Uint64(buf[6:14]),
	}, nil
}

// decodeResponse splits a response body into its payload or remote error.
func decodeResponse(body []byte) (payload []byte, isErr bool, code uint16, msg string, err error) {
	if len(body) < 1 {
		return nil, false, 0, "", fmt.Errorf("%w: empty response", errProtocol)
	}
	switch body[0] {
	case statusOK:
		return body[1:], false, 0, "", nil
	case statusError:
		if len(body) < 3 {
			return nil, false, 0, "", fmt.Errorf("%w: short error response", errProtocol)
		}
		return nil, true, binary.BigEndian.Uint16(body[1:3]), string(body[3:]), nil
	default:
		return nil, false, 0, "", fmt.Errorf("%w: response status %d", errProtocol, body[0])
	}
}

func writeHello(w io.Writer, nodeID string) error {
	b := make([]byte, 0, 7+len(nodeID))
	b = append(b, magic[:]...)
	b = append(b, version)
	b = binary.BigEndian.AppendUint16(b, uint16(len(nodeID)))
	b = append(b, nodeID...)
	_, err := w.Write(b)
	return err
}

func readHello(r *bufio.Reader) (string, error) {
	var h [7]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return "", err
	}
	if [4]byte(h[0:4]) != magic {
		return "", fmt.Errorf("%w: bad magic %q", errProtocol, h[0:4])
	}
	if h[4] != version {
		return "", fmt.Errorf("%w: version %d, want %d", errProtocol, h[4], version)
	}
	n := int(binary.BigEndian.Uint16(h[5:7]))
	if n == 0 || n > maxNodeID {
		return "", fmt.Errorf("%w: node id length %d", errProtocol, n)
	}
	id := make([]byte, n)
	if _, err := io.ReadFull(r, id); err != nil {
		return "", err
	}
	return string(id), nil
}
