package protocol

// CloseCode is a WebSocket close code of the client protocol (DESIGN.md §3).
type CloseCode int

// The close codes a node sends. Each has one error slug (Slug), the `code`
// of the error frame sent before the close and the close frame's reason.
const (
	CloseNormal      CloseCode = 1000
	CloseGoingAway   CloseCode = 1001 // node shutting down
	CloseInvalidUTF8 CloseCode = 1007
	CloseTooLarge    CloseCode = 1009
	CloseInternal    CloseCode = 1011 // a bug: reconnect and resume
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

// slugs is the one table of close codes and their error slugs.
var slugs = map[CloseCode]string{
	CloseGoingAway:      "shutting_down",
	CloseInvalidUTF8:    "invalid_utf8",
	CloseTooLarge:       "frame_too_large",
	CloseInternal:       "internal_error",
	CloseTryAgainLater:  "unavailable",
	CloseUnauthorized:   "unauthorized",
	CloseProtocol:       "protocol_error",
	CloseHelloTimeout:   "hello_timeout",
	CloseSlowConsumer:   "slow_consumer",
	CloseMoved:          "draining",
	CloseContinuityLost: "continuity_lost",
	CloseRateLimited:    "rate_limited",
}

// Slug is the error code a node sends with c: the error frame's `code`
// and the close frame's reason. CloseNormal has none.
func (c CloseCode) Slug() string { return slugs[c] }

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
