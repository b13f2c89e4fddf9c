package syncbridge_test

// Tests of claims made by the doc comments and the README that no other
// test backed: each says which claim it checks.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

// TestClaimClosedCounted: ErrClosed is returned by Request and Go after
// Close, and wakes a Call in flight; Stats.Closed counts every request
// refused or ended with ErrClosed (the README's error table); a Call
// refused before it was admitted has no ID (Call.ID).
func TestClaimClosedCounted(t *testing.T) {
	entered := make(chan struct{}, 1)
	block := make(chan struct{})
	defer close(block)
	e := newEnv(t, func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		entered <- struct{}{}
		<-block
		return syncbridge.Message{}, nil
	})
	inFlight := e.b.Go(ctxTimeout(t, time.Minute), syncbridge.Message{Topic: "req"})
	<-entered
	if err := e.b.Close(); err != nil {
		t.Fatal(err)
	}
	late := e.b.Go(context.Background(), syncbridge.Message{Topic: "req"})
	select {
	case <-late.Done():
	default:
		t.Fatal("Go after Close returned a Call that has not ended")
	}
	for name, c := range map[string]*syncbridge.Call{"in flight": inFlight, "Go after Close": late} {
		<-c.Done()
		if _, err := c.Result(); !errors.Is(err, syncbridge.ErrClosed) {
			t.Errorf("%s: %v, want ErrClosed", name, err)
		}
	}
	if id := late.ID(); id != "" {
		t.Errorf("a Call refused by a closed Bridge has ID %q, want none", id)
	}
	if _, err := e.b.Request(context.Background(), syncbridge.Message{Topic: "req"}); !errors.Is(err, syncbridge.ErrClosed) {
		t.Errorf("Request after Close: %v, want ErrClosed", err)
	}
	if st := e.b.Stats(); st != (syncbridge.Stats{Closed: 3}) {
		t.Errorf("stats %+v, want exactly 3 counted as Closed", st)
	}
}

// TestClaimOverloadedGo: past WithMaxInFlight, Go returns at once a Call
// that has ended with ErrOverloaded, with no ID, and nothing is published
// (ErrOverloaded: "Nothing was published").
func TestClaimOverloadedGo(t *testing.T) {
	tr := &memory.Transport{}
	defer tr.Close()
	published := make(chan string, 10)
	sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "req"}, func(_ context.Context, m syncbridge.Message) {
		published <- string(m.Value)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	b, err := syncbridge.New(context.Background(), tr, syncbridge.WithMaxInFlight(1))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	first := b.Go(ctxTimeout(t, time.Minute), syncbridge.Message{Topic: "req", Value: []byte("first")})
	second := b.Go(ctxTimeout(t, time.Minute), syncbridge.Message{Topic: "req", Value: []byte("second")})
	select {
	case <-second.Done():
	default:
		t.Fatal("Go past the limit returned a Call that has not ended")
	}
	if _, err := second.Result(); !errors.Is(err, syncbridge.ErrOverloaded) {
		t.Errorf("Go past the limit: %v, want ErrOverloaded", err)
	}
	if id := second.ID(); id != "" {
		t.Errorf("a refused Call has ID %q, want none", id)
	}
	first.Cancel()
	if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "req", Value: []byte("marker")}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"first", "marker"} { // in publish order: "second" never was
		if got := <-published; got != want {
			t.Errorf("published %q, want %q", got, want)
		}
	}
	if st := b.Stats(); st.Overloaded != 1 || st.Canceled != 1 {
		t.Errorf("stats %+v, want 1 overloaded and 1 cancelled", st)
	}
}

// TestClaimInvalidCountsNowhere: a request refused with ErrInvalidMessage
// (no topic, or a Gather with invalid options) counts in no Stats field
// (the README's error table: "—"; Stats).
func TestClaimInvalidCountsNowhere(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxTimeout(t, time.Minute)
	_, errReq := e.b.Request(ctx, syncbridge.Message{})
	_, errGo := e.b.Go(ctx, syncbridge.Message{}).Result()
	_, errGather := e.b.Gather(ctx, syncbridge.Message{}, syncbridge.GatherOptions{})
	_, errOpts := e.b.Gather(ctx, syncbridge.Message{Topic: "req"}, syncbridge.GatherOptions{Quiet: -time.Second})
	for i, err := range []error{errReq, errGo, errGather, errOpts} {
		if !errors.Is(err, syncbridge.ErrInvalidMessage) {
			t.Errorf("invalid request %d: %v, want ErrInvalidMessage", i, err)
		}
	}
	if st := e.b.Stats(); st != (syncbridge.Stats{}) {
		t.Errorf("stats %+v, want nothing counted", st)
	}
}

// TestClaimDroppedCounted: a malformed, foreign, unknown or late reply is
// counted in Stats().Dropped and passed to the DroppedReplyHook (README);
// a reply after Call.Cancel is dropped as late (Call.Cancel); a duplicate
// is detected for a recently answered request and counts as late once
// older (DropDuplicate).
func TestClaimDroppedCounted(t *testing.T) {
	drops := newDropRecorder()
	e := newEnv(t, echo, syncbridge.WithHooks(drops))
	other := newEnv(t, nil)
	foreign := other.b.Go(ctxTimeout(t, time.Minute), syncbridge.Message{Topic: "nowhere"})
	defer foreign.Cancel()
	cancelled := e.b.Go(ctxTimeout(t, time.Minute), syncbridge.Message{Topic: "nowhere"})
	id := cancelled.ID()
	cancelled.Cancel()
	<-cancelled.Done()
	unknown := []byte(id)
	copy(unknown[20:], "ffffffffffff") // a sequence number never issued
	h := syncbridge.DefaultHeaderNames().CorrelationID
	answered, err := e.b.Request(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req"})
	if err != nil {
		t.Fatal(err)
	}
	answeredID, _ := answered.Header(h)
	answeredID = append([]byte(nil), answeredID...)
	publish := func(hdrs []syncbridge.Header, want syncbridge.DropReason) {
		t.Helper()
		if err := e.tr.Publish(context.Background(), syncbridge.Message{Topic: syncbridge.DefaultReplyTopic, Headers: hdrs}); err != nil {
			t.Fatal(err)
		}
		if got := <-drops.seen; got != want {
			t.Errorf("dropped as %v, want %v", got, want)
		}
	}
	publish(nil, syncbridge.DropMalformed)
	publish([]syncbridge.Header{{Key: h, Value: []byte(foreign.ID())}}, syncbridge.DropForeign)
	publish([]syncbridge.Header{{Key: h, Value: unknown}}, syncbridge.DropUnknown)
	publish([]syncbridge.Header{{Key: h, Value: []byte(id)}}, syncbridge.DropLate)
	publish([]syncbridge.Header{{Key: h, Value: answeredID}}, syncbridge.DropDuplicate)
	want := syncbridge.DroppedReplies{Malformed: 1, Foreign: 1, Unknown: 1, Late: 1, Duplicate: 1}
	if got := e.b.Stats().Dropped; got != want {
		t.Errorf("Stats().Dropped = %+v, want %+v", got, want)
	}
	// Answer enough requests after it that every shard's record of
	// recent answers has moved on: the duplicate is now late.
	for range 64 * 128 {
		if _, err := e.b.Request(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req"}); err != nil {
			t.Fatal(err)
		}
	}
	publish([]syncbridge.Header{{Key: h, Value: answeredID}}, syncbridge.DropLate)
}

// TestClaimDoneSameChannel: Call.Done returns the same channel on every
// call, before and after the Call ends, and for a Call that ended before
// anyone asked.
func TestClaimDoneSameChannel(t *testing.T) {
	e := newEnv(t, nil)
	c := e.b.Go(ctxTimeout(t, time.Minute), syncbridge.Message{Topic: "nowhere"})
	d := c.Done()
	if c.Done() != d {
		t.Error("Done returned another channel on its second call")
	}
	c.Cancel()
	select {
	case <-d:
	case <-time.After(10 * time.Second):
		t.Fatal("the channel Done returned first was not closed when the Call ended")
	}
	if c.Done() != d {
		t.Error("Done returned another channel once the Call ended")
	}
	refused := e.b.Go(context.Background(), syncbridge.Message{})
	if d := refused.Done(); refused.Done() != d {
		t.Error("Done of a refused Call returned another channel on its second call")
	}
}

// skipErrs is a SkippedRequestHook that records the errors it gets.
type skipErrs chan error

func (s skipErrs) OnSkippedRequest(_ syncbridge.SkipReason, _ *syncbridge.Message, err error) {
	s <- err
}

// TestClaimSkipHookError: a SkippedRequestHook receives an error wrapping
// ErrMalformedHeader for a request whose routing headers are missing or
// cannot be decoded (ErrMalformedHeader), and another for an expired one.
func TestClaimSkipHookError(t *testing.T) {
	tr := newMemory(t)
	errs := make(skipErrs, 10)
	newResponder(t, tr, "req", echo, syncbridge.WithHooks(errs))
	h := syncbridge.DefaultHeaderNames()
	id := syncbridge.Header{Key: h.CorrelationID, Value: []byte("id")}
	to := syncbridge.Header{Key: h.ReplyTopic, Value: []byte("raw.replies")}
	for _, tc := range []struct {
		hdrs      []syncbridge.Header
		malformed bool
	}{
		{[]syncbridge.Header{to}, true},
		{[]syncbridge.Header{id, to, {Key: h.Deadline, Value: []byte("soon")}}, true},
		{[]syncbridge.Header{id, to, {Key: h.ReplyPartition, Value: []byte{1}}}, true},
		{[]syncbridge.Header{id, to, {Key: h.Deadline, Value: []byte("1000")}}, false},
	} {
		if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "req", Key: []byte("k"), Headers: tc.hdrs}); err != nil {
			t.Fatal(err)
		}
		if err := <-errs; err == nil || errors.Is(err, syncbridge.ErrMalformedHeader) != tc.malformed {
			t.Errorf("headers %v: hook got %v, want ErrMalformedHeader: %v", tc.hdrs, err, tc.malformed)
		}
	}
}

// TestClaimReplyAddressing: the Topic and partition fields of a handler's
// reply are ignored, its Key is sent (ReplyHandler); a plain error is sent
// with CodeInternal and the error's text.
func TestClaimReplyAddressing(t *testing.T) {
	e := newEnv(t, func(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		if string(req.Value) == "fail" {
			return syncbridge.Message{}, errors.New("disk full")
		}
		return syncbridge.Message{Topic: "elsewhere", Partition: 99, UsePartition: true, Key: []byte("rk"), Value: req.Value}, nil
	})
	reply, err := e.b.Request(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req", Value: []byte("v")})
	if err != nil {
		t.Fatalf("Request: %v (the reply went where the handler's reply said?)", err)
	}
	if reply.Topic != syncbridge.DefaultReplyTopic || string(reply.Key) != "rk" || string(reply.Value) != "v" {
		t.Errorf("reply topic %q key %q value %q, want %q %q %q", reply.Topic, reply.Key, reply.Value, syncbridge.DefaultReplyTopic, "rk", "v")
	}
	_, err = e.b.Request(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req", Value: []byte("fail")})
	var re *syncbridge.RemoteError
	if !errors.As(err, &re) || re.Code != syncbridge.CodeInternal || re.Description != "disk full" || re.Reply == nil {
		t.Errorf("plain handler error: %v, want a RemoteError %q %q with its reply", err, syncbridge.CodeInternal, "disk full")
	}
}

// TestClaimResponderTimeoutDefaults: without options, a Responder gives a
// request without deadline DefaultTimeout (5 s) and caps a far-future
// deadline at DefaultMaxTimeout (15 min); with a default timeout longer
// than that and no WithMaxTimeout, the cap is the default timeout
// (WithDefaultTimeout, WithMaxTimeout, README).
func TestClaimResponderTimeoutDefaults(t *testing.T) {
	for _, tc := range []struct {
		name              string
		opts              []syncbridge.Option
		noDeadline, capAt time.Duration
	}{
		{"defaults", nil, syncbridge.DefaultTimeout, syncbridge.DefaultMaxTimeout},
		{"long default timeout", []syncbridge.Option{syncbridge.WithDefaultTimeout(time.Hour)}, time.Hour, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &memory.Transport{}
			defer tr.Close()
			got := replies(t, tr)
			left := make(chan time.Duration, 2)
			r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
				d, _ := ctx.Deadline()
				left <- time.Until(d)
				return syncbridge.Message{}, nil
			}, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			check := func(what string, want time.Duration) {
				t.Helper()
				if d := <-left; d > want || d < want-time.Second {
					t.Errorf("%s: handler has %v left, want %v", what, d, want)
				}
				<-got
			}
			rawRequest(t, tr, "none", time.Time{})
			check("no deadline", tc.noDeadline)
			rawRequest(t, tr, "far", time.Now().Add(100*365*24*time.Hour))
			check("far-future deadline", tc.capAt)
		})
	}
}

// TestClaimBridgeTimeoutDefault: without WithDefaultTimeout, a request
// whose context has no deadline ends after DefaultTimeout (5 s), and its
// deadline header says so.
func TestClaimBridgeTimeoutDefault(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &memory.Transport{}
		defer tr.Close()
		deadline := make(chan string, 1)
		sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "req"}, func(_ context.Context, m syncbridge.Message) {
			v, _ := m.Header(syncbridge.DefaultHeaderNames().Deadline)
			deadline <- string(v)
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		b, err := syncbridge.New(context.Background(), tr)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		start := time.Now()
		_, err = b.Request(context.Background(), syncbridge.Message{Topic: "req"})
		if d := time.Since(start); d != syncbridge.DefaultTimeout || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, syncbridge.ErrNoReply) {
			t.Errorf("Request without deadline: %v after %v, want ErrNoReply and DeadlineExceeded after %v", err, d, syncbridge.DefaultTimeout)
		}
		if want := strconv.FormatInt(start.Add(syncbridge.DefaultTimeout).UnixMilli(), 10); <-deadline != want {
			t.Errorf("deadline header, want %s", want)
		}
	})
}

// TestClaimReplyExpired: a reply whose deadline passed while the handler
// ran is not sent, and counts in ReplyExpired, not ReplyFailed
// (ResponderStats.ReplyExpired); a HandleEndHook sees no Reply
// (HandleInfo.Reply). With hooks and without: two paths.
func TestClaimReplyExpired(t *testing.T) {
	for _, withHooks := range []bool{false, true} {
		t.Run(fmt.Sprintf("hooks=%v", withHooks), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { // the request is handled before its deadline, however busy the machine
				tr := &memory.Transport{}
				defer tr.Close()
				got := replies(t, tr)
				ends := make(chan *syncbridge.HandleInfo, 1)
				var opts []syncbridge.Option
				if withHooks {
					opts = append(opts, syncbridge.WithHooks(handleEndFunc(func(hi *syncbridge.HandleInfo) { ends <- hi })))
				}
				handled := make(chan struct{})
				r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
					<-ctx.Done() // the caller's deadline passes
					close(handled)
					return syncbridge.Message{Value: []byte("too late")}, nil
				}, opts...)
				if err != nil {
					t.Fatal(err)
				}
				rawRequest(t, tr, "x", time.Now().Add(20*time.Millisecond))
				<-handled
				if withHooks {
					if hi := <-ends; hi.Reply != nil || hi.ReplyErr != nil {
						t.Errorf("HandleInfo Reply %v, ReplyErr %v; want neither", hi.Reply, hi.ReplyErr)
					}
				}
				if err := r.Close(); err != nil { // the handler has returned, its reply is settled
					t.Fatal(err)
				}
				if st := r.Stats(); st.ReplyExpired != 1 || st.ReplyFailed != 0 || st.Handled != 1 {
					t.Errorf("stats %+v, want 1 handled, its reply expired, none failed", st)
				}
				if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "raw.replies", Value: []byte("marker")}); err != nil {
					t.Fatal(err)
				}
				if m := <-got; string(m.Value) != "marker" {
					t.Errorf("reply %q published after its deadline", m.Value)
				}
			})
		})
	}
}

// TestClaimConcurrentHandlers: with WithConcurrentHandlers, a Responder's
// handler calls overlap, even for requests of one key.
func TestClaimConcurrentHandlers(t *testing.T) {
	tr := &memory.Transport{}
	defer tr.Close()
	const n = 4
	var mu sync.Mutex
	in, most := 0, 0 // calls in progress, and the most at once
	all := make(chan struct{})
	r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		mu.Lock()
		in++
		if most = max(most, in); in == n {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-ctx.Done():
		}
		mu.Lock()
		in--
		mu.Unlock()
		return syncbridge.Message{}, nil
	}, syncbridge.WithConcurrentHandlers())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := syncbridge.DefaultHeaderNames()
	for i := range n {
		hdrs := []syncbridge.Header{{Key: h.CorrelationID, Value: fmt.Appendf(nil, "id-%d", i)}, {Key: h.ReplyTopic, Value: []byte("raw.replies")}}
		if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "req", Key: []byte("one key"), Headers: hdrs}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-all:
	case <-time.After(30 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("at most %d of %d handler calls of one key in progress at once, want them to overlap", most, n)
	}
}

// TestClaimShutdownLeavesQueued: Responder.Shutdown stops taking requests,
// finishes the one in progress, and the requests not yet handed to its
// handler stay for the other members of the group.
func TestClaimShutdownLeavesQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &memory.Transport{Partitions: 1}
		defer tr.Close()
		release := make(chan struct{})
		var mu sync.Mutex
		handledBy := map[string]string{}
		handler := func(who string) syncbridge.ReplyHandler {
			return func(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
				mu.Lock()
				handledBy[string(req.Value)] += who
				mu.Unlock()
				if who == "a" {
					<-release
				}
				return syncbridge.Message{}, nil
			}
		}
		a, err := syncbridge.NewResponder(context.Background(), tr, "req", handler("a"))
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"1", "2", "3"} {
			rawRequest(t, tr, id, time.Now().Add(time.Hour))
		}
		synctest.Wait() // a handles "1"; "2" and "3" are queued
		shut := make(chan error, 1)
		go func() { shut <- a.Shutdown(context.Background()) }()
		synctest.Wait() // Shutdown waits for the handler call in progress
		close(release)
		if err := <-shut; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		b, err := syncbridge.NewResponder(context.Background(), tr, "req", handler("b"))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if want := map[string]string{"1": "a", "2": "b", "3": "b"}; fmt.Sprint(handledBy) != fmt.Sprint(want) {
			t.Errorf("handled by %v, want %v", handledBy, want)
		}
	})
}

// TestClaimCloseDuringShutdown: Responder.Close is safe to call during
// Shutdown: it cancels the handler's context, both return, and a second
// Close returns the same.
func TestClaimCloseDuringShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &memory.Transport{}
		defer tr.Close()
		r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
			<-ctx.Done()
			return syncbridge.Message{}, ctx.Err()
		})
		if err != nil {
			t.Fatal(err)
		}
		rawRequest(t, tr, "x", time.Now().Add(time.Hour))
		synctest.Wait() // the handler waits for its context
		shut := make(chan error, 1)
		go func() { shut <- r.Shutdown(context.Background()) }()
		synctest.Wait()
		if err := r.Close(); err != nil {
			t.Errorf("Close during Shutdown: %v", err)
		}
		if err := <-shut; err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := r.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if st := r.Stats(); st.Handled != 1 || st.InProgress != 0 {
			t.Errorf("stats %+v", st)
		}
	})
}

// TestClaimGatherEnds: Gather returns what arrived with a nil error when
// ctx is cancelled after a reply (Stop canceled), ErrNoReply with
// context.Canceled and an empty, non-nil result when none arrived, and
// ErrClosed with what arrived when the Bridge closes; it counts once in
// Stats. Replies without the Responder header are each counted.
func TestClaimGatherEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := newMemory(t)
		for i, slow := range []bool{false, true} {
			newResponder(t, tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
				if slow {
					<-ctx.Done() // no reply before Close
					return syncbridge.Message{}, ctx.Err()
				}
				return syncbridge.Message{Value: []byte("fast")}, nil
			}, syncbridge.WithGroup(fmt.Sprint("g", i)))
		}
		b := newBridge(t, tr)
		type result struct {
			g   *syncbridge.Gathered
			err error
		}
		gather := func(ctx context.Context, topic string) chan result {
			ch := make(chan result, 1)
			go func() {
				g, err := b.Gather(ctx, syncbridge.Message{Topic: topic}, syncbridge.GatherOptions{Count: 2})
				ch <- result{g, err}
			}()
			synctest.Wait() // the fast reply arrived, if any; the slow one never does
			return ch
		}

		ctx, cancel := context.WithCancel(context.Background())
		got := gather(ctx, "req")
		cancel()
		if r := <-got; r.err != nil || r.g.Len() != 1 || r.g.Stop != syncbridge.GatherCanceled {
			t.Errorf("cancelled after a reply: %+v, %v; want 1 reply, stopped by canceled, no error", r.g, r.err)
		}
		ctx, cancel = context.WithCancel(context.Background())
		got = gather(ctx, "nobody")
		cancel()
		if r := <-got; !errors.Is(r.err, syncbridge.ErrNoReply) || !errors.Is(r.err, context.Canceled) || r.g == nil || r.g.Len() != 0 || r.g.Stop != syncbridge.GatherCanceled {
			t.Errorf("cancelled with no reply: %+v, %v; want an empty result and ErrNoReply with context.Canceled", r.g, r.err)
		}
		if st := b.Stats(); st.Replies != 1 || st.Canceled != 1 {
			t.Errorf("stats %+v, want 1 reply and 1 cancelled: one per Gather", st)
		}

		// A responder that answers twice without the Responder header, as a
		// Spring listener might: both count.
		sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "spring", Group: "spring"}, func(ctx context.Context, m syncbridge.Message) {
			h := syncbridge.DefaultHeaderNames()
			id, _ := m.Header(h.CorrelationID)
			for range 2 {
				tr.Publish(ctx, syncbridge.Message{Topic: syncbridge.DefaultReplyTopic, Headers: []syncbridge.Header{{Key: h.CorrelationID, Value: id}}})
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		if r := <-gather(context.Background(), "spring"); r.err != nil || r.g.Len() != 2 || r.g.Stop != syncbridge.GatherCount {
			t.Errorf("two replies without the Responder header: %+v, %v; want both counted", r.g, r.err)
		}

		got = gather(context.Background(), "req")
		b.Close()
		if r := <-got; !errors.Is(r.err, syncbridge.ErrClosed) || r.g.Len() != 1 {
			t.Errorf("Bridge closed after a reply: %+v, %v; want ErrClosed with the reply", r.g, r.err)
		}
	})
}

// closeErrTransport's subscriptions fail to close.
type closeErrTransport struct{ *memory.Transport }

type closeErrSub struct{ syncbridge.Subscription }

var errSubClose = errors.New("subscription close failed")

func (s closeErrSub) Close() error { s.Subscription.Close(); return errSubClose }

func (c closeErrTransport) Subscribe(ctx context.Context, cfg syncbridge.SubscribeConfig, h syncbridge.Handler) (syncbridge.Subscription, error) {
	s, err := c.Transport.Subscribe(ctx, cfg, h)
	if err != nil {
		return nil, err
	}
	return closeErrSub{s}, nil
}

// TestClaimBridgeCloseError: Bridge.Close returns the error of closing the
// reply subscription, the same on every call; it does not close the
// Transport (the Bridge does not own it).
func TestClaimBridgeCloseError(t *testing.T) {
	tr := &memory.Transport{}
	defer tr.Close()
	b, err := syncbridge.New(context.Background(), closeErrTransport{tr})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := b.Close(); err != errSubClose {
			t.Errorf("Close %d = %v, want the subscription's error", i+1, err)
		}
	}
	if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "t"}); err != nil {
		t.Errorf("the Transport after Bridge.Close: %v", err)
	}
}

// logRecorder is a slog.Handler that records levels and messages.
type logRecorder struct {
	mu  sync.Mutex
	got []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.got = append(l.got, r.Level.String()+" "+r.Message)
	l.mu.Unlock()
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, g := range l.got {
		if g == s {
			return true
		}
	}
	return false
}

// TestClaimLogger: WithLogger logs dropped replies at Debug, handler
// panics at Error and replies that could not be published at Warn.
func TestClaimLogger(t *testing.T) {
	tr := newMemory(t)
	rec := &logRecorder{}
	log := slog.New(rec)
	failed := make(chan struct{})
	r := newResponder(t, tr, "req", func(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		if string(req.Value) == "panic" {
			panic("boom")
		}
		return syncbridge.Message{}, nil
	}, syncbridge.WithLogger(log), syncbridge.WithHooks(handleEndFunc(func(hi *syncbridge.HandleInfo) {
		if hi.ReplyErr != nil {
			close(failed)
		}
	})))
	b := newBridge(t, tr, syncbridge.WithLogger(log))
	if _, err := b.Request(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req", Value: []byte("panic")}); err == nil {
		t.Error("a panicking handler's request succeeded")
	}
	// A reply to a partition the memory transport does not have fails.
	h := syncbridge.DefaultHeaderNames()
	if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "req", Headers: []syncbridge.Header{
		{Key: h.CorrelationID, Value: []byte("id")}, {Key: h.ReplyTopic, Value: []byte("raw.replies")}, {Key: h.ReplyPartition, Value: []byte{0, 0, 0, 99}},
	}}); err != nil {
		t.Fatal(err)
	}
	<-failed
	r.Close()
	if err := tr.Publish(context.Background(), syncbridge.Message{Topic: syncbridge.DefaultReplyTopic}); err != nil {
		t.Fatal(err)
	}
	b.Close() // the reply subscription's handler calls have returned
	for _, want := range []string{"ERROR syncbridge: handler panicked", "WARN syncbridge: reply not published", "DEBUG syncbridge: dropped reply"} {
		if !rec.has(want) {
			t.Errorf("no log record %q in %q", want, rec.got)
		}
	}
}

// TestClaimNames: the String methods return the names their doc comments
// list, and DefaultHeaderNames the names in the README's header table.
func TestClaimNames(t *testing.T) {
	var got []string
	for r := syncbridge.DropMalformed; r <= syncbridge.DropLate; r++ {
		got = append(got, r.String())
	}
	for r := syncbridge.SkipMalformed; r <= syncbridge.SkipExpired; r++ {
		got = append(got, r.String())
	}
	for s := syncbridge.GatherCount; s <= syncbridge.GatherCanceled; s++ {
		got = append(got, s.String())
	}
	for o := syncbridge.OutcomeReply; o <= syncbridge.OutcomeNoResponders; o++ {
		got = append(got, o.String())
	}
	want := "[malformed foreign unknown duplicate late malformed expired count quiet deadline canceled " +
		"reply remote_error canceled timed_out publish_error overloaded closed invalid no_responders]"
	if fmt.Sprint(got) != want {
		t.Errorf("names %v,\nwant %s", got, want)
	}
	h := syncbridge.DefaultHeaderNames()
	wantH := syncbridge.HeaderNames{
		CorrelationID: "kafka_correlationId", ReplyTopic: "kafka_replyTopic", ReplyPartition: "kafka_replyPartition",
		Deadline: "syncbridge_deadline", ErrorCode: "syncbridge_errorCode", ErrorDescription: "syncbridge_errorDescription",
		Responder: "syncbridge_responder",
	}
	if h != wantH {
		t.Errorf("DefaultHeaderNames() = %+v, want %+v", h, wantH)
	}
}

// TestClaimNoRespondersGo: with WithFailFastNoResponders, Go to a topic
// without responder returns a Call that has already ended with
// ErrNoResponders (ErrNoResponders: "returned at once by Request, Go and
// Gather").
func TestClaimNoRespondersGo(t *testing.T) {
	e := newEnv(t, nil, syncbridge.WithFailFastNoResponders())
	c := e.b.Go(ctxTimeout(t, time.Minute), syncbridge.Message{Topic: "nobody"})
	select {
	case <-c.Done():
	default:
		t.Fatal("Go to a topic without responder returned a Call that has not ended")
	}
	if _, err := c.Result(); !errors.Is(err, syncbridge.ErrNoResponders) {
		t.Errorf("Go: %v, want ErrNoResponders", err)
	}
	if st := e.b.Stats(); st.NoResponders != 1 {
		t.Errorf("stats %+v, want 1 refused for no responders", st)
	}
}

// TestClaimNoGoroutinePerCall: Calls waiting for their replies cost no
// goroutine, whatever their context: shared, without deadline, or one of
// their own with a deadline (README: "No goroutine and no timer per
// request"; Call).
func TestClaimNoGoroutinePerCall(t *testing.T) {
	e := newEnv(t, nil)
	const n = 1000
	shared, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	for _, tc := range []struct {
		name string
		ctx  func() context.Context
	}{
		{"shared", func() context.Context { return shared }},
		{"no deadline", context.Background},
		{"own", func() context.Context { return ctxTimeout(t, time.Hour) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			calls := make([]*syncbridge.Call, n)
			for i := range calls {
				calls[i] = e.b.Go(tc.ctx(), syncbridge.Message{Topic: "nowhere"})
			}
			if st := e.b.Stats(); st.Waiting != n {
				t.Fatalf("%d waiting, want %d", st.Waiting, n)
			}
			if d := runtime.NumGoroutine() - before; d > 10 {
				t.Errorf("%d goroutines more with %d Calls waiting, want none per Call", d, n)
			}
			for _, c := range calls {
				c.Cancel()
			}
		})
	}
}
