package load

import (
	"math"
	"math/bits"
	"sync"
	"time"
)

// The histogram is HDR-style: values below subBuckets are counted exactly,
// larger ones in buckets whose width doubles every halfBuckets buckets, so
// every recorded value is known within 1/halfBuckets (< 1.6 %) of itself,
// from a nanosecond to centuries, in a fixed 30 KiB.
const (
	subBuckets  = 128
	halfBuckets = subBuckets / 2
	subBits     = 7 // log2(subBuckets)
	numBuckets  = subBuckets + (64-subBits)*halfBuckets
)

// Histogram records non-negative int64 values (latencies in nanoseconds)
// with bounded relative error. It is safe for concurrent use.
type Histogram struct {
	mu     sync.Mutex
	counts [numBuckets]uint64
	n      uint64
	min    int64
	max    int64
	sum    float64
}

// bucketOf returns the bucket index of v ≥ 0.
func bucketOf(v int64) int {
	if v < subBuckets {
		return int(v)
	}
	// v>>shift lands in [halfBuckets, subBuckets).
	shift := bits.Len64(uint64(v)) - subBits
	return subBuckets + (shift-1)*halfBuckets + int(v>>shift) - halfBuckets
}

// bucketHigh returns the largest value that falls in bucket i.
func bucketHigh(i int) int64 {
	if i < subBuckets {
		return int64(i)
	}
	shift := (i-subBuckets)/halfBuckets + 1
	top := uint64((i-subBuckets)%halfBuckets + halfBuckets)
	// The last buckets reach past MaxInt64.
	return int64(min((top+1)<<shift-1, math.MaxInt64))
}

// Record adds one value; negative values count as 0 (a clock step).
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.mu.Lock()
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
	h.mu.Unlock()
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// Max returns the largest recorded value (exact), 0 when empty.
func (h *Histogram) Max() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.max
}

// Quantile returns the value at quantile q in [0, 1]: the upper edge of
// the bucket holding the ceil(q·n)-th smallest value, capped by the exact
// maximum. It returns 0 when empty.
func (h *Histogram) Quantile(q float64) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.quantileLocked(q)
}

func (h *Histogram) quantileLocked(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank == 0 {
		return h.min
	}
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			return min(max(bucketHigh(i), h.min), h.max)
		}
	}
	return h.max
}

// Merge adds o's values to h.
func (h *Histogram) Merge(o *Histogram) {
	o.mu.Lock()
	counts, n, lo, hi, sum := o.counts, o.n, o.min, o.max, o.sum
	o.mu.Unlock()
	if n == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, c := range counts {
		h.counts[i] += c
	}
	if h.n == 0 || lo < h.min {
		h.min = lo
	}
	h.max = max(h.max, hi)
	h.n += n
	h.sum += sum
}

// Latency summarizes a histogram of nanosecond durations in milliseconds.
type Latency struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
}

// Summary returns the count, quantiles, maximum and mean in milliseconds.
func (h *Histogram) Summary() Latency {
	h.mu.Lock()
	defer h.mu.Unlock()
	ms := func(ns int64) float64 { return round3(float64(ns) / float64(time.Millisecond)) }
	l := Latency{
		Count: h.n,
		P50:   ms(h.quantileLocked(0.50)),
		P90:   ms(h.quantileLocked(0.90)),
		P99:   ms(h.quantileLocked(0.99)),
		P999:  ms(h.quantileLocked(0.999)),
		Max:   ms(h.max),
	}
	if h.n > 0 {
		l.Mean = round3(h.sum / float64(h.n) / float64(time.Millisecond))
	}
	return l
}

// round3 keeps three decimals so reports stay readable.
func round3(f float64) float64 { return math.Round(f*1000) / 1000 }
