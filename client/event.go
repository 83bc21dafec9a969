package client

// EventKind says what happened to the connection.
type EventKind int

// Event kinds.
const (
	// EventConnected: a welcome started a fresh stream position (no resume
	// was asked for, or an offline resume from seq 0).
	EventConnected EventKind = iota + 1
	// EventResumed: a welcome resumed the session; messages after LastSeq
	// follow.
	EventResumed
	// EventDisconnected: an established connection ended; the client
	// reconnects on its own. Err says why.
	EventDisconnected
	// EventContinuityLost: the server could not resume (Err wraps
	// ErrContinuityLost). The application must resync its state; the
	// client keeps going from the new position.
	EventContinuityLost
	// EventUnauthorized: the server rejected the token; the client retries
	// with backoff and a fresh token from Config.Token.
	EventUnauthorized
	// EventSequenceAnomaly: the server broke seq continuity after a
	// resume (Err wraps ErrSequenceGap or ErrSequenceRegression). It is a
	// server bug, reported so that it is never silent.
	EventSequenceAnomaly
	// EventRefreshFailed: a live connection could not refresh its token
	// before exp (Config.RefreshBefore): Config.Token failed or returned
	// the token in use (Err wraps ErrToken), or the server refused the new
	// one (Err wraps ErrUnauthorized). The connection goes on until the
	// server closes it at exp (4001); the client then reconnects with a
	// token from Config.Token.
	EventRefreshFailed
)

// String returns the kind in snake case, for logs.
func (k EventKind) String() string {
	switch k {
	case EventConnected:
		return "connected"
	case EventResumed:
		return "resumed"
	case EventDisconnected:
		return "disconnected"
	case EventContinuityLost:
		return "continuity_lost"
	case EventUnauthorized:
		return "unauthorized"
	case EventSequenceAnomaly:
		return "sequence_anomaly"
	case EventRefreshFailed:
		return "refresh_failed"
	}
	return "unknown"
}

// Event is a change in the client's connection state.
type Event struct {
	Kind     EventKind
	Endpoint string // URL of the connection concerned
	Node     string // node id, once welcomed
	Session  string
	Seq      uint64 // LastSeq after the event
	Code     int    // close code, when the server closed
	Err      error
}
