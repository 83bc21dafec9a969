package node

import (
	"errors"

	"github.com/switchboard/switchboard/broker"
	"github.com/switchboard/switchboard/consensus"
	"github.com/switchboard/switchboard/session"
)

// wireErrors is the one table of errors that cross peer links: the index
// is the wire code, so errors.Is keeps working on the calling node.
// Append only; never reorder.
var wireErrors = []error{
	nil, // 0: anything else, message only
	session.ErrStaleEpoch,
	session.ErrNotOwner,
	session.ErrNotFound,
	session.ErrGap,
	broker.ErrUnavailable,
	broker.ErrNotHere,
	broker.ErrBadPayload,
	consensus.ErrNotLeader,
	consensus.ErrNoLeader,
}

func wireCode(err error) uint16 {
	for i, e := range wireErrors[1:] {
		if errors.Is(err, e) {
			return uint16(i + 1)
		}
	}
	return 0
}

// remoteError keeps the remote message while matching the sentinel.
type remoteError struct {
	sentinel error
	msg      string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

func wireError(code uint16, msg string) error {
	if int(code) < len(wireErrors) && code != 0 {
		return &remoteError{sentinel: wireErrors[code], msg: "remote: " + msg}
	}
	return errors.New("remote: " + msg)
}
