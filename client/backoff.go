package client

import "time"

// backoff returns the delay before reconnect attempt n with full jitter:
// a uniform random duration in [0, min(max, base·2ⁿ)]. Attempt 0 is
// immediate so that a client whose node died reconnects at once (G5);
// jitter spreads a reconnect storm of many clients over the window.
// randN returns a uniform int64 in [0, n).
func backoff(n int, base, max time.Duration, randN func(int64) int64) time.Duration {
	if n <= 0 || base <= 0 || max <= 0 {
		return 0
	}
	ceil := base
	for i := 0; i < n && ceil < max; i++ {
		if ceil > max/2 {
			ceil = max // doubling would pass max (or overflow)
			break
		}
		ceil *= 2
	}
	ceil = min(ceil, max)
	return time.Duration(randN(int64(ceil) + 1))
}
