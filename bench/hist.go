package main

import (
	"math/bits"
	"time"
)

// hist is a latency histogram with log-linear buckets: values below
// histSub nanoseconds each have a bucket of their own, and every power of
// two above is split into histSub buckets, so that a bucket is at most
// 1/histSub (1.6 %) wider than its lower bound. It also keeps the exact
// count, sum and maximum. Recording is a few instructions and never
// allocates, so that every request of a run can be timed; a hist is not
// safe for concurrent use (each caller has its own, merged after the run).
type hist struct {
	counts [histBuckets]uint32
	n      int64
	sum    int64 // ns
	max    int64 // ns
}

const (
	histSubBits = 6
	histSub     = 1 << histSubBits
	// histBuckets covers every int64 value: bits.Len64 is at most 64.
	histBuckets = (64 - histSubBits + 1) * histSub
)

// histIndex returns the bucket of v ≥ 0.
func histIndex(v int64) int {
	u := uint64(v)
	if u < histSub {
		return int(u)
	}
	e := bits.Len64(u) - histSubBits - 1 // u>>e is in [histSub, 2·histSub)
	return (e+1)*histSub + int(u>>e) - histSub
}

// histBounds returns the smallest and largest value of bucket i.
func histBounds(i int) (lo, hi int64) {
	if i < histSub {
		return int64(i), int64(i)
	}
	e := i/histSub - 1
	m := int64(i%histSub + histSub)
	return m << e, (m+1)<<e - 1
}

// record adds one latency.
func (h *hist) record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[histIndex(v)]++
	h.n++
	h.sum += v
	if v > h.max {
		h.max = v
	}
}

// merge adds o's latencies to h.
func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile (0 < q ≤ 1): the middle of the bucket
// holding the ⌈q·n⌉-th smallest latency, clamped to the maximum, so within
// 0.8 % of the exact value above 64 ns (exact below).
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(q*float64(h.n) + 0.5)
	rank = max(1, min(rank, h.n))
	var seen int64
	for i, c := range h.counts {
		seen += int64(c)
		if seen >= rank {
			lo, hi := histBounds(i)
			return time.Duration(min(lo+(hi-lo)/2, h.max))
		}
	}
	return time.Duration(h.max)
}

// mean returns the mean latency.
func (h *hist) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / h.n)
}
