package protocol

// CloseCode is a WebSocket close code of the client protocol (DESIGN.md §3).
type CloseCode int

// The close codes a node sends. Each has one error slug (Slug), the `code`
// of the error frame sent before the close (none before a Failed close)
// and the close frame's reason.
const (
	CloseNormal    CloseCode = 1000
	CloseGoingAway CloseCode = 1001 // node shutting down
	// CloseProtocolViolation: a frame that breaks RFC 6455 (unmasked,
	// reserved bits, unknown opcode, bad fragmentation, bad control frame,
	// bad close payload).
	CloseProtocolViolation CloseCode = 1002
	CloseUnsupportedData   CloseCode = 1003 // a binary message
	CloseInvalidUTF8       CloseCode = 1007
	CloseTooLarge          CloseCode = 1009
	CloseInternal          CloseCode = 1011 // a bug: reconnect and resume
	// CloseTryAgainLater: no quorum, or the stream's holders are
	// unreachable; RFC 6455's "try again later".
	CloseTryAgainLater CloseCode = 1013
	CloseUnauthorized  CloseCode = 4001
	CloseProtocol      CloseCode = 4002
	CloseHelloTimeout  CloseCode = 4003
	CloseSlowConsumer  CloseCode = 4008
	// CloseMoved: the node drains, stops gracefully or is cut off, or the
	// stream moved: reconnect to another endpoint now and resume.
	CloseMoved CloseCode = 4010
	// CloseContinuityLost: the connection's stream was lost (its owner and
	// backup both failed) or retired while connected: reconnect, expect
	// resumed:false, resync.
	CloseContinuityLost CloseCode = 4011
	CloseRateLimited    CloseCode = 4029
)

// slugs is the one table of close codes and their error slugs. A few
// contract errors close with a code under a more precise slug of their
// own (errorTable): 4001 token_expired, 4029 too_many_connections.
var slugs = map[CloseCode]string{
	CloseGoingAway:         "shutting_down",
	CloseProtocolViolation: "protocol_violation",
	CloseUnsupportedData:   "unsupported_data",
	CloseInvalidUTF8:       "invalid_utf8",
	CloseTooLarge:          "frame_too_large",
	CloseInternal:          "internal_error",
	CloseTryAgainLater:     "unavailable",
	CloseUnauthorized:      "unauthorized",
	CloseProtocol:          "protocol_error",
	CloseHelloTimeout:      "hello_timeout",
	CloseSlowConsumer:      "slow_consumer",
	CloseMoved:             "draining",
	CloseContinuityLost:    "continuity_lost",
	CloseRateLimited:       "rate_limited",
}

// Slug is the error code a node sends with c: the error frame's `code`
// and the close frame's reason. CloseNormal has none.
func (c CloseCode) Slug() string { return slugs[c] }

// Failed reports whether c fails the connection at the WebSocket layer
// (RFC 6455 §7.1.7): the close frame alone explains it, with the slug as
// its reason and no error frame before it, and the TCP connection closes
// right after. The four codes of a client that broke the framing.
func (c CloseCode) Failed() bool {
	switch c {
	case CloseProtocolViolation, CloseUnsupportedData, CloseInvalidUTF8, CloseTooLarge:
		return true
	}
	return false
}

// Sendable reports whether c may appear in a close frame (RFC 6455 §7.4).
func (c CloseCode) Sendable() bool {
	switch {
	case c >= 1000 && c <= 1003, c >= 1007 && c <= 1014:
		return true
	case c >= 3000 && c <= 4999:
		return true
	}
	return false
}
