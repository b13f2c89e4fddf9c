package syncbridge_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
)

// TestResponderStopRace: requests in progress on a Responder whose
// Shutdown (with a context that ends at a random moment) races its Close.
// Every request whose handler started gets its reply (a handler cancelled
// by Close answers with an error reply): none waits for its deadline.
func TestResponderStopRace(t *testing.T) {
	for trial := range 20 {
		t.Run(fmt.Sprint(trial), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(trial)))
			tr := newMemory(t)
			var mu sync.Mutex
			started := map[string]bool{}
			release := make(chan struct{})
			var opts []syncbridge.Option
			if trial%2 == 1 {
				opts = append(opts, syncbridge.WithConcurrentHandlers())
			}
			r := newResponder(t, tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
				mu.Lock()
				started[string(req.Value)] = true
				mu.Unlock()
				select {
				case <-release:
					return syncbridge.Message{Value: req.Value}, nil
				case <-ctx.Done():
					return syncbridge.Message{}, syncbridge.NewRemoteError("unavailable", ctx.Err().Error())
				}
			}, opts...)
			b := newBridge(t, tr)
			const n = 40
			calls := make([]*syncbridge.Call, n)
			for i := range calls {
				calls[i] = b.Go(ctxTimeout(t, time.Hour), syncbridge.Message{Topic: "req", Value: fmt.Appendf(nil, "r%d", i)})
			}
			for range rng.IntN(50) {
				runtime.Gosched()
			}
			sctx, cancel := context.WithCancel(context.Background())
			spins1, spins2, releaseFirst := rng.IntN(20), rng.IntN(20), rng.IntN(2) == 0
			var wg sync.WaitGroup
			wg.Add(3)
			go func() { defer wg.Done(); r.Shutdown(sctx) }()
			go func() {
				defer wg.Done()
				for range spins1 {
					runtime.Gosched()
				}
				if releaseFirst {
					close(release)
				} else {
					defer close(release)
				}
				cancel()
			}()
			go func() {
				defer wg.Done()
				for range spins2 {
					runtime.Gosched()
				}
				r.Close()
			}()
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			for i, c := range calls {
				if !started[fmt.Sprintf("r%d", i)] {
					c.Cancel() // never handed over: it stays queued
					continue
				}
				var re *syncbridge.RemoteError
				_, err := c.Wait(ctxTimeout(t, guard))
				if err != nil && (!errors.As(err, &re) || re.Code != "unavailable") {
					t.Errorf("request %d, handled: %v; want its reply", i, err)
				}
			}
			if st := r.Stats(); st.InProgress != 0 || st.ReplyFailed != 0 || st.ReplyExpired != 0 {
				t.Errorf("responder stats %+v", st)
			}
		})
	}
}
