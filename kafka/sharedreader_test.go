package kafka_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

// TestBridgesShareReader backs the README's routing advice: Bridges on one
// Transport share one reader of their reply topic, so 16 of them fetch the
// reply topic about as often as one does; 16 Bridges on a Transport each
// (as 16 processes) each fetch every reply. Counted by the broker (kfake):
// fetch requests naming the reply topic, per request.
func TestBridgesShareReader(t *testing.T) {
	e := newEnv(t)
	if e.cluster == nil {
		t.Skip("counts the broker's fetch requests: kfake only (go test work runs it)")
	}
	var (
		replyTopic atomic.Value // string
		fetches    atomic.Int64
	)
	replyTopic.Store("")
	e.cluster.ControlKey(kmsg.Fetch.Int16(), func(r kmsg.Request) (kmsg.Response, error, bool) {
		for _, tp := range r.(*kmsg.FetchRequest).Topics {
			if tp.Topic == replyTopic.Load().(string) {
				fetches.Add(1)
				break
			}
		}
		return nil, nil, false
	})
	reqTopic := e.topic(t, 4)
	rt := e.transport(t)
	resp, err := syncbridge.NewResponder(context.Background(), rt, reqTopic, func(_ context.Context, m *syncbridge.Message) (syncbridge.Message, error) {
		return syncbridge.Message{Value: m.Value}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Close()

	const requests = 160
	// run starts n Bridges (on one Transport when shared) on a fresh reply
	// topic and sends requests in turn from each, one at a time; it returns
	// the fetch requests naming the reply topic per request.
	run := func(n int, shared bool) float64 {
		rep := e.topic(t, 4)
		var (
			bs []*syncbridge.Bridge
			tr *kafka.Transport
		)
		for range n {
			if tr == nil || !shared {
				tr = e.transport(t)
			}
			b, err := syncbridge.New(context.Background(), tr, syncbridge.WithReplyTopic(rep))
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			bs = append(bs, b)
		}
		// Warm up every Bridge (the responder's group, the producers' metadata).
		for _, b := range bs {
			if _, err := b.Request(context.Background(), syncbridge.Message{Topic: reqTopic, Value: []byte("warm")}); err != nil {
				t.Fatal(err)
			}
		}
		replyTopic.Store(rep)
		defer replyTopic.Store("")
		start := fetches.Load()
		for i := range requests {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			v := fmt.Sprint(i)
			reply, err := bs[i%n].Request(ctx, syncbridge.Message{Topic: reqTopic, Value: []byte(v)})
			cancel()
			if err != nil || string(reply.Value) != v {
				t.Fatalf("request %d: reply %q, %v", i, reply.Value, err)
			}
		}
		return float64(fetches.Load()-start) / requests
	}
	one := run(1, false)
	shared := run(16, true)
	apart := run(16, false)
	t.Logf("reply-topic fetch requests per request: 1 Bridge %.2f; 16 Bridges on one Transport %.2f; 16 Bridges on a Transport each %.2f", one, shared, apart)
	if shared > 2*one {
		t.Errorf("16 Bridges on one Transport made %.2f fetch requests per request, over 2× one Bridge's %.2f: they do not share a reader", shared, one)
	}
	if apart < 8*one {
		t.Errorf("16 Bridges on a Transport each made %.2f fetch requests per request, under 8× one Bridge's %.2f: the test does not measure what it should", apart, one)
	}
}
