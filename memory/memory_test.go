package memory_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
	"github.com/syncbridge/syncbridge/transporttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var topics atomic.Int64

func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Setup{
		New: func(t *testing.T) syncbridge.Transport {
			tr := &memory.Transport{Partitions: 4}
			t.Cleanup(func() { tr.Close() })
			return tr
		},
		Topic:      func(*testing.T) string { return fmt.Sprintf("topic-%d", topics.Add(1)) },
		Partitions: 4,
	})
}

// TestUseAfterClose: after Close, Publish and Subscribe fail with ErrClosed
// and no handler is called.
func TestUseAfterClose(t *testing.T) {
	tr := &memory.Transport{}
	ctx := context.Background()
	called := make(chan struct{}, 10)
	h := func(context.Context, syncbridge.Message) { called <- struct{}{} }
	for _, cfg := range []syncbridge.SubscribeConfig{{Topic: "t"}, {Topic: "t", Group: "g"}, {Topic: "t", Concurrent: true}} {
		sub, err := tr.Subscribe(ctx, cfg, h)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Publish(ctx, syncbridge.Message{Topic: "t"}); !errors.Is(err, memory.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	for _, cfg := range []syncbridge.SubscribeConfig{{Topic: "t"}, {Topic: "t", Group: "g"}, {Topic: "t", Concurrent: true}, {Topic: "new"}} {
		if sub, err := tr.Subscribe(ctx, cfg, h); !errors.Is(err, memory.ErrClosed) {
			t.Errorf("Subscribe(%+v) after Close: %v, want ErrClosed", cfg, err)
			if sub != nil {
				sub.Close()
			}
		}
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	select {
	case <-called:
		t.Error("a handler was called after Close")
	default:
	}
}

// TestConcurrentSelfPublishClose: a Concurrent broadcast handler that
// publishes to its own topic while the subscription closes does not
// deadlock (it did, when the handler ran under a read lock that Close's
// write lock queued behind).
func TestConcurrentSelfPublishClose(t *testing.T) {
	for range 300 {
		tr := &memory.Transport{}
		var sub syncbridge.Subscription
		var err error
		sub, err = tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "t", Concurrent: true}, func(ctx context.Context, m syncbridge.Message) {
			if len(m.Value) < 50 {
				tr.Publish(ctx, syncbridge.Message{Topic: "t", Value: append(m.Value, 'x')})
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		published := make(chan struct{})
		go func() {
			defer close(published)
			tr.Publish(context.Background(), syncbridge.Message{Topic: "t", Value: []byte("x")})
		}()
		sub.Close()
		<-published
		tr.Close()
	}
}

// TestErrorsSayNotSent: what memory refuses wraps syncbridge.ErrNotSent.
func TestErrorsSayNotSent(t *testing.T) {
	tr := &memory.Transport{Partitions: 2}
	defer tr.Close()
	for _, m := range []syncbridge.Message{{}, {Topic: "t", Partition: 7, UsePartition: true}} {
		if err := tr.Publish(context.Background(), m); !errors.Is(err, syncbridge.ErrNotSent) {
			t.Errorf("Publish(%+v) = %v, want ErrNotSent", m, err)
		}
	}
}

// TestManyTopics: with hundreds of topics, each made while others are in
// use, every message reaches its own topic's subscriptions and
// HasResponders knows every group (the topic lookup's snapshot and what is
// not in it yet).
func TestManyTopics(t *testing.T) {
	const n = 300
	tr := &memory.Transport{Partitions: 2}
	defer tr.Close()
	got := make([]chan string, n)
	for i := range n {
		got[i] = make(chan string, 2)
		name := fmt.Sprintf("t%d", i)
		for _, group := range []string{"", "g"} {
			sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: name, Group: group}, func(_ context.Context, m syncbridge.Message) {
				got[i] <- m.Topic + "/" + string(m.Value)
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
		}
		if err := tr.Publish(context.Background(), syncbridge.Message{Topic: name, Value: []byte(name)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		name := fmt.Sprintf("t%d", i)
		for range 2 {
			if m := <-got[i]; m != name+"/"+name {
				t.Errorf("topic %s got %q", name, m)
			}
		}
		if has, known := tr.HasResponders(name); !has || !known {
			t.Errorf("HasResponders(%q) = %v, %v", name, has, known)
		}
	}
	if has, known := tr.HasResponders("none"); has || !known {
		t.Errorf("HasResponders(none) = %v, %v", has, known)
	}
}
