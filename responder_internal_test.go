package syncbridge

import (
	"context"
	"sync"
	"testing"
)

type nopSub struct{}

func (nopSub) Close() error { return nil }

type nopTransport struct{}

func (nopTransport) Publish(context.Context, Message) error { return nil }
func (nopTransport) Subscribe(context.Context, SubscribeConfig, Handler) (Subscription, error) {
	return nopSub{}, nil
}

// TestWaitingNoLeak: a handler whose goroutine asks for Done as the
// handler returns leaves nothing in the Responder's registry of contexts
// (it did, when Done registered after release had looked).
func TestWaitingNoLeak(t *testing.T) {
	var wg sync.WaitGroup
	r, err := NewResponder(context.Background(), nopTransport{}, "req", func(ctx context.Context, req *Message) (Message, error) {
		wg.Add(1)
		ready := make(chan struct{})
		go func() { defer wg.Done(); close(ready); <-ctx.Done() }()
		<-ready
		return Message{}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	h := DefaultHeaderNames()
	msg := Message{Topic: "req", Headers: []Header{{Key: h.CorrelationID, Value: []byte("x")}, {Key: h.ReplyTopic, Value: []byte("r")}}}
	for range 20000 {
		r.serve(context.Background(), msg)
	}
	wg.Wait()
	r.mu.Lock()
	n := len(r.waiting)
	r.mu.Unlock()
	if n != 0 {
		t.Errorf("%d handler contexts left registered after every handler returned", n)
	}
}
