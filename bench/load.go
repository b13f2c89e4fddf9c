package main

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// payloadSize is the request payload of every contender.
const payloadSize = 100

// newPayload returns the 100-byte payload every contender sends.
func newPayload() []byte {
	p := make([]byte, payloadSize)
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	return p
}

// requester is one contender's client side: Request sends payload and
// returns the echoed reply. It must be safe for concurrent use.
type requester interface {
	Request(ctx context.Context, payload []byte) ([]byte, error)
}

// contender is a requester with its setup and teardown. Setup is done once;
// the same requester serves every round.
type contender struct {
	name string // short name used in benchmark names and tables
	desc string // what it is, for the table
	// maxSeq caps the requests of one sequential run (0: no cap), for
	// contenders that take a second per request.
	maxSeq int64
	r      requester
	close  func() error
	// brokerCounts, when set, returns how many produce and fetch requests
	// the broker has received so far (kfake only).
	brokerCounts func() (produce, fetch int64)
}

// run is the outcome of one load run.
type run struct {
	ops     int64
	errs    int64
	elapsed time.Duration
	cpu     time.Duration // CPU time of the whole process during the run
	// The latency distribution of every request of the run (each is
	// timed): percentiles to within 0.8 % (see hist), the exact maximum
	// and mean.
	p50, p99, p999, max, mean time.Duration
	firstErr                  error
	// mallocs is the number of heap allocations of the whole process
	// during the run (-1 when not known: results saved before it was).
	mallocs int64
	// produces and fetches are the broker's requests during the run, -1
	// when not known.
	produces, fetches int64
}

// nsPerOp is the wall time per completed request over the whole run: for
// concurrent callers it is the inverse of throughput.
func (r run) nsPerOp() float64 {
	if r.ops == 0 {
		return 0
	}
	return float64(r.elapsed.Nanoseconds()) / float64(r.ops)
}

// cpuPerOp is the process's CPU time per completed request, in ns: every
// goroutine of the process counts (responders, and an in-process broker).
func (r run) cpuPerOp() float64 {
	if r.ops == 0 {
		return 0
	}
	return float64(r.cpu.Nanoseconds()) / float64(r.ops)
}

// allocsPerOp is the process's heap allocations per completed request.
func (r run) allocsPerOp() float64 { return perOp(r.mallocs, r.ops) }

// meanLat is the mean latency: measured, or for results saved before every
// request was timed, by Little's law (callers × ns/op, for 64 callers).
func (r run) meanLat(callers int) time.Duration {
	if r.mean > 0 {
		return r.mean
	}
	return time.Duration(float64(callers) * r.nsPerOp())
}

// perSec is the throughput in requests per second.
func (r run) perSec() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

// pct returns the median (q = .5), the 99th (q = .99) or the 99.9th
// percentile (q = .999) of the latencies.
func (r run) pct(q float64) time.Duration {
	switch q {
	case .5:
		return r.p50
	case .99:
		return r.p99
	case .999:
		return r.p999
	}
	panic("bench: no such percentile")
}

// load says how to drive a requester.
type load struct {
	callers int           // concurrent callers, each sending one request at a time
	dur     time.Duration // how long to run (0: until maxOps)
	maxOps  int64         // stop after this many requests (0: no cap)
	timeout time.Duration // each caller's context deadline, beyond the run
}

// drive runs l against r. Each caller gets one context with a deadline (the
// run's end plus l.timeout), created before the clock starts, so that no
// contender pays for creating contexts inside the measured loop, and every
// contender sees a deadline. With l.maxOps the callers take requests from
// one shared count, so that every caller keeps sending until the count is
// spent: with a share fixed beforehand, the callers an unfair contender
// serves fast would finish early, and the end of the run, with fewer
// callers in flight, would flatter its mean and tail. Every
// request is timed (two clock reads, the same for every contender) into a
// histogram of its caller's, allocated beforehand: recording neither
// allocates nor shares memory between callers.
func drive(r requester, l load) run {
	if l.callers < 1 {
		l.callers = 1
	}
	if l.timeout == 0 {
		l.timeout = 30 * time.Second
	}
	var (
		stop    atomic.Bool
		errOnce sync.Once
		first   error
		wg      sync.WaitGroup
		start   = make(chan struct{})
	)
	lats := make([]hist, l.callers)
	ops := make([]int64, l.callers)
	errs := make([]int64, l.callers)
	payload := newPayload()
	deadline := time.Now().Add(l.dur + l.timeout)
	var left atomic.Int64 // requests not yet started, with l.maxOps
	left.Store(l.maxOps)
	limited := l.maxOps > 0
	for c := range l.callers {
		wg.Add(1)
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		go func() {
			defer wg.Done()
			defer cancel()
			var n, failed int64
			mine := &lats[c]
			defer func() { ops[c], errs[c] = n, failed }()
			<-start
			for !stop.Load() && (!limited || left.Add(-1) >= 0) {
				t0 := time.Now()
				reply, err := r.Request(ctx, payload)
				mine.record(time.Since(t0))
				if err == nil && !bytes.Equal(reply, payload) {
					err = fmt.Errorf("reply of %d bytes is not the echo of the %d-byte payload", len(reply), len(payload))
				}
				if err != nil {
					failed++
					errOnce.Do(func() { first = err })
					if ctx.Err() != nil {
						return
					}
					continue
				}
				n++
			}
		}()
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mallocs0 := ms.Mallocs
	cpu0 := selfCPU()
	t0 := time.Now()
	close(start)
	var timer *time.Timer
	if l.dur > 0 {
		timer = time.AfterFunc(l.dur, func() { stop.Store(true) })
	}
	wg.Wait()
	elapsed := time.Since(t0)
	cpu := selfCPU() - cpu0
	if timer != nil {
		timer.Stop()
	}
	runtime.ReadMemStats(&ms)
	res := run{elapsed: elapsed, cpu: cpu, firstErr: first, mallocs: int64(ms.Mallocs - mallocs0)}
	all := &lats[0]
	for c := range l.callers {
		if c > 0 {
			all.merge(&lats[c])
		}
		res.ops += ops[c]
		res.errs += errs[c]
	}
	res.p50, res.p99, res.p999 = all.quantile(.5), all.quantile(.99), all.quantile(.999)
	res.max, res.mean = time.Duration(all.max), all.mean()
	return res
}
