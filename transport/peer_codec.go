package transport

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
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
//
// Before any frame each side sends a hello: [magic "SBPL"][u8 version][u16 len][node id].
// The dialer speaks first; the acceptor answers with its own hello.
const (
	peerKindRequest  byte = 1
	peerKindResponse byte = 2
	peerKindOneway   byte = 3
	peerKindPing     byte = 4
	peerKindPong     byte = 5
)

const (
	peerStatusOK    byte = 0
	peerStatusError byte = 1
)

const (
	peerHeaderLen    = 14 // length, kind, method, id
	peerFixedLen     = 10 // part of the header counted by the length field
	peerBodyOverhead = 4  // most bytes a body adds to a payload (request timeout)
	peerVersion      = 1
	peerMaxNodeID    = 1024
	peerMaxErrMsg    = 4096 // error messages are diagnostics; keep them from bloating frames
	peerPoolMaxCap   = 64 << 10
)

var peerMagic = [4]byte{'S', 'B', 'P', 'L'}

// peerBufPool recycles encoded frames between callers and the writer goroutine.
var peerBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func peerGetBuf(n int) *[]byte {
	bp := peerBufPool.Get().(*[]byte)
	if cap(*bp) < n {
		*bp = make([]byte, 0, n)
	}
	*bp = (*bp)[:0]
	return bp
}

func peerPutBuf(bp *[]byte) {
	if cap(*bp) > peerPoolMaxCap {
		return // let big one-off frames go to the GC instead of pinning memory
	}
	peerBufPool.Put(bp)
}

// peerNewFrame returns a pooled buffer holding the header of a frame whose body
// will be bodyLen bytes; the caller appends the body.
func peerNewFrame(kind, method byte, id uint64, bodyLen int) *[]byte {
	bp := peerGetBuf(peerHeaderLen + bodyLen)
	b := binary.BigEndian.AppendUint32(*bp, uint32(peerFixedLen+bodyLen))
	b = append(b, kind, method)
	*bp = binary.BigEndian.AppendUint64(b, id)
	return bp
}

func peerEncodeRequest(method byte, id uint64, timeoutMs uint32, payload []byte) *[]byte {
	bp := peerNewFrame(peerKindRequest, method, id, 4+len(payload))
	b := binary.BigEndian.AppendUint32(*bp, timeoutMs)
	*bp = append(b, payload...)
	return bp
}

func peerEncodeOneway(method byte, payload []byte) *[]byte {
	bp := peerNewFrame(peerKindOneway, method, 0, len(payload))
	*bp = append(*bp, payload...)
	return bp
}

func peerEncodeResponse(method byte, id uint64, payload []byte) *[]byte {
	bp := peerNewFrame(peerKindResponse, method, id, 1+len(payload))
	b := append(*bp, peerStatusOK)
	*bp = append(b, payload...)
	return bp
}

func peerEncodeError(method byte, id uint64, code uint16, msg string) *[]byte {
	if len(msg) > peerMaxErrMsg {
		msg = msg[:peerMaxErrMsg]
	}
	bp := peerNewFrame(peerKindResponse, method, id, 3+len(msg))
	b := append(*bp, peerStatusError)
	b = binary.BigEndian.AppendUint16(b, code)
	*bp = append(b, msg...)
	return bp
}

func peerEncodeControl(kind byte, id uint64) *[]byte {
	return peerNewFrame(kind, 0, id, 0)
}

// peerHeader is a decoded frame header.
type peerHeader struct {
	bodyLen int
	kind    byte
	method  byte
	id      uint64
}

// peerReadHeader reads one header; maxBody bounds the body so a corrupt or
// hostile length cannot make the reader allocate without limit.
func peerReadHeader(r io.Reader, buf *[peerHeaderLen]byte, maxBody int) (peerHeader, error) {
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return peerHeader{}, err
	}
	n := binary.BigEndian.Uint32(buf[0:4])
	if n < peerFixedLen || uint64(n)-peerFixedLen > uint64(maxBody) {
		return peerHeader{}, fmt.Errorf("%w: frame length %d (max body %d)", ErrPeerFrameTooLarge, n, maxBody)
	}
	return peerHeader{
		bodyLen: int(n) - peerFixedLen,
		kind:    buf[4],
		method:  buf[5],
		id:      binary.BigEndian.Uint64(buf[6:14]),
	}, nil
}

// peerDecodeResponse splits a response body into its payload or remote error.
func peerDecodeResponse(body []byte) (payload []byte, isErr bool, code uint16, msg string, err error) {
	if len(body) < 1 {
		return nil, false, 0, "", fmt.Errorf("%w: empty response", errPeerProtocol)
	}
	switch body[0] {
	case peerStatusOK:
		return body[1:], false, 0, "", nil
	case peerStatusError:
		if len(body) < 3 {
			return nil, false, 0, "", fmt.Errorf("%w: short error response", errPeerProtocol)
		}
		return nil, true, binary.BigEndian.Uint16(body[1:3]), string(body[3:]), nil
	default:
		return nil, false, 0, "", fmt.Errorf("%w: response status %d", errPeerProtocol, body[0])
	}
}

func peerWriteHello(w io.Writer, nodeID string) error {
	b := make([]byte, 0, 7+len(nodeID))
	b = append(b, peerMagic[:]...)
	b = append(b, peerVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(len(nodeID)))
	b = append(b, nodeID...)
	_, err := w.Write(b)
	return err
}

func peerReadHello(r *bufio.Reader) (string, error) {
	var h [7]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return "", err
	}
	if [4]byte(h[0:4]) != peerMagic {
		return "", fmt.Errorf("%w: bad magic %q", errPeerProtocol, h[0:4])
	}
	if h[4] != peerVersion {
		return "", fmt.Errorf("%w: version %d, want %d", errPeerProtocol, h[4], peerVersion)
	}
	n := int(binary.BigEndian.Uint16(h[5:7]))
	if n == 0 || n > peerMaxNodeID {
		return "", fmt.Errorf("%w: node id length %d", errPeerProtocol, n)
	}
	id := make([]byte, n)
	if _, err := io.ReadFull(r, id); err != nil {
		return "", err
	}
	return string(id), nil
}
