package syncbridge_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

// rawRequest publishes a request as a Spring or NestJS caller would: the
// correlation and reply-topic headers, and, unless deadline is zero, a
// deadline header.
func rawRequest(t *testing.T, tr syncbridge.Transport, id string, deadline time.Time) {
	t.Helper()
	h := syncbridge.DefaultHeaderNames()
	hdrs := []syncbridge.Header{{Key: h.CorrelationID, Value: []byte(id)}, {Key: h.ReplyTopic, Value: []byte("raw.replies")}}
	if !deadline.IsZero() {
		hdrs = append(hdrs, syncbridge.Header{Key: h.Deadline, Value: strconv.AppendInt(nil, deadline.UnixMilli(), 10)})
	}
	if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "req", Value: []byte(id), Headers: hdrs}); err != nil {
		t.Fatal(err)
	}
}

// replies collects what is published to "raw.replies".
func replies(t *testing.T, tr *memory.Transport) chan syncbridge.Message {
	ch := make(chan syncbridge.Message, 100)
	sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "raw.replies"}, func(_ context.Context, m syncbridge.Message) { ch <- m })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	return ch
}

// TestResponderDeadlines: a request without a deadline header gets the
// Responder's default timeout (WithDefaultTimeout), so a handler slower
// than 5 s still answers a Spring or NestJS caller that waits longer; a
// far-future deadline is capped by WithMaxTimeout.
func TestResponderDeadlines(t *testing.T) {
	tr := &memory.Transport{}
	defer tr.Close()
	got := replies(t, tr)
	deadlines := make(chan time.Duration, 2)
	r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		d, _ := ctx.Deadline()
		deadlines <- time.Until(d)
		return syncbridge.Message{Value: req.Value}, nil
	}, syncbridge.WithDefaultTimeout(time.Minute), syncbridge.WithMaxTimeout(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rawRequest(t, tr, "no-deadline", time.Time{})
	if d := <-deadlines; d < 59*time.Second || d > time.Minute {
		t.Errorf("handler of a request without deadline has %v left, want the 1 min default timeout", d)
	}
	if m := <-got; string(m.Value) != "no-deadline" {
		t.Errorf("reply %q", m.Value)
	}
	rawRequest(t, tr, "far-future", time.Now().Add(100*365*24*time.Hour))
	if d := <-deadlines; d < 119*time.Second || d > 2*time.Minute {
		t.Errorf("handler of a far-future request has %v left, want the 2 min cap", d)
	}
	<-got
}

// TestResponderShutdown: Shutdown lets the handler in progress finish and
// its reply reach the caller, then returns; later requests are not
// handled by it.
func TestResponderShutdown(t *testing.T) {
	tr := &memory.Transport{}
	defer tr.Close()
	entered, release := make(chan struct{}), make(chan struct{})
	r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		close(entered)
		<-release
		return syncbridge.Message{Value: req.Value}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := syncbridge.New(context.Background(), tr)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	call := b.Go(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req", Value: []byte("in progress")})
	<-entered
	shut := make(chan error, 1)
	go func() { shut <- r.Shutdown(ctxTimeout(t, 10*time.Second)) }()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a handler was in progress", err)
	case <-call.Done():
		t.Fatal("the call ended before its handler returned")
	default:
	}
	close(release)
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if reply, err := call.Result(); err != nil || string(reply.Value) != "in progress" {
		t.Errorf("the request in progress at Shutdown: %v, %v; want its reply", reply, err)
	}
	if st := r.Stats(); st.Handled != 1 || st.InProgress != 0 {
		t.Errorf("stats %+v, want 1 handled, none in progress", st)
	}
}

// TestResponderCloseBounded: Close cancels the handler's context, even of
// a request whose deadline is far away, and returns once it has returned
// and its reply (here: "unavailable") is sent. A Shutdown whose ctx ends
// does the same.
func TestResponderCloseBounded(t *testing.T) {
	for _, how := range []string{"Close", "Shutdown"} {
		t.Run(how, func(t *testing.T) {
			tr := &memory.Transport{}
			defer tr.Close()
			entered := make(chan struct{})
			handlerErr := make(chan error, 1)
			r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
				close(entered)
				<-ctx.Done()
				handlerErr <- ctx.Err()
				return syncbridge.Message{}, syncbridge.NewRemoteError("unavailable", "shutting down")
			})
			if err != nil {
				t.Fatal(err)
			}
			b, err := syncbridge.New(context.Background(), tr)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			call := b.Go(ctxTimeout(t, time.Hour), syncbridge.Message{Topic: "req"})
			<-entered
			if how == "Close" {
				r.Close()
			} else {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				if err := r.Shutdown(ctx); !errors.Is(err, context.Canceled) {
					t.Errorf("Shutdown with an ended ctx: %v, want context.Canceled", err)
				}
			}
			if err := <-handlerErr; !errors.Is(err, context.Canceled) {
				t.Errorf("handler's ctx ended with %v, want context.Canceled", err)
			}
			if st := r.Stats(); st.InProgress != 0 || st.Handled != 1 {
				t.Errorf("stats %+v, want 1 handled and nothing in progress", st)
			}
			var re *syncbridge.RemoteError
			if _, err := call.Wait(ctxTimeout(t, 10*time.Second)); !errors.As(err, &re) || re.Code != "unavailable" {
				t.Errorf("the caller got %v, want the handler's unavailable error", err)
			}
		})
	}
}
