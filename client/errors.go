package client

import (
	"errors"
	"fmt"

	"github.com/switchboard/switchboard/protocol"
)

// Sentinel errors. Errors returned or carried in events wrap one of these.
var (
	// ErrClosed is returned by operations on a closed Client.
	ErrClosed = errors.New("client: closed")
	// ErrConfig reports an invalid Config; the message names the field.
	ErrConfig = errors.New("client: invalid config")
	// ErrNotConnected is returned by Ping when no connection is established.
	ErrNotConnected = errors.New("client: not connected")
	// ErrConnectionLost is returned by Ping when the connection ends before
	// the pong arrives.
	ErrConnectionLost = errors.New("client: connection lost")
	// ErrContinuityLost means the server could not resume the stream (welcome
	// resumed:false on a resume, or close 4011): messages may have been
	// missed and the application must resync its state.
	ErrContinuityLost = errors.New("client: continuity lost")
	// ErrUnauthorized means the server rejected the token (close 4001 or
	// HTTP 401). The client keeps retrying with backoff, asking Config.Token
	// for a fresh token each time. An EventRefreshFailed wraps it when the
	// server refused the token of a refresh.
	ErrUnauthorized = errors.New("client: unauthorized")
	// ErrToken wraps an error returned by Config.Token; an
	// EventRefreshFailed also wraps it when Token returned the token the
	// connection already has, so that no refresh could be sent.
	ErrToken = errors.New("client: token source failed")
	// ErrHeartbeatTimeout means nothing arrived for 2.5 heartbeat intervals,
	// so the connection was presumed dead (G5).
	ErrHeartbeatTimeout = errors.New("client: heartbeat timeout")
	// ErrHandshakeTimeout means no welcome arrived within Config.DialTimeout.
	ErrHandshakeTimeout = errors.New("client: handshake timeout")
	// ErrProtocol means the server sent something that breaks §3.
	ErrProtocol = errors.New("client: protocol violation")
	// ErrSequenceGap means a message skipped seqs after a resume. It is a
	// server bug; the message is still delivered.
	ErrSequenceGap = errors.New("client: sequence gap")
	// ErrSequenceRegression means a resumed welcome reported a stream seq
	// lower than one already delivered.
	ErrSequenceRegression = errors.New("client: sequence regression")
)

// CloseError is a close frame received from the server, with the error frame
// that preceded it, if any.
type CloseError struct {
	Code      int    // WebSocket close code, see protocol.CloseCode
	Reason    string // close frame reason text
	ErrorCode string // code of the preceding error frame, protocol.CloseCode.Slug
	Message   string // message of the preceding error frame
}

// Error describes the close and the error frame before it.
func (e *CloseError) Error() string {
	if e.ErrorCode != "" {
		return fmt.Sprintf("client: server closed %d (%s: %s)", e.Code, e.ErrorCode, e.Message)
	}
	return fmt.Sprintf("client: server closed %d %s", e.Code, e.Reason)
}

// Unwrap maps the close codes that have a sentinel onto it, so callers can
// use errors.Is(err, ErrUnauthorized) and the like.
func (e *CloseError) Unwrap() error {
	switch protocol.CloseCode(e.Code) {
	case protocol.CloseUnauthorized:
		return ErrUnauthorized
	case protocol.CloseContinuityLost:
		return ErrContinuityLost
	case protocol.CloseProtocol, protocol.CloseProtocolViolation, protocol.CloseUnsupportedData:
		return ErrProtocol
	}
	return nil
}
