package load

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketBoundsHoldEveryValue(t *testing.T) {
	values := []int64{0, 1, 127, 128, 129, 255, 256, 1000, 1 << 20, 123456789, 1<<40 + 12345, math.MaxInt64 / 3, math.MaxInt64}
	for _, v := range values {
		i := bucketOf(v)
		if i < 0 || i >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d, outside [0,%d)", v, i, numBuckets)
		}
		hi := bucketHigh(i)
		if hi < v {
			t.Errorf("bucketHigh(bucketOf(%d)) = %d, below the value", v, hi)
		}
		if i > 0 && bucketHigh(i-1) >= v {
			t.Errorf("value %d also fits bucket %d (high %d)", v, i-1, bucketHigh(i-1))
		}
		if v >= subBuckets && float64(hi-v)/float64(v) > 1.0/halfBuckets {
			t.Errorf("value %d reported as %d: relative error over 1/%d", v, hi, halfBuckets)
		}
	}
}

func TestBucketsAreContiguous(t *testing.T) {
	for i := 1; i < bucketOf(math.MaxInt64); i++ {
		if lo := bucketHigh(i-1) + 1; bucketOf(lo) != i {
			t.Fatalf("value %d (just above bucket %d) lands in %d, want %d", lo, i-1, bucketOf(lo), i)
		}
	}
}

func TestQuantilesMatchSortedSample(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cases := []struct {
		name string
		gen  func() int64
	}{
		{"uniform µs", func() int64 { return rng.Int64N(int64(time.Millisecond)) }},
		{"exponential ms", func() int64 { return int64(rng.ExpFloat64() * float64(time.Millisecond)) }},
		{"small integers", func() int64 { return rng.Int64N(100) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h Histogram
			vals := make([]int64, 20000)
			for i := range vals {
				vals[i] = tc.gen()
				h.Record(vals[i])
			}
			slices.Sort(vals)
			for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
				exact := vals[int(math.Ceil(q*float64(len(vals))))-1]
				got := h.Quantile(q)
				if got < exact || float64(got-exact) > float64(exact)/halfBuckets+1 {
					t.Errorf("q%.3f = %d, exact %d", q, got, exact)
				}
			}
			if h.Max() != vals[len(vals)-1] || h.Count() != uint64(len(vals)) {
				t.Errorf("max %d count %d, want %d %d", h.Max(), h.Count(), vals[len(vals)-1], len(vals))
			}
		})
	}
}

func TestHistogramEdges(t *testing.T) {
	var empty Histogram
	if empty.Quantile(0.99) != 0 || empty.Summary().Count != 0 {
		t.Fatal("empty histogram should report zeros")
	}
	var h Histogram
	h.Record(-5) // a clock step counts as 0
	h.Record(int64(3 * time.Millisecond))
	s := h.Summary()
	if s.Count != 2 || s.Max != 3 || s.P50 != 0 {
		t.Fatalf("summary = %+v", s)
	}
	var a, b Histogram
	for i := int64(1); i <= 100; i++ {
		a.Record(i)
		b.Record(i + 1000)
	}
	a.Merge(&b)
	a.Merge(&empty)
	if a.Count() != 200 || a.Max() != 1100 || a.Quantile(0.25) > 51 || a.Quantile(0.75) < 1050 {
		t.Fatalf("merged: count %d max %d q25 %d q75 %d", a.Count(), a.Max(), a.Quantile(0.25), a.Quantile(0.75))
	}
}

func TestParsePayload(t *testing.T) {
	for _, want := range []payload{{T: 1733460000000000000, U: 7, K: 123}, {T: 0, U: 0, K: 0}, {T: -5, U: 999999, K: 1 << 40}} {
		got, ok := parsePayload(appendPayload(nil, want))
		if !ok || got != want {
			t.Fatalf("parsePayload(appendPayload(%+v)) = %+v, %v", want, got, ok)
		}
	}
	for _, s := range []string{`{"t":1,"u":2}`, `{"t":1,"u":2,"k":3} `, `{"u":2,"t":1,"k":3}`, `{"t":1,"u":-2,"k":3}`, `{"t":01x,"u":2,"k":3}`} {
		if _, ok := parsePayload([]byte(s)); ok {
			t.Errorf("parsePayload(%s) accepted it", s)
		}
	}
}
