package broker

import "time"

// Observer receives the timings that metrics are made of (node/metrics.go).
// Its methods are called on the publish and takeover paths: they must be
// cheap (an atomic add, not a map lookup) and safe for concurrent use.
type Observer interface {
	// TookOver: a claim of an existing stream (one another node owned or
	// backed up, or this node held before a restart) ended after d, from
	// the decision to claim to serving it here; err is nil on success.
	// Claims of new streams are not takeovers and are not reported.
	TookOver(d time.Duration, err error)
	// ContinuityLost: a claim found no node holding an existing stream and
	// started it over as a new session (clients get resumed:false).
	ContinuityLost()
	// Replicated: a backup acknowledged a replication call after d (one
	// call, which may carry the appends of many streams).
	Replicated(d time.Duration)
}

// nopObserver is the Observer of a broker configured without one.
type nopObserver struct{}

func (nopObserver) TookOver(time.Duration, error) {}
func (nopObserver) ContinuityLost()               {}
func (nopObserver) Replicated(time.Duration)      {}
