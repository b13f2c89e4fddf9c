package memory_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

// TestSelfPublishTransportClose: handlers of every kind of subscription
// publish (two messages each, so that small queues fill) to their own
// topic while the transport closes. Close returns, every Publish returns,
// and nothing is left running (goleak), every time.
func TestSelfPublishTransportClose(t *testing.T) {
	kinds := []struct {
		cfg syncbridge.SubscribeConfig
		ack bool
	}{
		{syncbridge.SubscribeConfig{Topic: "t"}, false},
		{syncbridge.SubscribeConfig{Topic: "t", Concurrent: true}, false},
		{syncbridge.SubscribeConfig{Topic: "t", Group: "g"}, false},
		{syncbridge.SubscribeConfig{Topic: "t", Group: "g", Concurrent: true}, false},
		{syncbridge.SubscribeConfig{Topic: "t", Group: "g"}, true},
		{syncbridge.SubscribeConfig{Topic: "t", Group: "g", Concurrent: true}, true},
	}
	for _, k := range kinds {
		t.Run(fmt.Sprintf("group=%q,concurrent=%v,ack=%v", k.cfg.Group, k.cfg.Concurrent, k.ack), func(t *testing.T) {
			for i := range 50 {
				tr := &memory.Transport{QueueSize: 2, Partitions: 2}
				h := func(ctx context.Context, m syncbridge.Message) {
					if len(m.Value) < 12 {
						for _, c := range "ab" {
							tr.Publish(ctx, syncbridge.Message{Topic: "t", Key: []byte{byte(c)}, Value: append(m.Value[:len(m.Value):len(m.Value)], byte(c))})
						}
					}
				}
				var err error
				if k.ack {
					_, err = tr.SubscribeAck(context.Background(), k.cfg, func(ctx context.Context, m syncbridge.Message, ack func()) {
						if i%2 == 0 {
							defer ack()
						} else {
							go ack()
						}
						h(ctx, m)
					})
				} else {
					_, err = tr.Subscribe(context.Background(), k.cfg, h)
				}
				if err != nil {
					t.Fatal(err)
				}
				published := make(chan struct{})
				go func() {
					defer close(published)
					tr.Publish(context.Background(), syncbridge.Message{Topic: "t", Value: []byte("x")})
				}()
				for range i % 4 {
					runtime.Gosched() // let the chain start, more or less
				}
				closed := make(chan struct{})
				go func() { tr.Close(); close(closed) }()
				select {
				case <-closed:
				case <-time.After(5 * time.Second):
					t.Fatalf("trial %d: Close still waiting after 5 s: deadlock", i)
				}
				<-published
			}
		})
	}
}
