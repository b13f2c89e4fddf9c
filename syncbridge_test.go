package syncbridge_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a memory transport with a Bridge and an echo Responder on topic
// "req", all closed when the test ends.
type env struct {
	tr *memory.Transport
	b  *syncbridge.Bridge
	r  *syncbridge.Responder
}

func echo(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
	return syncbridge.Message{Value: req.Value}, nil
}

func newEnv(t testing.TB, h syncbridge.ReplyHandler, opts ...syncbridge.Option) *env {
	t.Helper()
	e := &env{tr: newMemory(t)}
	if h != nil {
		e.r = newResponder(t, e.tr, "req", h)
	}
	e.b = newBridge(t, e.tr, opts...)
	return e
}

// newMemory returns a memory transport closed when the test ends, after
// the Responders and Bridges made on it with newResponder and newBridge.
func newMemory(t testing.TB) *memory.Transport {
	tr := &memory.Transport{}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// newResponder returns a Responder on tr for topic, closed when the test
// ends.
func newResponder(t testing.TB, tr syncbridge.Transport, topic string, h syncbridge.ReplyHandler, opts ...syncbridge.Option) *syncbridge.Responder {
	t.Helper()
	r, err := syncbridge.NewResponder(context.Background(), tr, topic, h, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// newBridge returns a Bridge on tr, closed when the test ends.
func newBridge(t testing.TB, tr syncbridge.Transport, opts ...syncbridge.Option) *syncbridge.Bridge {
	t.Helper()
	b, err := syncbridge.New(context.Background(), tr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestRequestReply(t *testing.T) {
	e := newEnv(t, func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		return syncbridge.Message{Key: req.Key, Value: append([]byte("re:"), req.Value...), Headers: []syncbridge.Header{{Key: "x", Value: []byte{0xff}}}}, nil
	})
	hdrs := []syncbridge.Header{{Key: "trace", Value: []byte("t1")}}
	msg := syncbridge.Message{Topic: "req", Key: []byte("k"), Value: []byte("v"), Headers: hdrs}
	reply, err := e.b.Request(ctxTimeout(t, 10*time.Second), msg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(reply.Value), "re:v"; got != want {
		t.Errorf("reply value %q, want %q", got, want)
	}
	if v, _ := reply.Header("x"); !bytes.Equal(v, []byte{0xff}) {
		t.Errorf("reply header x = %q, want \\xff", v)
	}
	if len(msg.Headers) != 1 || len(hdrs) != 1 || cap(hdrs) != 1 {
		t.Errorf("Request modified the caller's headers: %v", msg.Headers)
	}
	if st := e.b.Stats(); st.Replies != 1 || st.InFlight != 0 || st.Waiting != 0 {
		t.Errorf("stats %+v, want 1 reply, nothing in flight", st)
	}
}

// TestRequestHeaders checks the headers a request carries on the wire.
func TestRequestHeaders(t *testing.T) {
	tr := &memory.Transport{}
	t.Cleanup(func() { tr.Close() })
	got := make(chan syncbridge.Message, 1)
	sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "req"}, func(_ context.Context, m syncbridge.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	b, err := syncbridge.New(context.Background(), tr, syncbridge.WithReplyTopic("replies"), syncbridge.WithReplyPartitions(3))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	deadline := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	call := b.Go(ctx, syncbridge.Message{Topic: "req", Value: []byte("v")})
	defer call.Cancel()
	m := <-got
	h := syncbridge.DefaultHeaderNames()
	want := map[string][]byte{
		h.CorrelationID:  []byte(call.ID()),
		h.ReplyTopic:     []byte("replies"),
		h.ReplyPartition: {0, 0, 0, 3},
		h.Deadline:       fmt.Appendf(nil, "%d", deadline.UnixMilli()),
	}
	for k, v := range want {
		if g, ok := m.Header(k); !ok || !bytes.Equal(g, v) {
			t.Errorf("header %s = %q (present %v), want %q", k, g, ok, v)
		}
	}
	if len(call.ID()) != 36 || call.ID()[8] != '-' || call.ID()[23] != '-' {
		t.Errorf("correlation ID %q is not UUID-shaped", call.ID())
	}
}

func TestRequestErrors(t *testing.T) {
	errFail := errors.New("database on fire")
	handler := func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		switch string(req.Value) {
		case "remote":
			return syncbridge.Message{}, syncbridge.NewRemoteError("not_found", "no item 7")
		case "plain":
			return syncbridge.Message{}, fmt.Errorf("lookup: %w", errFail)
		case "panic":
			panic("boom")
		case "wait":
			<-ctx.Done() // the caller's deadline, propagated
			return syncbridge.Message{}, ctx.Err()
		}
		return syncbridge.Message{Value: req.Value}, nil
	}
	tests := []struct {
		name    string
		msg     syncbridge.Message
		timeout time.Duration
		is      []error
		code    string
	}{
		{name: "no topic", msg: syncbridge.Message{Value: []byte("x")}, is: []error{syncbridge.ErrInvalidMessage}},
		{name: "remote error", msg: syncbridge.Message{Topic: "req", Value: []byte("remote")}, code: "not_found"},
		{name: "handler error", msg: syncbridge.Message{Topic: "req", Value: []byte("plain")}, code: syncbridge.CodeInternal},
		{name: "handler panic", msg: syncbridge.Message{Topic: "req", Value: []byte("panic")}, code: syncbridge.CodePanic},
		{name: "no responder", msg: syncbridge.Message{Topic: "nobody", Value: []byte("x")}, timeout: 50 * time.Millisecond,
			is: []error{syncbridge.ErrNoReply, context.DeadlineExceeded}},
		{name: "responder too slow", msg: syncbridge.Message{Topic: "req", Value: []byte("wait")}, timeout: 50 * time.Millisecond,
			is: []error{syncbridge.ErrNoReply, context.DeadlineExceeded}},
	}
	e := newEnv(t, handler)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 10 * time.Second
			}
			tc.msg.Key = []byte("k") // one partition: handled in order
			reply, err := e.b.Request(ctxTimeout(t, timeout), tc.msg)
			if err == nil {
				t.Fatalf("Request succeeded with %q, want an error", reply.Value)
			}
			if reply != nil {
				t.Errorf("Request returned reply %v with error %v", reply, err)
			}
			for _, target := range tc.is {
				if !errors.Is(err, target) {
					t.Errorf("error %q is not %q", err, target)
				}
			}
			var re *syncbridge.RemoteError
			if gotRemote := errors.As(err, &re); gotRemote != (tc.code != "") {
				t.Fatalf("error %q: RemoteError %v, want %v", err, gotRemote, tc.code != "")
			}
			if re != nil && re.Code != tc.code {
				t.Errorf("remote error code %q, want %q", re.Code, tc.code)
			}
		})
	}
	// The Responder survived the panic and counted everything.
	if reply, err := e.b.Request(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req", Key: []byte("k"), Value: []byte("ok")}); err != nil || string(reply.Value) != "ok" {
		t.Errorf("after a panic: %v, %v", reply, err)
	}
	if st := e.r.Stats(); st.Panicked != 1 || st.Failed != 4 {
		t.Errorf("responder stats %+v, want 1 panic, 4 failures (remote, plain, panic, wait)", st)
	}
}

// failingTransport fails every Publish to "req" but still subscribes.
type failingTransport struct {
	*memory.Transport
	err error
}

func (f failingTransport) Publish(ctx context.Context, m syncbridge.Message) error {
	if m.Topic == "req" {
		return f.err
	}
	return f.Transport.Publish(ctx, m)
}

// TestPublishError: a transport error that says "not sent" is ErrPublish
// at once; any other leaves the request maybe sent, so the Bridge waits for
// a reply until the deadline and then says ErrNoReply, wrapping both the
// deadline and the transport's error. Request and Go agree, and count the
// same.
func TestPublishError(t *testing.T) {
	notSent := fmt.Errorf("broker refused: %w", syncbridge.ErrNotSent)
	maybe := errors.New("connection reset after write")
	tests := []struct {
		name  string
		err   error
		is    []error
		isnt  []error
		stats func(syncbridge.Stats) uint64
	}{
		{"not sent", notSent, []error{syncbridge.ErrPublish, notSent}, []error{syncbridge.ErrNoReply, context.DeadlineExceeded},
			func(s syncbridge.Stats) uint64 { return s.PublishErrors }},
		{"maybe sent", maybe, []error{syncbridge.ErrNoReply, context.DeadlineExceeded, maybe}, []error{syncbridge.ErrPublish},
			func(s syncbridge.Stats) uint64 { return s.TimedOut }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := &memory.Transport{}
			defer tr.Close()
			b, err := syncbridge.New(context.Background(), failingTransport{tr, tc.err})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			check := func(how string, err error) {
				t.Helper()
				for _, target := range tc.is {
					if !errors.Is(err, target) {
						t.Errorf("%s = %v, want it to wrap %v", how, err, target)
					}
				}
				for _, target := range tc.isnt {
					if errors.Is(err, target) {
						t.Errorf("%s = %v, want it not to wrap %v", how, err, target)
					}
				}
			}
			_, err = b.Request(ctxTimeout(t, 50*time.Millisecond), syncbridge.Message{Topic: "req"})
			check("Request", err)
			call := b.Go(ctxTimeout(t, 50*time.Millisecond), syncbridge.Message{Topic: "req"})
			_, err = call.Wait(context.Background())
			check("Go", err)
			if st := b.Stats(); tc.stats(st) != 2 || st.Waiting != 0 || st.InFlight != 0 {
				t.Errorf("stats %+v, want 2 counted as %s and nothing waiting", st, tc.name)
			}
		})
	}
}

func TestOverloaded(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 2)
	e := newEnv(t, func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		started <- struct{}{}
		<-release
		return syncbridge.Message{Value: req.Value}, nil
	}, syncbridge.WithMaxInFlight(2))
	var calls []*syncbridge.Call
	for range 2 {
		calls = append(calls, e.b.Go(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req", Key: []byte("k")}))
	}
	<-started
	_, err := e.b.Request(ctxTimeout(t, time.Second), syncbridge.Message{Topic: "req"})
	if !errors.Is(err, syncbridge.ErrOverloaded) {
		t.Errorf("third request: %v, want ErrOverloaded", err)
	}
	close(release)
	for _, c := range calls {
		if _, err := c.Wait(context.Background()); err != nil {
			t.Errorf("admitted call: %v", err)
		}
	}
	if _, err := e.b.Request(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req"}); err != nil {
		t.Errorf("request after the load passed: %v", err)
	}
	if st := e.b.Stats(); st.Overloaded != 1 {
		t.Errorf("Overloaded = %d, want 1", st.Overloaded)
	}
}

func TestNewErrors(t *testing.T) {
	tr := &memory.Transport{}
	defer tr.Close()
	h := syncbridge.DefaultHeaderNames()
	h.Deadline = h.CorrelationID
	tests := []struct {
		name string
		opts []syncbridge.Option
	}{
		{"empty reply topic", []syncbridge.Option{syncbridge.WithReplyTopic("")}},
		{"zero timeout", []syncbridge.Option{syncbridge.WithDefaultTimeout(0)}},
		{"negative in flight", []syncbridge.Option{syncbridge.WithMaxInFlight(-1)}},
		{"negative partition", []syncbridge.Option{syncbridge.WithReplyPartitions(-1)}},
		{"duplicate header names", []syncbridge.Option{syncbridge.WithHeaderNames(h)}},
		{"empty header name", []syncbridge.Option{syncbridge.WithHeaderNames(syncbridge.HeaderNames{})}},
		{"partition the transport lacks", []syncbridge.Option{syncbridge.WithReplyPartitions(99)}},
		{"a Responder's option", []syncbridge.Option{syncbridge.WithGroup("g")}},
		{"a hook that implements no hook interface", []syncbridge.Option{syncbridge.WithHooks(struct{}{})}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if b, err := syncbridge.New(context.Background(), tr, tc.opts...); err == nil {
				b.Close()
				t.Errorf("New succeeded, want an error")
			}
		})
	}
	// A default timeout above DefaultMaxTimeout is fine on both sides: the
	// cap only applies when set.
	long := syncbridge.WithDefaultTimeout(time.Hour)
	if b, err := syncbridge.New(context.Background(), tr, long); err != nil {
		t.Errorf("New with a 1 h default timeout: %v", err)
	} else {
		b.Close()
	}
	if r, err := syncbridge.NewResponder(context.Background(), tr, "t", echo, long); err != nil {
		t.Errorf("NewResponder with a 1 h default timeout: %v", err)
	} else {
		r.Close()
	}
	if _, err := syncbridge.New(context.Background(), nil); err == nil {
		t.Error("New(nil) succeeded")
	}
	if _, err := syncbridge.NewResponder(context.Background(), tr, "", echo); err == nil {
		t.Error("NewResponder with no topic succeeded")
	}
	if _, err := syncbridge.NewResponder(context.Background(), tr, "t", nil); err == nil {
		t.Error("NewResponder with no handler succeeded")
	}
	for _, o := range []syncbridge.Option{
		syncbridge.WithGroup(""),
		syncbridge.WithReplyTopic("r"), // a Bridge's option
		syncbridge.WithHooks(42),
		syncbridge.WithMaxTimeout(time.Second), // below the default timeout
		syncbridge.WithDefaultTimeout(-time.Second),
	} {
		if r, err := syncbridge.NewResponder(context.Background(), tr, "t", echo, o); err == nil {
			r.Close()
			t.Errorf("NewResponder with %#v succeeded", o)
		}
	}
}

func TestClose(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	started := make(chan struct{}, 1)
	e := newEnv(t, func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		started <- struct{}{}
		<-block
		return syncbridge.Message{}, nil
	})
	errc := make(chan error, 1)
	go func() {
		_, err := e.b.Request(ctxTimeout(t, time.Minute), syncbridge.Message{Topic: "req"})
		errc <- err
	}()
	call := e.b.Go(ctxTimeout(t, time.Minute), syncbridge.Message{Topic: "req"})
	<-started
	if err := e.b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, syncbridge.ErrClosed) {
		t.Errorf("Request in flight at Close: %v, want ErrClosed", err)
	}
	<-call.Done()
	if _, err := call.Result(); !errors.Is(err, syncbridge.ErrClosed) {
		t.Errorf("Call in flight at Close: %v, want ErrClosed", err)
	}
	if _, err := e.b.Request(context.Background(), syncbridge.Message{Topic: "req"}); !errors.Is(err, syncbridge.ErrClosed) {
		t.Errorf("Request after Close: %v, want ErrClosed", err)
	}
	if err := e.b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if st := e.b.Stats(); st.InFlight != 0 || st.Waiting != 0 {
		t.Errorf("after Close: %+v", st)
	}
}

func TestShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		e := newEnv(t, func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
			<-release
			return syncbridge.Message{Value: req.Value}, nil
		})
		call := e.b.Go(context.Background(), syncbridge.Message{Topic: "req", Value: []byte("in flight")})
		done := make(chan error, 1)
		go func() { done <- e.b.Shutdown(context.Background()) }()
		synctest.Wait() // Shutdown is waiting for the call in flight
		if _, err := e.b.Request(context.Background(), syncbridge.Message{Topic: "req"}); !errors.Is(err, syncbridge.ErrClosed) {
			t.Errorf("Request during Shutdown: %v, want ErrClosed", err)
		}
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned %v with a call in flight", err)
		default:
		}
		close(release)
		if err := <-done; err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if reply, err := call.Result(); err != nil || string(reply.Value) != "in flight" {
			t.Errorf("call in flight during Shutdown: %v, %v", reply, err)
		}
	})
}

func TestShutdownContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		block := make(chan struct{})
		e := newEnv(t, func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
			<-block
			return syncbridge.Message{}, nil
		})
		defer close(block)
		call := e.b.Go(context.Background(), syncbridge.Message{Topic: "req"})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := e.b.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
		}
		<-call.Done()
		if _, err := call.Result(); !errors.Is(err, syncbridge.ErrClosed) {
			t.Errorf("call = %v, want ErrClosed", err)
		}
	})
}
