package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

// scaleLevels are the numbers of requests held in flight.
var scaleLevels = []int{10, 1_000, 10_000, 100_000}

// scaleResult is one measurement at one level.
type scaleResult struct {
	n int
	// heapPerGo is the HeapAlloc growth per request in flight when n
	// requests were started with Bridge.Go (no goroutine per request).
	heapPerGo float64
	// heapPerReq and stackPerReq are the HeapAlloc and StackInuse growth per
	// request in flight when each of n goroutines blocks in Bridge.Request.
	heapPerReq, stackPerReq float64
	// probe is a sequential Request loop to an echo topic while the n
	// requests are held.
	probe run
	// drain is the time per held request from the release of the n replies
	// until every Call ended.
	drain time.Duration
}

// holder is a responder that answers nothing until told: it records the
// correlation ID of each request it receives (into memory allocated before
// the measurement) and signals once target requests arrived. Its handler
// returns at once, so the transport's queues stay empty and what is measured
// is what the requester side keeps per request.
type holder struct {
	ids    []byte // target slots of idSlot bytes
	lens   []uint16
	count  atomic.Int64
	target int64
	full   chan struct{}
	bad    atomic.Int64 // requests without a usable correlation ID
}

const idSlot = 64

func newHolder(capacity int) *holder {
	return &holder{ids: make([]byte, capacity*idSlot), lens: make([]uint16, capacity)}
}

// arm resets the holder to wait for n requests.
func (h *holder) arm(n int) {
	h.count.Store(0)
	h.target = int64(n)
	h.full = make(chan struct{})
}

func (h *holder) handle(_ context.Context, msg syncbridge.Message) {
	id, ok := msg.Header(hdrCorrelation)
	i := h.count.Add(1) - 1
	if !ok || len(id) > idSlot || i >= int64(len(h.lens)) {
		h.bad.Add(1)
		return
	}
	copy(h.ids[i*idSlot:], id)
	h.lens[i] = uint16(len(id))
	if i+1 == h.target {
		close(h.full)
	}
}

// release publishes the echo reply of every held request, from 8 goroutines.
func (h *holder) release(ctx context.Context, t syncbridge.Transport, payload []byte) error {
	n := int(h.count.Load())
	var wg sync.WaitGroup
	errs := make([]error, responders)
	for g := range responders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += responders {
				id := h.ids[i*idSlot : i*idSlot+int(h.lens[i])]
				err := t.Publish(ctx, syncbridge.Message{
					Topic:   syncbridge.DefaultReplyTopic,
					Value:   payload,
					Headers: []syncbridge.Header{{Key: hdrCorrelation, Value: id}},
				})
				if err != nil {
					errs[g] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// heapStack returns HeapAlloc and StackInuse once the heap has settled:
// it collects until two collections in a row find the same heap (within
// 1 %, or 64 KiB), so that memory freed only by a later cycle (finalizers,
// cleanups, pools' victim caches, goroutines still exiting) does not count.
func heapStack() (heap, stack uint64) {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	for range 10 {
		prev := m.HeapAlloc
		runtime.Gosched()
		runtime.GC()
		runtime.ReadMemStats(&m)
		d := max(prev, m.HeapAlloc) - min(prev, m.HeapAlloc)
		if d <= 64<<10 || d <= prev/100 {
			break
		}
	}
	return m.HeapAlloc, m.StackInuse
}

// waitInFlight checks, with the Bridge's own counters, that n requests are
// in flight and registered. The holder has seen all n, so they must be: no
// waiting is needed, and none is done.
func waitInFlight(b *syncbridge.Bridge, n int) error {
	if got := b.Stats().InFlight; got != n {
		return fmt.Errorf("Stats().InFlight = %d, want %d", got, n)
	}
	if got := b.Stats().Waiting; got != n {
		return fmt.Errorf("Bridge.Stats().Waiting = %d, want %d", got, n)
	}
	return nil
}

// scaleOnce holds n requests in flight on a syncbridge Bridge over the memory
// transport and measures the memory they take and the latency of other
// requests meanwhile.
func scaleOnce(n, probeOps int) (scaleResult, error) {
	res := scaleResult{n: n}
	t := &memory.Transport{Partitions: responders}
	defer t.Close()
	resp, err := syncbridge.NewResponder(context.Background(), t, "echo", echoHandler)
	if err != nil {
		return res, err
	}
	defer resp.Close()
	hold := newHolder(n)
	sub, err := t.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "hold", Group: "hold"}, hold.handle)
	if err != nil {
		return res, err
	}
	defer sub.Close()
	b, err := syncbridge.New(context.Background(), t)
	if err != nil {
		return res, err
	}
	defer b.Close()
	probe := bridgeReq{b: b, topic: "echo"}
	payload := newPayload()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	msg := syncbridge.Message{Topic: "hold", Value: payload}

	// Warm up: pools, maps, goroutines of the transport.
	if r := drive(probe, load{callers: 1, maxOps: 2000}); r.errs > 0 {
		return res, fmt.Errorf("warm-up: %w", r.firstErr)
	}

	// 1. Bridge.Go: n Calls, no goroutines.
	calls := make([]*syncbridge.Call, n)
	hold.arm(n)
	h0, _ := heapStack()
	for i := range calls {
		calls[i] = b.Go(ctx, msg)
	}
	<-hold.full
	if err := waitInFlight(b, n); err != nil {
		return res, err
	}
	h1, _ := heapStack()
	res.heapPerGo = (float64(h1) - float64(h0)) / float64(n)
	res.probe = drive(probe, load{callers: 1, maxOps: int64(probeOps)})
	if res.probe.errs > 0 {
		return res, fmt.Errorf("probe: %w", res.probe.firstErr)
	}
	t0 := time.Now()
	if err := hold.release(ctx, t, payload); err != nil {
		return res, err
	}
	for _, c := range calls {
		<-c.Done()
	}
	res.drain = time.Since(t0) / time.Duration(n)
	for _, c := range calls {
		if _, err := c.Result(); err != nil {
			return res, fmt.Errorf("held Call: %w", err)
		}
	}
	clear(calls)

	// 2. Bridge.Request: one goroutine blocked per request.
	hold.arm(n)
	h0, s0 := heapStack()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.Request(ctx, msg); err != nil {
				failed.Add(1)
			}
		}()
	}
	<-hold.full
	if err := waitInFlight(b, n); err != nil {
		return res, err
	}
	h1, s1 := heapStack()
	res.heapPerReq = (float64(h1) - float64(h0)) / float64(n)
	res.stackPerReq = (float64(s1) - float64(s0)) / float64(n)
	if err := hold.release(ctx, t, payload); err != nil {
		return res, err
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		return res, fmt.Errorf("%d held Requests failed", f)
	}
	if bad := hold.bad.Load(); bad > 0 {
		return res, fmt.Errorf("holder got %d requests without a correlation ID", bad)
	}
	return res, nil
}
