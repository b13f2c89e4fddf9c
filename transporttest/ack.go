package transporttest

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
)

// The checks of an AckSubscriber (syncbridge.AckSubscriber); each skips
// when the transport is not one.

func ackSubscriber(t *testing.T, tr syncbridge.Transport) syncbridge.AckSubscriber {
	t.Helper()
	as, ok := tr.(syncbridge.AckSubscriber)
	if !ok {
		t.Skipf("%T is not a syncbridge.AckSubscriber", tr)
	}
	return as
}

func subscribeAck(t *testing.T, as syncbridge.AckSubscriber, cfg syncbridge.SubscribeConfig, h syncbridge.AckHandler) syncbridge.Subscription {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub, err := as.SubscribeAck(ctx, cfg, h)
	if err != nil {
		t.Fatalf("SubscribeAck(%+v): %v", cfg, err)
	}
	return sub
}

// testAckPipelines: a group subscription's handler gets the next message
// of a partition once its call for the previous one returned, before the
// previous one is acked; and a broadcast subscription's too.
func testAckPipelines(t *testing.T, s Setup) {
	for _, group := range []string{"g", ""} {
		t.Run(fmt.Sprintf("group=%q", group), func(t *testing.T) {
			tr, topic := s.New(t), s.Topic(t)
			as := ackSubscriber(t, tr)
			const n = 5
			var (
				mu   sync.Mutex
				acks []func()
			)
			all := make(chan struct{})
			sub := subscribeAck(t, as, syncbridge.SubscribeConfig{Topic: topic, Group: group}, func(_ context.Context, m syncbridge.Message, ack func()) {
				mu.Lock()
				defer mu.Unlock()
				acks = append(acks, ack) // acked only once all n were delivered
				if len(acks) == n {
					close(all)
				}
			})
			defer func() {
				mu.Lock()
				for _, ack := range acks {
					ack()
				}
				mu.Unlock()
				if err := sub.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()
			for i := range n {
				publish(t, tr, syncbridge.Message{Topic: topic, Key: []byte("same"), Value: strconv.AppendInt(nil, int64(i), 10)})
			}
			select {
			case <-all:
			case <-time.After(s.Timeout):
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("%d of %d messages of one key delivered while none was acked, want all: the next is delivered once the call returned", len(acks), n)
			}
		})
	}
}

// testAckOrder: without Concurrent, calls for one key are sequential and
// in order even though the messages are acked out of order, later, from
// other goroutines; every message is delivered once.
func testAckOrder(t *testing.T, s Setup) {
	tr, topic := s.New(t), s.Topic(t)
	as := ackSubscriber(t, tr)
	const keys, perKey = 4, 25
	var (
		mu      sync.Mutex
		got     = map[string][]int{}
		inCall  = map[string]bool{}
		overlap bool
		held    []func()
		count   int
	)
	all := make(chan struct{})
	var ackers sync.WaitGroup
	sub := subscribeAck(t, as, syncbridge.SubscribeConfig{Topic: topic, Group: "g"}, func(_ context.Context, m syncbridge.Message, ack func()) {
		k := string(m.Key)
		mu.Lock()
		if inCall[k] {
			overlap = true
		}
		inCall[k] = true
		v, _ := strconv.Atoi(string(m.Value))
		got[k] = append(got[k], v)
		held = append(held, ack)
		count++
		if count == keys*perKey {
			close(all)
		}
		if len(held) == 3 { // ack three at a time, newest first, elsewhere
			batch := held
			held = nil
			ackers.Go(func() {
				for _, a := range slices.Backward(batch) {
					a()
				}
			})
		}
		inCall[k] = false
		mu.Unlock()
	})
	for i := range perKey {
		for k := range keys {
			publish(t, tr, syncbridge.Message{Topic: topic, Key: fmt.Appendf(nil, "k%d", k), Value: strconv.AppendInt(nil, int64(i), 10)})
		}
	}
	select {
	case <-all:
	case <-time.After(s.Timeout):
		mu.Lock()
		t.Errorf("%d of %d messages delivered", count, keys*perKey)
		mu.Unlock()
	}
	mu.Lock()
	rest := held
	held = nil
	mu.Unlock()
	for _, a := range rest {
		a()
	}
	ackers.Wait()
	if err := sub.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if overlap {
		t.Error("handler calls for one key overlapped without Concurrent")
	}
	for k, vs := range got {
		if !slices.IsSorted(vs) || len(vs) != perKey {
			t.Errorf("key %s: delivered %v, want 0…%d in order, once each", k, vs, perKey-1)
		}
	}
}

// testAckCloseWaits: Close returns only once the messages handed out are
// acked, and handler calls in progress have returned; ack may come from
// another goroutine after the call returned.
func testAckCloseWaits(t *testing.T, s Setup) {
	for _, cfg := range []syncbridge.SubscribeConfig{{Group: "g"}, {Group: "g", Concurrent: true}, {}} {
		t.Run(fmt.Sprintf("group=%q,concurrent=%v", cfg.Group, cfg.Concurrent), func(t *testing.T) {
			tr := s.New(t)
			cfg.Topic = s.Topic(t)
			as := ackSubscriber(t, tr)
			type delivery struct {
				ctx context.Context
				ack func()
			}
			got := make(chan delivery, 1)
			sub := subscribeAck(t, as, cfg, func(ctx context.Context, m syncbridge.Message, ack func()) {
				got <- delivery{ctx, ack}
			})
			publish(t, tr, syncbridge.Message{Topic: cfg.Topic, Key: []byte("k"), Value: []byte("x")})
			var d delivery
			select {
			case d = <-got:
			case <-time.After(s.Timeout):
				sub.Close()
				t.Fatal("no message delivered")
			}
			closed := make(chan error, 1)
			go func() { closed <- sub.Close() }()
			// Close has begun once it cancels the handler's context; it must
			// then still wait for the ack. A Close that does not returns
			// within the second given to it here.
			select {
			case <-d.ctx.Done():
			case <-time.After(s.Timeout):
				t.Fatal("Close did not cancel the handler's context")
			}
			select {
			case err := <-closed:
				d.ack()
				t.Fatalf("Close returned (%v) before the message handed out was acked", err)
			case <-time.After(time.Second):
			}
			d.ack()
			d.ack() // a second call does nothing
			select {
			case err := <-closed:
				if err != nil {
					t.Errorf("Close: %v", err)
				}
			case <-time.After(s.Timeout):
				t.Fatal("Close did not return after the ack")
			}
		})
	}
}
