package consensus

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// frameVersion leads every batch, result list and snapshot header, so the
// encoding can change without misreading old log entries.
const frameVersion byte = 1

// ErrMalformed is wrapped when a log entry, forward payload or snapshot
// header cannot be decoded.
var ErrMalformed = errors.New("consensus: malformed data")

// frameEncoder writes [version][uvarint n]([uvarint len][bytes])*n into one
// preallocated buffer.
type frameEncoder struct {
	buf []byte
}

// newFrameEncoder sizes the buffer for n items totalling size bytes, after
// a prefix of the given length (the forward kind byte).
func newFrameEncoder(prefix []byte, n, size int) *frameEncoder {
	capacity := len(prefix) + 1 + binary.MaxVarintLen64*(n+1) + size
	e := &frameEncoder{buf: make([]byte, 0, capacity)}
	e.buf = append(e.buf, prefix...)
	e.buf = append(e.buf, frameVersion)
	e.buf = binary.AppendUvarint(e.buf, uint64(n))
	return e
}

func (e *frameEncoder) add(item []byte) {
	e.buf = binary.AppendUvarint(e.buf, uint64(len(item)))
	e.buf = append(e.buf, item...)
}

// encodeFrames frames items with no prefix.
func encodeFrames(items [][]byte) []byte {
	size := 0
	for _, it := range items {
		size += len(it)
	}
	e := newFrameEncoder(nil, len(items), size)
	for _, it := range items {
		e.add(it)
	}
	return e.buf
}

// decodeFrames splits b into its items. The items alias b and are capped
// (three-index slices) so that appending to one cannot overwrite the next.
func decodeFrames(b []byte) ([][]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty frame", ErrMalformed)
	}
	if b[0] != frameVersion {
		return nil, fmt.Errorf("%w: frame version %d", ErrMalformed, b[0])
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, fmt.Errorf("%w: bad item count", ErrMalformed)
	}
	b = b[k:]
	// Every item costs at least one length byte, which bounds the
	// allocation by the input size whatever the count claims.
	if n > uint64(len(b)) {
		return nil, fmt.Errorf("%w: count %d exceeds %d remaining bytes", ErrMalformed, n, len(b))
	}
	items := make([][]byte, n)
	for i := range items {
		l, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, fmt.Errorf("%w: bad length of item %d", ErrMalformed, i)
		}
		b = b[k:]
		if l > uint64(len(b)) {
			return nil, fmt.Errorf("%w: item %d length %d exceeds %d remaining bytes", ErrMalformed, i, l, len(b))
		}
		items[i] = b[:l:l]
		b = b[l:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(b))
	}
	return items, nil
}

// encodeIndex encodes [version][uvarint index], the answer to a read-index
// forward and the snapshot header.
func encodeIndex(index uint64) []byte {
	return binary.AppendUvarint([]byte{frameVersion}, index)
}

// decodeIndex is the inverse of encodeIndex.
func decodeIndex(b []byte) (uint64, error) {
	if len(b) == 0 || b[0] != frameVersion {
		return 0, fmt.Errorf("%w: index header", ErrMalformed)
	}
	v, k := binary.Uvarint(b[1:])
	if k <= 0 || 1+k != len(b) {
		return 0, fmt.Errorf("%w: index value", ErrMalformed)
	}
	return v, nil
}
