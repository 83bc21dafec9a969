package protocol

import "fmt"

// Fault kinds of POST /v1/nodes/{id}/faults (DESIGN.md §5).
const (
	// FaultCrash: the process dies at once, as if SIGKILLed: no drain,
	// no gossip leave.
	FaultCrash = "crash"
	// FaultIsolate: the node drops all cluster-port (Raft, peer links)
	// and gossip traffic for DurationMS, then recovers by itself.
	FaultIsolate = "isolate"
	// FaultSlow: the node adds LatencyMS to every frame it sends on its
	// peer links for DurationMS.
	FaultSlow = "slow"
)

// Bounds of a fault's durations.
const (
	// MaxFaultDurationMS is the longest isolate or slow: ten minutes.
	MaxFaultDurationMS = 10 * 60 * 1000
	// MaxFaultLatencyMS is the largest added latency: under the peer
	// links' liveness timeout, so a slow link stays a link.
	MaxFaultLatencyMS = 2000
)

// Fault is the body of POST /v1/nodes/{id}/faults, and its 202 answer
// with Node set.
type Fault struct {
	Node       string `json:"node,omitempty"`
	Kind       string `json:"kind"`
	DurationMS int64  `json:"duration_ms,omitempty"`
	LatencyMS  int64  `json:"latency_ms,omitempty"`
}

// Validate reports a fault the contract does not allow, as ErrBadRequest.
// The fields a kind does not use (crash: duration_ms and latency_ms;
// isolate: latency_ms) are ignored, whatever they hold: DESIGN.md §5 gives
// one body shape for every kind. Clean drops them.
func (f Fault) Validate() error {
	bad := func(format string, args ...any) error {
		return Errorf(ErrBadRequest, "fault: %s", fmt.Sprintf(format, args...))
	}
	switch f.Kind {
	case FaultCrash:
		return nil
	case FaultIsolate, FaultSlow:
	default:
		return bad("kind %q: want crash, isolate or slow", f.Kind)
	}
	if f.DurationMS <= 0 || f.DurationMS > MaxFaultDurationMS {
		return bad("%s needs duration_ms between 1 and %d, not %d", f.Kind, MaxFaultDurationMS, f.DurationMS)
	}
	if f.Kind == FaultSlow && (f.LatencyMS <= 0 || f.LatencyMS > MaxFaultLatencyMS) {
		return bad("slow needs latency_ms between 1 and %d, not %d", MaxFaultLatencyMS, f.LatencyMS)
	}
	return nil
}

// Clean returns f without the fields its kind does not use.
func (f Fault) Clean() Fault {
	switch f.Kind {
	case FaultCrash:
		f.DurationMS, f.LatencyMS = 0, 0
	case FaultIsolate:
		f.LatencyMS = 0
	}
	return f
}
