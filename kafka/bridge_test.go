package kafka_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

func echo(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
	return syncbridge.Message{Value: req.Value}, nil
}

func newResponder(t *testing.T, tr *kafka.Transport, topic, group string) *syncbridge.Responder {
	t.Helper()
	r, err := syncbridge.NewResponder(context.Background(), tr, topic, echo, syncbridge.WithGroup(group))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func newBridge(t *testing.T, tr *kafka.Transport, opts ...syncbridge.Option) *syncbridge.Bridge {
	t.Helper()
	b, err := syncbridge.New(context.Background(), tr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// routeLoad sends n requests with distinct payloads from c callers spread
// over bridges and counts misrouted and lost ones.
func routeLoad(t *testing.T, bridges []*syncbridge.Bridge, topic string, n, c int) (misrouted, lost int64) {
	t.Helper()
	var mis, lst atomic.Int64
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	var firstErr sync.Once
	for w := range c {
		wg.Go(func() {
			b := bridges[w%len(bridges)]
			for i := range next {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				want := fmt.Sprintf("payload %d via bridge %d", i, w%len(bridges))
				reply, err := b.Request(ctx, syncbridge.Message{Topic: topic, Key: []byte(want), Value: []byte(want)})
				cancel()
				switch {
				case err != nil:
					lst.Add(1)
					firstErr.Do(func() { t.Errorf("request %d: %v", i, err) })
				case string(reply.Value) != want:
					mis.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return mis.Load(), lst.Load()
}

// Three Bridges share one reply topic and two Responders share the
// requests: every request gets its own reply.
func TestBridgeRouting(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	for _, pinned := range []bool{false, true} {
		t.Run(fmt.Sprintf("pinned=%v", pinned), func(t *testing.T) {
			e := newEnv(t)
			requests, replies := e.topic(t, 4), e.topic(t, 4)
			group := "routing-" + requests
			newResponder(t, e.transport(t), requests, group)
			newResponder(t, e.transport(t), requests, group)
			var bridges []*syncbridge.Bridge
			for i := range 3 {
				opts := []syncbridge.Option{syncbridge.WithReplyTopic(replies)}
				if pinned {
					opts = append(opts, syncbridge.WithReplyPartitions(int32(i)))
				}
				bridges = append(bridges, newBridge(t, e.transport(t), opts...))
			}
			start := time.Now()
			mis, lost := routeLoad(t, bridges, requests, n, 48)
			t.Logf("%d requests in %v: %d misrouted, %d lost", n, time.Since(start).Round(time.Millisecond), mis, lost)
			if mis != 0 || lost != 0 {
				t.Errorf("%d misrouted, %d lost, want 0 and 0", mis, lost)
			}
			for i, b := range bridges {
				st := b.Stats()
				if pinned && st.Dropped != (syncbridge.DroppedReplies{}) {
					t.Errorf("pinned bridge %d dropped %v, want none", i, st.Dropped)
				}
			}
		})
	}
}

// A Bridge's reply subscription is positioned before New returns: a
// request sent right away, to a responder that answers at once, gets its
// reply.
func TestBridgeStartup(t *testing.T) {
	e := newEnv(t)
	requests, replies := e.topic(t, 4), e.topic(t, 4)
	newResponder(t, e.transport(t), requests, "startup-"+requests)
	tr := e.transport(t)
	// Warm the responder up, so that it answers instantly.
	warm := newBridge(t, tr, syncbridge.WithReplyTopic(replies))
	ctx := testCtx(t, 60*time.Second)
	if _, err := warm.Request(ctx, syncbridge.Message{Topic: requests, Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		b, err := syncbridge.New(context.Background(), e.transport(t), syncbridge.WithReplyTopic(replies))
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		want := fmt.Sprintf("first request of bridge %d", i)
		reply, err := b.Request(rctx, syncbridge.Message{Topic: requests, Value: []byte(want)})
		cancel()
		_ = b.Close()
		if err != nil {
			t.Fatalf("bridge %d: %v", i, err)
		}
		if string(reply.Value) != want {
			t.Fatalf("bridge %d: reply %q, want %q", i, reply.Value, want)
		}
	}
}
