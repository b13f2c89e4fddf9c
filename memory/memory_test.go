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
