package client

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoffIsFullJitterWithinCap(t *testing.T) {
	const base, cap = 100 * time.Millisecond, 5 * time.Second
	tests := []struct {
		attempt int
		ceil    time.Duration
	}{
		{0, 0},
		{1, 200 * time.Millisecond},
		{2, 400 * time.Millisecond},
		{5, 3200 * time.Millisecond},
		{6, cap},
		{1000, cap}, // no overflow
	}
	top := func(n int64) int64 { return n - 1 }
	bottom := func(int64) int64 { return 0 }
	for _, tt := range tests {
		if got := backoff(tt.attempt, base, cap, top); got != tt.ceil {
			t.Errorf("attempt %d: largest delay %v, want %v", tt.attempt, got, tt.ceil)
		}
		if got := backoff(tt.attempt, base, cap, bottom); got != 0 {
			t.Errorf("attempt %d: smallest delay %v, want 0", tt.attempt, got)
		}
		for range 100 {
			if got := backoff(tt.attempt, base, cap, rand.Int64N); got < 0 || got > tt.ceil {
				t.Fatalf("attempt %d: delay %v outside [0, %v]", tt.attempt, got, tt.ceil)
			}
		}
	}
	if got := backoff(70, time.Duration(math.MaxInt64/3), time.Duration(math.MaxInt64), top); got != time.Duration(math.MaxInt64) {
		t.Errorf("huge cap: %v", got)
	}
}
