package syncbridge_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

// settledHeap returns HeapAlloc once two collections in a row find the same
// heap (within 64 KiB), as the bench harness's scale section does.
func settledHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	for range 10 {
		prev := m.HeapAlloc
		runtime.GC()
		runtime.ReadMemStats(&m)
		if max(prev, m.HeapAlloc)-min(prev, m.HeapAlloc) <= 64<<10 {
			break
		}
	}
	return m.HeapAlloc
}

// inFlightBytes holds n Calls started by Go in flight, their requests
// received by a responder that does not answer, and returns the heap they
// take per Call; then it answers them all and checks that each ends with
// its reply.
func inFlightBytes(t testing.TB, n int, ctxOf func(i int) context.Context) float64 {
	tr := &memory.Transport{}
	defer tr.Close()
	b, err := syncbridge.New(context.Background(), tr)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ids := make([]byte, n*36) // the responder's record of correlation IDs, made beforehand
	var got, target atomic.Int64
	var all chan struct{}
	sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "hold", Group: "hold"}, func(_ context.Context, m syncbridge.Message) {
		id, _ := m.Header(syncbridge.DefaultHeaderNames().CorrelationID)
		i := got.Add(1) - 1
		copy(ids[i*36:(i+1)*36], id) // not id itself: it holds the request's headers
		if i+1 == target.Load() {
			close(all)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	msg := syncbridge.Message{Topic: "hold", Value: benchPayload}
	run := func(calls []*syncbridge.Call, ctxs []context.Context) (perCall float64) {
		got.Store(0)
		all = make(chan struct{})
		target.Store(int64(len(calls)))
		before := settledHeap()
		for i := range calls {
			calls[i] = b.Go(ctxs[i], msg)
		}
		<-all
		if s := b.Stats(); s.InFlight != len(calls) || s.Waiting != len(calls) {
			t.Fatalf("InFlight %d, Waiting %d; want %d", s.InFlight, s.Waiting, len(calls))
		}
		perCall = (float64(settledHeap()) - float64(before)) / float64(len(calls))
		for i := range calls {
			id := ids[i*36 : (i+1)*36]
			if err := tr.Publish(context.Background(), syncbridge.Message{Topic: syncbridge.DefaultReplyTopic, Value: id,
				Headers: []syncbridge.Header{{Key: syncbridge.DefaultHeaderNames().CorrelationID, Value: id}}}); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range calls {
			if _, err := c.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		return perCall
	}
	calls := make([]*syncbridge.Call, n)
	ctxs := make([]context.Context, n)
	for i := range ctxs {
		ctxs[i] = ctxOf(i)
	}
	run(calls[:1000], ctxs[:1000]) // warm up: topics, queues, pools
	clear(calls)
	return run(calls, ctxs)
}

// TestInFlightMemory: a Call started by Go and waiting for its reply takes
// at most 256 bytes of heap with 100,000 in flight (issue 11), its registry
// entry and the watch of its context and default timeout included, when
// the Calls share one context with a deadline (as in the bench harness's
// scale section) or have no deadline (the default timeout applies). It
// logs the figure for Calls with a cancellable context each (whose own
// memory, and the registration of the Call in it, count too), so that a
// regression shows.
func TestInFlightMemory(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's allocations are not the library's")
	}
	if testing.Short() {
		t.Skip("holds 100,000 requests")
	}
	const n = 100_000
	shared, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	own := make([]context.CancelFunc, 0, n)
	defer func() {
		for _, c := range own {
			c()
		}
	}()
	for _, tc := range []struct {
		name  string
		limit float64
		ctx   func(int) context.Context
	}{
		{"shared deadline", 256, func(int) context.Context { return shared }},
		{"no deadline", 256, func(int) context.Context { return context.Background() }},
		{"own cancel", 0, func(int) context.Context {
			ctx, c := context.WithCancel(context.Background())
			own = append(own, c)
			return ctx
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			per := inFlightBytes(t, n, tc.ctx)
			t.Logf("%.0f bytes per Call in flight", per)
			if tc.limit > 0 && per > tc.limit {
				t.Errorf("%.0f bytes per Call in flight, want <= %.0f", per, tc.limit)
			}
		})
	}
}
