package peerapi

import (
	"errors"
	"fmt"

	"github.com/switchboard/switchboard/internal/wire"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/peer"
)

// ErrBadPayload means a peer sent a payload that does not decode.
var ErrBadPayload = errors.New("bad peer payload")

func badPayload(what string, err error) error {
	return fmt.Errorf("%w: %s: %v", ErrBadPayload, what, err)
}

// Empty is the payload of a request or answer that carries nothing.
type Empty struct{}

var emptyCodec = peer.Codec[Empty]{
	Append: func(dst []byte, _ Empty) []byte { return dst },
	// Trailing bytes are ignored, so a later version may add fields.
	Decode: func([]byte) (Empty, error) { return Empty{}, nil },
}

// bytesCodec passes an opaque payload through (consensus's forward
// protocol frames its own).
var bytesCodec = peer.Codec[[]byte]{
	Append: func(dst, v []byte) []byte { return append(dst, v...) },
	Decode: func(p []byte) ([]byte, error) { return p, nil },
}

// keyCodec carries a stream key as its whole payload.
var keyCodec = peer.Codec[session.Key]{
	Append: func(dst []byte, k session.Key) []byte { return append(dst, k.String()...) },
	Decode: func(p []byte) (session.Key, error) {
		k, err := session.ParseKey(string(p))
		if err != nil {
			return k, badPayload("stream key", err)
		}
		return k, nil
	},
}

var uvarintCodec = peer.Codec[uint64]{
	Append: wire.AppendUvarint,
	Decode: func(p []byte) (uint64, error) {
		r := wire.NewReader(p)
		v := r.Uvarint()
		if r.Err() != nil {
			return 0, badPayload("uvarint", r.Err())
		}
		return v, nil
	},
}

// flagCodec is one byte: 1 true, anything else false.
var flagCodec = peer.Codec[bool]{
	Append: func(dst []byte, v bool) []byte {
		if v {
			return append(dst, 1)
		}
		return append(dst, 0)
	},
	Decode: func(p []byte) (bool, error) { return len(p) == 1 && p[0] == 1, nil },
}

// appendKey and readKey carry a stream key inside a larger payload.
func appendKey(dst []byte, k session.Key) []byte { return wire.AppendString(dst, k.String()) }

func readKey(r *wire.Reader) session.Key {
	s := r.String()
	k, err := session.ParseKey(s)
	if err != nil && r.Err() == nil {
		r.Fail(err.Error())
	}
	return k
}
