package protocol

import (
	"errors"
	"testing"
)

// TestFaultBodyIsOneShapeForEveryKind: DESIGN.md §5 gives one body,
// {"kind","duration_ms","latency_ms"}, for crash, isolate and slow; the
// fields a kind does not use are ignored, not refused.
func TestFaultBodyIsOneShapeForEveryKind(t *testing.T) {
	for _, tc := range []struct {
		f    Fault
		ok   bool
		want Fault // after Clean
	}{
		{Fault{Kind: FaultCrash}, true, Fault{Kind: FaultCrash}},
		{Fault{Kind: FaultCrash, DurationMS: 5000, LatencyMS: 100}, true, Fault{Kind: FaultCrash}},
		{Fault{Kind: FaultCrash, DurationMS: -1}, true, Fault{Kind: FaultCrash}},
		{Fault{Kind: FaultIsolate, DurationMS: 3000}, true, Fault{Kind: FaultIsolate, DurationMS: 3000}},
		{Fault{Kind: FaultIsolate, DurationMS: 3000, LatencyMS: 100}, true, Fault{Kind: FaultIsolate, DurationMS: 3000}},
		{Fault{Kind: FaultSlow, DurationMS: 3000, LatencyMS: 100}, true, Fault{Kind: FaultSlow, DurationMS: 3000, LatencyMS: 100}},
		{Fault{Kind: FaultIsolate}, false, Fault{}},
		{Fault{Kind: FaultIsolate, DurationMS: MaxFaultDurationMS + 1}, false, Fault{}},
		{Fault{Kind: FaultSlow, DurationMS: 3000}, false, Fault{}},
		{Fault{Kind: FaultSlow, DurationMS: 3000, LatencyMS: MaxFaultLatencyMS + 1}, false, Fault{}},
		{Fault{Kind: "flood"}, false, Fault{}},
	} {
		err := tc.f.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%+v: Validate = %v, want ok=%v", tc.f, err, tc.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Errorf("%+v: %v is not ErrBadRequest", tc.f, err)
			}
			continue
		}
		if got := tc.f.Clean(); got != tc.want {
			t.Errorf("%+v: Clean = %+v, want %+v", tc.f, got, tc.want)
		}
	}
}
