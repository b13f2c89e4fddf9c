package syncbridge_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

type ctxKey struct{}

// recorder implements every request and handling hook: it adds a
// "trace" header to requests and a "trace-reply" header to replies,
// passes a value to the handler through the context, and records what it
// saw.
type recorder struct {
	mu      sync.Mutex
	starts  []syncbridge.RequestInfo
	ends    []syncbridge.RequestInfo
	handled []syncbridge.HandleInfo
}

func (r *recorder) OnRequestStart(i *syncbridge.RequestInfo) {
	i.Message.Headers = append(i.Message.Headers, syncbridge.Header{Key: "trace", Value: []byte("t-" + i.ID)})
	i.Context = context.WithValue(i.Context, ctxKey{}, "caller span")
	r.mu.Lock()
	r.starts = append(r.starts, *i)
	r.mu.Unlock()
}

func (r *recorder) OnRequestEnd(i *syncbridge.RequestInfo) {
	r.mu.Lock()
	r.ends = append(r.ends, *i)
	r.mu.Unlock()
}

func (r *recorder) OnHandleStart(i *syncbridge.HandleInfo) {
	v, _ := i.Request.Header("trace")
	i.Context = context.WithValue(i.Context, ctxKey{}, "process span of "+string(v))
}

func (r *recorder) OnReplyPublish(_ *syncbridge.HandleInfo, reply *syncbridge.Message) {
	reply.Headers = append(reply.Headers, syncbridge.Header{Key: "trace-reply", Value: []byte("r")})
}

func (r *recorder) OnHandleEnd(i *syncbridge.HandleInfo) {
	r.mu.Lock()
	r.handled = append(r.handled, *i)
	r.mu.Unlock()
}

func TestHooks(t *testing.T) {
	tr := &memory.Transport{}
	defer tr.Close()
	rec := &recorder{}
	seen := make(chan string, 1)
	r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		v, _ := ctx.Value(ctxKey{}).(string)
		seen <- v
		if _, ok := ctx.Deadline(); !ok {
			t.Error("the hook's context lost the deadline")
		}
		if string(req.Value) == "fail" {
			return syncbridge.Message{}, syncbridge.NewRemoteError("nope", "")
		}
		return syncbridge.Message{Value: req.Value}, nil
	}, syncbridge.WithHooks(rec))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := syncbridge.New(context.Background(), tr, syncbridge.WithHooks(rec), syncbridge.WithMaxInFlight(1))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	reply, err := b.Request(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req", Value: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := reply.Header("trace-reply"); !ok || string(v) != "r" {
		t.Errorf("reply headers %v: want the ReplyPublishHook's header", reply.Headers)
	}
	if v := <-seen; v != "process span of t-"+rec.starts[0].ID {
		t.Errorf("handler's context value %q, want the HandleStartHook's, made from the request's header", v)
	}
	_, err = b.Request(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req", Value: []byte("fail")})
	<-seen
	var re *syncbridge.RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("want a RemoteError, got %v", err)
	}
	// A request refused at once gets an end hook and no start hook.
	hold := b.Go(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "nobody"})
	if _, err := b.Request(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req"}); !errors.Is(err, syncbridge.ErrOverloaded) {
		t.Fatalf("want ErrOverloaded, got %v", err)
	}
	hold.Cancel()
	r.Close() // every OnHandleEnd has run

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.starts) != 3 || len(rec.ends) != 4 {
		t.Fatalf("%d start and %d end hooks, want 3 and 4", len(rec.starts), len(rec.ends))
	}
	want := []struct {
		o       syncbridge.Outcome
		reply   bool
		message bool
	}{{syncbridge.OutcomeReply, true, true}, {syncbridge.OutcomeRemoteError, true, true}, {syncbridge.OutcomeOverloaded, false, false}, {syncbridge.OutcomeCanceled, false, true}}
	for i, e := range rec.ends {
		w := want[i]
		if e.Outcome != w.o || (e.Reply != nil) != w.reply || (e.Message != nil) != w.message {
			t.Errorf("end %d: outcome %v, reply %v, message %v; want %v, %v, %v", i, e.Outcome, e.Reply != nil, e.Message != nil, w.o, w.reply, w.message)
		}
		if e.Duration <= 0 || e.Start.IsZero() {
			t.Errorf("end %d: duration %v, start %v", i, e.Duration, e.Start)
		}
		// On the memory transport a reply can end the request before
		// Publish returns: then the publish duration is unknown (zero).
		if e.PublishDuration < 0 || e.PublishDuration > e.Duration || (e.Outcome == syncbridge.OutcomeCanceled && e.PublishDuration == 0) {
			t.Errorf("end %d: publish duration %v of %v", i, e.PublishDuration, e.Duration)
		}
		if v, _ := e.Context.Value(ctxKey{}).(string); w.message && v != "caller span" {
			t.Errorf("end %d: context value %q, want the start hook's", i, v)
		}
	}
	if len(rec.handled) != 2 {
		t.Fatalf("%d handle end hooks, want 2", len(rec.handled))
	}
	// OnHandleEnd runs once the transport is done with the reply, which on
	// the memory transport can be after the caller got it and sent the
	// next request: the two may end in either order.
	for i, h := range rec.handled {
		failed := string(h.ID) == rec.starts[1].ID // the second request, "fail"
		if !failed && string(h.ID) != rec.starts[0].ID {
			t.Errorf("handled %d: ID %s, want that of one of the two requests handled", i, h.ID)
		}
		if h.Topic != "req" || h.Group != "req.responders" || h.Reply == nil || h.Handling <= 0 || h.Queued < 0 || (h.Err != nil) != failed {
			t.Errorf("handled %d: %+v", i, h)
		}
	}
}
