package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestHistBuckets: every value falls in the bucket whose bounds hold it,
// and a bucket is at most 1/histSub wider than its lower bound.
func TestHistBuckets(t *testing.T) {
	vals := []int64{0, 1, 63, 64, 65, 127, 128, 129, 1000, 1 << 20, 1<<20 + 1, 123456789, math.MaxInt64}
	for range 10000 {
		vals = append(vals, rand.Int64N(1<<uint(rand.IntN(62)+1)))
	}
	for _, v := range vals {
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("histIndex(%d) = %d, out of [0,%d)", v, i, histBuckets)
		}
		lo, hi := histBounds(i)
		if v < lo || v > hi {
			t.Fatalf("%d in bucket %d, whose bounds are [%d,%d]", v, i, lo, hi)
		}
		if float64(hi-lo) > float64(lo)/histSub {
			t.Fatalf("bucket %d is [%d,%d]: wider than 1/%d of its lower bound", i, lo, hi, histSub)
		}
	}
}

// TestHistQuantiles: quantiles of merged histograms are within 0.8 % of the
// exact ones; count, mean and max are exact.
func TestHistQuantiles(t *testing.T) {
	var all []time.Duration
	hs := make([]hist, 4)
	for i := range 200000 {
		// log-normal-ish: most around a few µs, a tail into milliseconds
		d := time.Duration(math.Exp(rand.NormFloat64()*1.5 + 8))
		all = append(all, d)
		hs[i%len(hs)].record(d)
	}
	for i := 1; i < len(hs); i++ {
		hs[0].merge(&hs[i])
	}
	h := &hs[0]
	slices.Sort(all)
	var sum int64
	for _, d := range all {
		sum += int64(d)
	}
	if h.n != int64(len(all)) || h.mean() != time.Duration(sum/int64(len(all))) || time.Duration(h.max) != all[len(all)-1] {
		t.Errorf("n %d mean %v max %v, want %d %v %v", h.n, h.mean(), time.Duration(h.max), len(all), time.Duration(sum/int64(len(all))), all[len(all)-1])
	}
	for _, q := range []float64{.5, .9, .99, .999, 1} {
		exact := all[int(q*float64(len(all))+0.5)-1]
		got := h.quantile(q)
		if rel := math.Abs(float64(got-exact)) / float64(exact); rel > 0.008 {
			t.Errorf("quantile(%v) = %v, exact %v: off by %.2f %%", q, got, exact, 100*rel)
		}
	}
	var empty hist
	if empty.quantile(.5) != 0 || empty.mean() != 0 {
		t.Error("an empty histogram has a non-zero quantile or mean")
	}
}
