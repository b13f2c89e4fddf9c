package syncbridge_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

// dropRecorder is a DroppedReplyHook that counts by reason.
type dropRecorder struct {
	mu     sync.Mutex
	counts map[syncbridge.DropReason]int
	seen   chan syncbridge.DropReason
}

func newDropRecorder() *dropRecorder {
	return &dropRecorder{counts: map[syncbridge.DropReason]int{}, seen: make(chan syncbridge.DropReason, 100)}
}

func (d *dropRecorder) OnDroppedReply(reason syncbridge.DropReason, msg *syncbridge.Message) {
	d.mu.Lock()
	d.counts[reason]++
	d.mu.Unlock()
	d.seen <- reason
}

func TestDuplicateReplyDropped(t *testing.T) {
	drops := newDropRecorder()
	e := newEnv(t, echo, syncbridge.WithHooks(drops))
	// Every reply is delivered twice, as at-least-once delivery may.
	e.tr.SetFaults(func(m *syncbridge.Message) memory.Fault {
		if m.Topic == syncbridge.DefaultReplyTopic {
			return memory.Duplicate
		}
		return memory.Deliver
	})
	for range 3 {
		reply, err := e.b.Request(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req", Value: []byte("v")})
		if err != nil || string(reply.Value) != "v" {
			t.Fatalf("Request = %v, %v", reply, err)
		}
		if r := <-drops.seen; r != syncbridge.DropDuplicate {
			t.Errorf("dropped as %v, want duplicate", r)
		}
	}
	if st := e.b.Stats(); st.Dropped.Duplicate != 3 || st.Replies != 3 {
		t.Errorf("stats %+v, want 3 replies and 3 duplicates", st)
	}
}

func TestLateReplyDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		drops := newDropRecorder()
		e := newEnv(t, echo, syncbridge.WithHooks(drops))
		// Hold the reply back until the caller has given up.
		e.tr.SetFaults(func(m *syncbridge.Message) memory.Fault {
			if m.Topic == syncbridge.DefaultReplyTopic {
				return memory.Hold
			}
			return memory.Deliver
		})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := e.b.Request(ctx, syncbridge.Message{Topic: "req", Value: []byte("v")})
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, syncbridge.ErrNoReply) {
			t.Fatalf("Request = %v, want ErrNoReply and DeadlineExceeded", err)
		}
		synctest.Wait() // the responder has handled it and published the reply
		if n := e.tr.Held(); n != 1 {
			t.Fatalf("%d messages held, want the one reply", n)
		}
		e.tr.SetFaults(nil)
		if n, err := e.tr.Release(context.Background()); n != 1 || err != nil {
			t.Fatalf("Release = %d, %v; want 1 held reply", n, err)
		}
		if r := <-drops.seen; r != syncbridge.DropLate {
			t.Errorf("dropped as %v, want late", r)
		}
		if st := e.b.Stats(); st.TimedOut != 1 || st.Waiting != 0 {
			t.Errorf("stats %+v", st)
		}
	})
}

// TestReorderedReplies holds the first reply back until the second is
// delivered: each still reaches its own caller.
func TestReorderedReplies(t *testing.T) {
	e := newEnv(t, echo)
	var mu sync.Mutex
	held := false
	e.tr.SetFaults(func(m *syncbridge.Message) memory.Fault {
		mu.Lock()
		defer mu.Unlock()
		if m.Topic == syncbridge.DefaultReplyTopic && !held {
			held = true
			return memory.Hold
		}
		return memory.Deliver
	})
	// One key: one partition, handled in order, so the first reply
	// published is the first request's.
	first := e.b.Go(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req", Key: []byte("k"), Value: []byte("first")})
	second, err := e.b.Request(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req", Key: []byte("k"), Value: []byte("second")})
	if err != nil || string(second.Value) != "second" {
		t.Fatalf("second = %v, %v", second, err)
	}
	select {
	case <-first.Done():
		t.Fatal("first call ended while its reply was held")
	default:
	}
	if n, err := e.tr.Release(context.Background()); n != 1 || err != nil {
		t.Fatalf("Release = %d, %v", n, err)
	}
	reply, err := first.Wait(context.Background())
	if err != nil || string(reply.Value) != "first" {
		t.Errorf("first = %v, %v", reply, err)
	}
}

func TestDroppedReplyReasons(t *testing.T) {
	drops := newDropRecorder()
	e := newEnv(t, nil, syncbridge.WithHooks(drops))
	other := newEnv(t, nil) // another Bridge, for a foreign ID
	otherCall := other.b.Go(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "nowhere"})
	defer otherCall.Cancel()
	mine := e.b.Go(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "nowhere"})
	defer mine.Cancel()
	id := []byte(mine.ID())
	unknown := append([]byte(nil), id...)
	copy(unknown[20:], "ffffffffffff") // a sequence number never issued
	h := syncbridge.DefaultHeaderNames().CorrelationID
	tests := []struct {
		name    string
		headers []syncbridge.Header
		want    syncbridge.DropReason
	}{
		{"no correlation ID", nil, syncbridge.DropMalformed},
		{"other bridge", []syncbridge.Header{{Key: h, Value: []byte(otherCall.ID())}}, syncbridge.DropForeign},
		{"not an ID", []syncbridge.Header{{Key: h, Value: []byte("hello")}}, syncbridge.DropForeign},
		{"never issued", []syncbridge.Header{{Key: h, Value: unknown}}, syncbridge.DropUnknown},
		{"bad hex", []syncbridge.Header{{Key: h, Value: append(id[:30:30], "zzzzzz"...)}}, syncbridge.DropUnknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := e.tr.Publish(context.Background(), syncbridge.Message{Topic: syncbridge.DefaultReplyTopic, Headers: tc.headers})
			if err != nil {
				t.Fatal(err)
			}
			if got := <-drops.seen; got != tc.want {
				t.Errorf("dropped as %v, want %v", got, tc.want)
			}
		})
	}
	select {
	case <-mine.Done():
		t.Error("a bogus reply ended the call")
	default:
	}
	if want := (syncbridge.DropReason(99)).String(); want != "DropReason(?)" {
		t.Errorf("String of an unknown reason = %q", want)
	}
}

func TestCall(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		<-release
		return syncbridge.Message{Value: req.Value}, nil
	})
	call := e.b.Go(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req", Value: []byte("slow")})
	if _, err := call.Result(); !errors.Is(err, syncbridge.ErrPending) {
		t.Errorf("Result before the reply: %v, want ErrPending", err)
	}
	// The caller stops waiting early; the Call goes on.
	short, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := call.Wait(short); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with an ended context: %v, want Canceled", err)
	}
	close(release)
	reply, err := call.Wait(context.Background())
	if err != nil || string(reply.Value) != "slow" {
		t.Fatalf("Wait = %v, %v", reply, err)
	}
	if r2, err2 := call.Result(); r2 != reply || err2 != nil {
		t.Errorf("Result = %v, %v; want the same reply", r2, err2)
	}
	call.Cancel() // after the end: no effect
	if r3, _ := call.Result(); r3 != reply {
		t.Error("Cancel after the end changed the result")
	}
}

func TestCallCancel(t *testing.T) {
	e := newEnv(t, nil)
	call := e.b.Go(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "nowhere"})
	call.Cancel()
	<-call.Done()
	if _, err := call.Result(); !errors.Is(err, syncbridge.ErrNoReply) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled call: %v, want ErrNoReply and Canceled", err)
	}
	if st := e.b.Stats(); st.InFlight != 0 || st.Waiting != 0 {
		t.Errorf("after Cancel: %+v", st)
	}
}

func TestCallExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, nil, syncbridge.WithDefaultTimeout(3*time.Second))
		start := time.Now()
		// No deadline on ctx: the default timeout applies.
		call := e.b.Go(context.Background(), syncbridge.Message{Topic: "nowhere"})
		<-call.Done()
		if d := time.Since(start); d != 3*time.Second {
			t.Errorf("call expired after %v, want the default timeout 3s", d)
		}
		if _, err := call.Result(); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, syncbridge.ErrNoReply) {
			t.Errorf("expired call: %v", err)
		}
		if st := e.b.Stats(); st.InFlight != 0 || st.Waiting != 0 {
			t.Errorf("after expiry: %+v", st)
		}
	})
}

func TestRequestDefaultTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, nil, syncbridge.WithDefaultTimeout(2*time.Second))
		start := time.Now()
		_, err := e.b.Request(context.Background(), syncbridge.Message{Topic: "nowhere"})
		if d := time.Since(start); d != 2*time.Second || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Request without a deadline: %v after %v, want DeadlineExceeded after 2s", err, d)
		}
	})
}

// skipRecorder is a SkippedRequestHook.
type skipRecorder struct{ seen chan syncbridge.SkipReason }

func (s skipRecorder) OnSkippedRequest(reason syncbridge.SkipReason, msg *syncbridge.Message, err error) {
	s.seen <- reason
}

func TestResponderSkips(t *testing.T) {
	tr := &memory.Transport{}
	defer tr.Close()
	skips := skipRecorder{make(chan syncbridge.SkipReason, 10)}
	called := make(chan string, 10)
	r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		called <- string(req.Value)
		return syncbridge.Message{}, nil
	}, syncbridge.WithHooks(skips), syncbridge.WithGroup("g"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := syncbridge.DefaultHeaderNames()
	id := syncbridge.Header{Key: h.CorrelationID, Value: []byte("id-1")}
	to := syncbridge.Header{Key: h.ReplyTopic, Value: []byte("replies")}
	tests := []struct {
		name    string
		headers []syncbridge.Header
		want    syncbridge.SkipReason
	}{
		{"no correlation ID", []syncbridge.Header{to}, syncbridge.SkipMalformed},
		{"no reply topic", []syncbridge.Header{id}, syncbridge.SkipMalformed},
		{"short partition", []syncbridge.Header{id, to, {Key: h.ReplyPartition, Value: []byte{0, 1}}}, syncbridge.SkipMalformed},
		{"negative partition", []syncbridge.Header{id, to, {Key: h.ReplyPartition, Value: []byte{0xff, 0xff, 0xff, 0xff}}}, syncbridge.SkipMalformed},
		{"bad deadline", []syncbridge.Header{id, to, {Key: h.Deadline, Value: []byte("soon")}}, syncbridge.SkipMalformed},
		{"expired", []syncbridge.Header{id, to, {Key: h.Deadline, Value: []byte("1000")}}, syncbridge.SkipExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "req", Key: []byte("k"), Value: []byte(tc.name), Headers: tc.headers}); err != nil {
				t.Fatal(err)
			}
			if got := <-skips.seen; got != tc.want {
				t.Errorf("skipped as %v, want %v", got, tc.want)
			}
		})
	}
	// A well-formed request after them is handled, and nothing before it was.
	if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "req", Key: []byte("k"), Value: []byte("good"), Headers: []syncbridge.Header{id, to}}); err != nil {
		t.Fatal(err)
	}
	if got := <-called; got != "good" {
		t.Errorf("handler called with %q, want only the good request", got)
	}
	st := r.Stats()
	if st.Skipped.Malformed != 5 || st.Skipped.Expired != 1 {
		t.Errorf("skipped %v, want 5 malformed and 1 expired", st.Skipped)
	}
}

// TestSpringPartitionHeader checks that a Responder replies to the
// partition a Spring-style requester names in kafka_replyPartition.
func TestSpringPartitionHeader(t *testing.T) {
	tr := &memory.Transport{Partitions: 4}
	defer tr.Close()
	r, err := syncbridge.NewResponder(context.Background(), tr, "req", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make(chan syncbridge.Message, 1)
	sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "replies"}, func(_ context.Context, m syncbridge.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	corr := []byte{0x9a, 0x00, 0xff, 0x10} // Spring sends 16 raw bytes; any bytes echo as they are
	err = tr.Publish(context.Background(), syncbridge.Message{Topic: "req", Value: []byte("v"), Headers: []syncbridge.Header{
		{Key: "kafka_correlationId", Value: corr},
		{Key: "kafka_replyTopic", Value: []byte("replies")},
		{Key: "kafka_replyPartition", Value: []byte{0, 0, 0, 2}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	m := <-got
	if m.Partition != 2 {
		t.Errorf("reply on partition %d, want 2", m.Partition)
	}
	if v, _ := m.Header("kafka_correlationId"); string(v) != string(corr) {
		t.Errorf("correlation %x, want %x echoed byte for byte", v, corr)
	}
}

// TestForwardedHeaders: a handler that passes a request's headers on to
// another request, and that reply's headers back, does not redirect either
// reply: syncbridge's own headers are never taken from the caller.
func TestForwardedHeaders(t *testing.T) {
	tr := &memory.Transport{}
	defer tr.Close()
	inner, err := syncbridge.NewResponder(context.Background(), tr, "inner", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		return syncbridge.Message{Value: []byte("inner"), Headers: req.Headers}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	down, err := syncbridge.New(context.Background(), tr, syncbridge.WithReplyTopic("down.replies"))
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	outer, err := syncbridge.NewResponder(context.Background(), tr, "outer", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		// Pass everything on, tracing headers and all.
		r, err := down.Request(ctx, syncbridge.Message{Topic: "inner", Headers: req.Headers})
		if err != nil {
			return syncbridge.Message{}, err
		}
		return syncbridge.Message{Value: append([]byte("outer saw "), r.Value...), Headers: r.Headers}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer outer.Close()
	b, err := syncbridge.New(context.Background(), tr)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	reply, err := b.Request(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "outer",
		Headers: []syncbridge.Header{{Key: "traceparent", Value: []byte("00-1")}}})
	if err != nil {
		t.Fatal(err)
	}
	if string(reply.Value) != "outer saw inner" {
		t.Errorf("reply %q, want %q", reply.Value, "outer saw inner")
	}
	if v, _ := reply.Header("traceparent"); string(v) != "00-1" {
		t.Errorf("traceparent = %q, want it passed through", v)
	}
	if n := len(reply.Headers); n != 2 { // traceparent and the correlation ID
		t.Errorf("reply headers %v, want traceparent and one correlation ID", reply.Headers)
	}
	if st := down.Stats(); st.Waiting != 0 || st.Replies != 1 {
		t.Errorf("inner bridge %+v", st)
	}
}

func TestGoWithEndedContext(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for name, err := range map[string]error{
		"Go":      func() error { _, err := e.b.Go(ctx, syncbridge.Message{Topic: "req"}).Result(); return err }(),
		"Request": func() error { _, err := e.b.Request(ctx, syncbridge.Message{Topic: "req"}); return err }(),
	} {
		if !errors.Is(err, syncbridge.ErrPublish) || !errors.Is(err, context.Canceled) || errors.Is(err, syncbridge.ErrNoReply) {
			t.Errorf("%s with an ended context: %v, want ErrPublish and Canceled", name, err)
		}
	}
}
