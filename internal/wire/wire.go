// Package wire holds the small binary encoding helpers shared by the Raft
// command format and the peer-link payloads: uvarints, varints and
// length-prefixed strings, decoded without panics.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrTruncated is wrapped by every Reader error.
var ErrTruncated = errors.New("truncated or invalid input")

// AppendString appends s with a uvarint length prefix.
func AppendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// AppendBytes appends b with a uvarint length prefix.
func AppendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// AppendUvarint appends v as a uvarint.
func AppendUvarint(dst []byte, v uint64) []byte { return binary.AppendUvarint(dst, v) }

// AppendVarint appends v as a varint.
func AppendVarint(dst []byte, v int64) []byte { return binary.AppendVarint(dst, v) }

// AppendBool appends v as one byte.
func AppendBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, 1)
	}
	return append(dst, 0)
}

// Reader decodes the formats above. The first error sticks and later reads
// return zero values, so a decoder checks Err once at the end.
type Reader struct {
	b   []byte
	err error
}

// NewReader reads from b.
func NewReader(b []byte) *Reader { return &Reader{b: b} }

// Err returns the first error met, if any.
func (r *Reader) Err() error { return r.err }

// Len returns the bytes not read yet.
func (r *Reader) Len() int { return len(r.b) }

// Fail records a decoding error found by the caller (an out-of-range value).
func (r *Reader) Fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrTruncated, what)
	}
	r.b = nil
}

// Byte reads one byte.
func (r *Reader) Byte() byte {
	if len(r.b) < 1 {
		r.Fail("byte")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

// Bool reads one byte as a bool.
func (r *Reader) Bool() bool { return r.Byte() != 0 }

// Uvarint reads a uvarint.
func (r *Reader) Uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.Fail("uvarint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Varint reads a varint.
func (r *Reader) Varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.Fail("varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Bytes reads a length-prefixed byte slice; it aliases the input.
func (r *Reader) Bytes() []byte {
	n := r.Uvarint()
	if n > uint64(len(r.b)) {
		r.Fail("length")
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// String reads a length-prefixed string.
func (r *Reader) String() string { return string(r.Bytes()) }

// Count reads a uvarint element count and checks it against the bytes
// left (each element takes at least min bytes), so a hostile count cannot
// make the caller allocate more than the input justifies.
func (r *Reader) Count(min int) int {
	n := r.Uvarint()
	if min < 1 {
		min = 1
	}
	if n > uint64(len(r.b)/min) {
		r.Fail("count")
		return 0
	}
	return int(n)
}
