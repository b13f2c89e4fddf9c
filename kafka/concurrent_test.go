package kafka_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
)

func init() {
	moreBenchKinds = append(moreBenchKinds, benchKind{"syncbridge/echo=syncbridge-concurrent", sbReq, startSBConcurrentEcho})
}

// startSBConcurrentEcho is startSBEcho with a Concurrent subscription:
// handler calls for one partition may overlap.
func startSBConcurrentEcho(tb testing.TB, e *env, requests, replies string) func() {
	tr := e.transport(tb)
	sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: requests, Group: "echo-" + requests, Concurrent: true}, func(ctx context.Context, m syncbridge.Message) {
		_ = tr.Publish(ctx, syncbridge.Message{Topic: replies, Value: m.Value, Headers: m.Headers})
	})
	if err != nil {
		tb.Fatal(err)
	}
	return func() { _ = sub.Close(); _ = tr.Close() }
}

// A Concurrent group subscription overlaps handler calls within one
// partition, and a member that closes commits only what every call below
// it finished: a new member handles the rest.
func TestGroupConcurrent(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(t, 1)
	group := "concurrent-" + topic
	ctx := testCtx(t, 60*time.Second)
	pub := e.transport(t)
	const n = 40
	for i := range n {
		if err := pub.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	// The first member holds message 0 until 8 handler calls overlap, then
	// until it is closed; every other call returns at once.
	c := newCounter()
	h := c.handler("first")
	var mu sync.Mutex
	inCall, maxInCall := 0, 0
	overlapped := make(chan struct{})
	var once sync.Once
	sub1, err := e.transport(t).Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic, Group: group, Concurrent: true}, func(ctx context.Context, m syncbridge.Message) {
		mu.Lock()
		inCall++
		maxInCall = max(maxInCall, inCall)
		if maxInCall >= 8 {
			once.Do(func() { close(overlapped) })
		}
		mu.Unlock()
		if string(m.Value) == "0" {
			<-ctx.Done() // holds the oldest offset until Close
		} else {
			select {
			case <-overlapped:
			case <-ctx.Done():
			}
			h(ctx, m)
		}
		mu.Lock()
		inCall--
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-overlapped:
	case <-ctx.Done():
		t.Fatal("handler calls never overlapped")
	}
	c.waitFor(t, "first", n-1, 30*time.Second)
	// Message 0's call returns when Close cancels it: it counts as
	// handled, so the commit covers all 40 and the next member gets none
	// of them again. The point is that nothing is lost and Close waited.
	if err := sub1.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if inCall != 0 {
		t.Errorf("%d handler calls in progress after Close", inCall)
	}
	mu.Unlock()
	for i := n; i < n+10; i++ {
		if err := pub.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	sub2, err := e.transport(t).Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic, Group: group, Concurrent: true}, c.handler("second"))
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Close()
	c.waitFor(t, "second", 10, 30*time.Second)
	c.waitDistinct(t, n+9, 30*time.Second) // all but "0", which h never saw
	if d := c.duplicates(); d != 0 {
		t.Errorf("%d messages handled twice", d)
	}
}
