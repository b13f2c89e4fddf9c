package kafka_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
)

// A rolling deploy: two of three Responders of a group are replaced one
// after the other, each with Shutdown, under load. Shutdown finishes the
// requests in progress, replies, commits and leaves the group, so that the
// others take its partitions at once: no request fails.
func TestRollingDeploy(t *testing.T) {
	e := newEnv(t)
	const parts = 6
	requests, replies := e.topic(t, parts), e.topic(t, parts)
	group := "deploy-" + requests
	ctx := testCtx(t, 5*time.Minute)

	var handledMu sync.Mutex // protects handled
	handled := make(map[string]int)
	handler := func(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		handledMu.Lock()
		handled[string(req.Value)]++
		handledMu.Unlock()
		return syncbridge.Message{Value: req.Value}, nil
	}
	start := func() *syncbridge.Responder {
		t.Helper()
		r, err := syncbridge.NewResponder(ctx, e.transport(t), requests, handler, syncbridge.WithGroup(group), syncbridge.WithConcurrentHandlers())
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	rs := []*syncbridge.Responder{start(), start(), start()}
	defer func() {
		for _, r := range rs {
			_ = r.Close()
		}
	}()
	b := newBridge(t, e.transport(t), syncbridge.WithReplyTopic(replies))
	for p := range int32(parts) { // every partition has its member
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		_, err := b.Request(rctx, syncbridge.Message{Topic: requests, Partition: p, UsePartition: true, Value: []byte(fmt.Sprint("warm-", p))})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}

	const timeout = 2 * time.Second
	var ok, failed atomic.Int64
	var seq atomic.Int64
	var phase atomic.Int32 // 0 before the deploy, i+1 from responder i's Shutdown on
	var byPhase [3]atomic.Int64
	loadStart := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				payload := fmt.Sprint("req-", seq.Add(1))
				rctx, cancel := context.WithTimeout(ctx, timeout)
				reply, err := b.Request(rctx, syncbridge.Message{Topic: requests, Value: []byte(payload)})
				cancel()
				if err != nil || string(reply.Value) != payload {
					ph := phase.Load()
					byPhase[ph].Add(1)
					if failed.Add(1) <= 5 {
						t.Errorf("request %s (phase %d, ended %v after the load began): %v", payload, ph, time.Since(loadStart).Round(time.Millisecond), err)
					}
					continue
				}
				ok.Add(1)
			}
		})
	}
	waitOK := func(n int64) {
		t.Helper()
		target := ok.Load() + n
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for ok.Load() < target {
			select {
			case <-tick.C:
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
		}
	}
	waitOK(300)
	var took []time.Duration
	for i := range 2 {
		phase.Store(int32(i + 1))
		began := time.Now()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := rs[i].Shutdown(sctx)
		cancel()
		if err != nil {
			t.Errorf("Shutdown of responder %d: %v", i, err)
		}
		took = append(took, time.Since(began))
		rs[i] = start()
		waitOK(300)
	}
	close(stop)
	wg.Wait()
	handledMu.Lock()
	dups := 0
	for _, n := range handled {
		if n > 1 {
			dups++
		}
	}
	handledMu.Unlock()
	t.Logf("rolling deploy of 2 of 3 responders under load (timeout %v): %d requests, %d failed (target 0), %d handled twice; Shutdown took %v; bridge %+v",
		timeout, ok.Load()+failed.Load(), failed.Load(), dups, took, b.Stats())
	if failed.Load() != 0 {
		t.Errorf("%d requests failed: %d before the deploy, %d from the first Shutdown on, %d from the second", failed.Load(), byPhase[0].Load(), byPhase[1].Load(), byPhase[2].Load())
	}
}
