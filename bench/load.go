package main

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"slices"
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
	ops      int64
	errs     int64
	elapsed  time.Duration
	cpu      time.Duration // CPU time of the whole process during the run
	p50, p99 time.Duration // of the sampled latencies
	firstErr error
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

// perSec is the throughput in requests per second.
func (r run) perSec() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

// pct returns the median (q = .5) or the 99th percentile (q = .99) of the
// sampled latencies.
func (r run) pct(q float64) time.Duration {
	if q == .5 {
		return r.p50
	}
	return r.p99
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

// load says how to drive a requester.
type load struct {
	callers     int           // concurrent callers, each sending one request at a time
	dur         time.Duration // how long to run (0: until maxOps)
	maxOps      int64         // stop after this many requests (0: no cap)
	sampleEvery int           // time one request in sampleEvery (1: all)
	timeout     time.Duration // each caller's context deadline, beyond the run
}

// drive runs l against r. Each caller gets one context with a deadline (the
// run's end plus l.timeout), created before the clock starts, so that no
// contender pays for creating contexts inside the measured loop, and every
// contender sees a deadline. With l.maxOps the requests are split evenly
// between the callers beforehand: no shared counter in the loop.
func drive(r requester, l load) run {
	if l.callers < 1 {
		l.callers = 1
	}
	if l.sampleEvery < 1 {
		l.sampleEvery = 1
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
	lats := make([][]time.Duration, l.callers)
	ops := make([]int64, l.callers)
	errs := make([]int64, l.callers)
	payload := newPayload()
	deadline := time.Now().Add(l.dur + l.timeout)
	for c := range l.callers {
		budget := int64(-1)
		if l.maxOps > 0 {
			budget = l.maxOps / int64(l.callers)
			if int64(c) < l.maxOps%int64(l.callers) {
				budget++
			}
		}
		wg.Add(1)
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		go func() {
			defer wg.Done()
			defer cancel()
			var (
				mine      []time.Duration
				n, failed int64
			)
			defer func() { lats[c], ops[c], errs[c] = mine, n, failed }()
			<-start
			for i := 0; i != int(budget) && !stop.Load(); i++ {
				timed := i%l.sampleEvery == 0
				var t0 time.Time
				if timed {
					t0 = time.Now()
				}
				reply, err := r.Request(ctx, payload)
				if timed {
					mine = append(mine, time.Since(t0))
				}
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
	res := run{elapsed: elapsed, cpu: cpu, firstErr: first}
	var all []time.Duration
	for c := range l.callers {
		all = append(all, lats[c]...)
		res.ops += ops[c]
		res.errs += errs[c]
	}
	slices.Sort(all)
	res.p50, res.p99 = quantile(all, .5), quantile(all, .99)
	return res
}
