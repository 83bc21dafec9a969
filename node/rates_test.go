package node

import (
	"testing"
	"time"
)

// The rates are the counters' growth from the oldest sample kept to now,
// per second; older samples fall out of the window.
func TestRatesOverTheLastSamples(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(sec float64, pub, del int64) rateSample {
		return rateSample{at: t0.Add(time.Duration(sec * float64(time.Second))), published: pub, delivered: del}
	}
	var r rates
	if p, d, w := r.since(at(0, 5, 5)); p != 0 || d != 0 || w != 0 {
		t.Fatalf("no samples: %v %v %v", p, d, w)
	}
	r.add(at(0, 0, 0))
	if p, d, _ := r.since(at(0.05, 100, 100)); p != 0 || d != 0 {
		t.Fatalf("a window too short to measure gave %v %v", p, d)
	}
	if p, d, w := r.since(at(2, 10, 40)); p != 5 || d != 20 || w != 2*time.Second {
		t.Fatalf("after 2 s: %v %v over %v, want 5 20 over 2s", p, d, w)
	}
	for i := 1; i <= rateSamples+2; i++ {
		r.add(at(float64(i), int64(100*i), 0))
	}
	// Kept: the samples of seconds 3..7; from second 3 to second 8.
	if p, _, w := r.since(at(8, 800, 0)); p != 100 || w != 5*time.Second {
		t.Fatalf("after the ring wrapped: %v over %v, want 100 over 5s", p, w)
	}
	// A counter that went back (it never should) gives 0, not a negative rate.
	if p, _, _ := r.since(at(8, 0, 0)); p != 0 {
		t.Fatalf("counter going back: %v", p)
	}
}
