package syncbridge_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

// blockingTransport's Publish to "req" blocks until its context ends, then
// returns err(ctx): the shape of a broker that never acknowledges.
type blockingTransport struct {
	*memory.Transport
	err func(ctx context.Context) error
}

func (b blockingTransport) Publish(ctx context.Context, m syncbridge.Message) error {
	if m.Topic != "req" {
		return b.Transport.Publish(ctx, m)
	}
	<-ctx.Done()
	return b.err(ctx)
}

// TestRequestIsGoPlusWait: for the same failure, Request and Go (with a
// deadline, with none so that the default timeout applies, and cancelled)
// give the same error and count it in the same Stats field, every time.
func TestRequestIsGoPlusWait(t *testing.T) {
	verdicts := []struct {
		name string
		err  func(ctx context.Context) error
		want error // ErrPublish or ErrNoReply
	}{
		{"not sent", func(ctx context.Context) error {
			return fmt.Errorf("queued, dropped: %w (%w)", ctx.Err(), syncbridge.ErrNotSent)
		}, syncbridge.ErrPublish},
		{"maybe sent", func(ctx context.Context) error { return fmt.Errorf("in flight: %w", ctx.Err()) }, syncbridge.ErrNoReply},
	}
	ends := []struct {
		name           string
		defaultTimeout time.Duration
		ctx            func() (context.Context, context.CancelFunc)
		cause          error
		stat           func(syncbridge.Stats) uint64
	}{
		{"deadline", time.Hour, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, context.DeadlineExceeded, func(s syncbridge.Stats) uint64 { return s.TimedOut }},
		{"default timeout", 20 * time.Millisecond, func() (context.Context, context.CancelFunc) {
			return context.WithCancel(context.Background())
		}, context.DeadlineExceeded, func(s syncbridge.Stats) uint64 { return s.TimedOut }},
		{"cancel", time.Hour, func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(2*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled, func(s syncbridge.Stats) uint64 { return s.Canceled }},
	}
	const n = 50
	for _, v := range verdicts {
		for _, e := range ends {
			t.Run(v.name+"/"+e.name, func(t *testing.T) {
				// In a bubble: each context ends only once its Call waits on
				// the transport, never before it is published, however busy the
				// machine (a Call on an ended context is ErrPublish, never sent).
				synctest.Test(t, func(t *testing.T) {
					tr := &memory.Transport{}
					defer tr.Close()
					b, err := syncbridge.New(context.Background(), blockingTransport{tr, v.err}, syncbridge.WithDefaultTimeout(e.defaultTimeout))
					if err != nil {
						t.Fatal(err)
					}
					defer b.Close()
					check := func(how string, err error) {
						t.Helper()
						other := syncbridge.ErrNoReply
						if v.want == syncbridge.ErrNoReply {
							other = syncbridge.ErrPublish
						}
						if !errors.Is(err, v.want) || !errors.Is(err, e.cause) || errors.Is(err, other) {
							t.Fatalf("%s: %v, want %v and %v", how, err, v.want, e.cause)
						}
					}
					var wg sync.WaitGroup
					for range n {
						wg.Add(2)
						go func() {
							defer wg.Done()
							ctx, cancel := e.ctx()
							defer cancel()
							_, err := b.Request(ctx, syncbridge.Message{Topic: "req"})
							check("Request", err)
						}()
						go func() {
							defer wg.Done()
							ctx, cancel := e.ctx()
							defer cancel()
							_, err := b.Go(ctx, syncbridge.Message{Topic: "req"}).Wait(context.Background())
							check("Go", err)
						}()
					}
					wg.Wait()
					st := b.Stats()
					if got := e.stat(st); got != 2*n {
						t.Errorf("stats %+v: %d counted as %s, want %d", st, got, e.name, 2*n)
					}
					if st.PublishErrors != 0 || st.InFlight != 0 || st.Waiting != 0 {
						t.Errorf("stats %+v: want no publish errors (the caller's context ended each) and nothing in flight", st)
					}
				})
			})
		}
	}
}

// asyncTransport acknowledges publishes to "req" only when the test says.
type asyncTransport struct {
	*memory.Transport
	acks chan func(error) // the done of each publish to "req", in order
}

func (a *asyncTransport) PublishAsync(ctx context.Context, m syncbridge.Message, done func(error)) {
	if m.Topic != "req" {
		done(a.Transport.Publish(ctx, m))
		return
	}
	// Delivered at once, acknowledged later: a reply can beat the ack.
	err := a.Transport.Publish(ctx, m)
	if err != nil {
		done(err)
		return
	}
	a.acks <- done
}

// TestGoDoesNotWaitForAck: with an AsyncPublisher, Go returns before the
// broker's acknowledgement; the reply can even arrive first.
func TestGoDoesNotWaitForAck(t *testing.T) {
	tr := &memory.Transport{}
	defer tr.Close()
	at := &asyncTransport{Transport: tr, acks: make(chan func(error), 10)}
	r, err := syncbridge.NewResponder(context.Background(), at, "req", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := syncbridge.New(context.Background(), at)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	call := b.Go(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req", Value: []byte("v")})
	// Go returned while the ack is still held by the test.
	reply, err := call.Wait(ctxTimeout(t, 10*time.Second))
	if err != nil || string(reply.Value) != "v" {
		t.Fatalf("reply before the ack: %v, %v", reply, err)
	}
	(<-at.acks)(nil) // the ack, after the Call ended: ignored
	if st := b.Stats(); st.Replies != 1 || st.InFlight != 0 {
		t.Errorf("stats %+v, want 1 reply and nothing in flight", st)
	}
}

// TestAsyncNotSent: a transport verdict of "not sent" ends the Call with
// ErrPublish, counted as a publish error.
func TestAsyncNotSent(t *testing.T) {
	tr := &memory.Transport{}
	defer tr.Close()
	nt := notSentAsync{tr}
	b, err := syncbridge.New(context.Background(), nt)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, err = b.Request(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req"})
	if !errors.Is(err, syncbridge.ErrPublish) || !errors.Is(err, syncbridge.ErrNotSent) {
		t.Errorf("Request: %v, want ErrPublish", err)
	}
	if st := b.Stats(); st.PublishErrors != 1 {
		t.Errorf("stats %+v, want 1 publish error", st)
	}
}

type notSentAsync struct{ *memory.Transport }

func (n notSentAsync) PublishAsync(ctx context.Context, m syncbridge.Message, done func(error)) {
	if m.Topic == "req" {
		go done(fmt.Errorf("message too large: %w", syncbridge.ErrNotSent))
		return
	}
	done(n.Transport.Publish(ctx, m))
}

// TestCancelledNeverErrPublishAndRun is the contract's test on the memory
// transport: requests with unique payloads, cancelled at random moments,
// many of them while Publish waits for room in a full queue; the responder
// records every payload it receives. Not one request that returned
// ErrPublish, from Request or from Go, reached the responder.
func TestCancelledNeverErrPublishAndRun(t *testing.T) {
	tr := &memory.Transport{QueueSize: 2, Partitions: 2}
	defer tr.Close()
	var mu sync.Mutex
	seen := map[string]bool{}
	r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		mu.Lock()
		seen[string(req.Value)] = true
		mu.Unlock()
		return syncbridge.Message{Value: req.Value}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := syncbridge.New(context.Background(), tr)
	if err != nil {
		t.Fatal(err)
	}
	const n = 4000
	var pmu sync.Mutex
	publishErrs := map[string][]string{} // by Request and Go
	var wg sync.WaitGroup
	var ok, noReply atomic.Int64
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			time.AfterFunc(time.Duration(rand.IntN(2000))*time.Microsecond, cancel)
			payload := fmt.Sprintf("request %d", i)
			how := "Request"
			var err error
			if i%2 == 0 {
				how = "Go"
				_, err = b.Go(ctx, syncbridge.Message{Topic: "req", Value: []byte(payload)}).Wait(context.Background())
			} else {
				_, err = b.Request(ctx, syncbridge.Message{Topic: "req", Value: []byte(payload)})
			}
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, syncbridge.ErrPublish):
				pmu.Lock()
				publishErrs[how] = append(publishErrs[how], payload)
				pmu.Unlock()
			case errors.Is(err, syncbridge.ErrNoReply):
				noReply.Add(1)
			default:
				t.Errorf("unexpected error %v", err)
			}
		}()
	}
	wg.Wait()
	b.Close()
	r.Close() // every handler call has returned
	mu.Lock()
	defer mu.Unlock()
	for _, how := range []string{"Request", "Go"} {
		ran := 0
		for _, p := range publishErrs[how] {
			if seen[p] {
				ran++
			}
		}
		t.Logf("%s: %d ErrPublish, of which the responder saw %d", how, len(publishErrs[how]), ran)
		if ran != 0 {
			t.Errorf("%s: %d requests that returned ErrPublish were handled by the responder", how, ran)
		}
		if len(publishErrs[how]) == 0 {
			t.Errorf("%s: no request returned ErrPublish: the test cancelled none before it was queued", how)
		}
	}
	t.Logf("%d requests: %d replies, %d ErrNoReply", n, ok.Load(), noReply.Load())
}

// TestRequestAllocs: a Request whose context has no deadline (an HTTP
// handler passing r.Context()) costs no more allocations than one with a
// deadline, and both stay within 4 (the Responder's included).
func TestRequestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts (sync.Pool drops items at random)")
	}
	e := newEnv(t, echo)
	msg := syncbridge.Message{Topic: "req", Value: []byte("v")}
	withDeadline, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	noDeadline, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	measure := func(ctx context.Context) float64 {
		return testing.AllocsPerRun(2000, func() {
			if _, err := e.b.Request(ctx, msg); err != nil {
				t.Fatal(err)
			}
		})
	}
	d, n := measure(withDeadline), measure(noDeadline)
	t.Logf("allocations per Request: %.2f with a deadline, %.2f without", d, n)
	if n > d {
		t.Errorf("a Request without deadline costs %.2f allocations, more than %.2f with one", n, d)
	}
	if d > 4 || n > 4 {
		t.Errorf("a Request costs %.2f / %.2f allocations, want at most 4", d, n)
	}
}

// heldUntilCtx is an AsyncPublisher that keeps "req" publishes queued until
// their context ends, then drops them: certainly not sent. entered says
// when it holds one.
type heldUntilCtx struct {
	*memory.Transport
	entered chan struct{}
}

func (h heldUntilCtx) PublishAsync(ctx context.Context, m syncbridge.Message, done func(error)) {
	if m.Topic != "req" {
		done(h.Transport.Publish(ctx, m))
		return
	}
	context.AfterFunc(ctx, func() { done(fmt.Errorf("dropped from the queue: %w (%w)", ctx.Err(), syncbridge.ErrNotSent)) })
	h.entered <- struct{}{}
}

// TestEndReachesTransport: whatever ends a Call while the transport holds
// its request — Cancel (with a far deadline), Close — ends the context the
// transport watches, so the request is dropped at once and the Call ends
// at once, with context.Canceled for Cancel.
func TestEndReachesTransport(t *testing.T) {
	tr := &memory.Transport{}
	defer tr.Close()
	h := heldUntilCtx{tr, make(chan struct{}, 10)}
	b, err := syncbridge.New(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	call := b.Go(ctxTimeout(t, time.Hour), syncbridge.Message{Topic: "req"})
	<-h.entered
	call.Cancel()
	if _, err := call.Wait(ctxTimeout(t, 10*time.Second)); !errors.Is(err, syncbridge.ErrPublish) || !errors.Is(err, context.Canceled) {
		t.Errorf("Cancel with a far deadline: %v, want ErrPublish and context.Canceled at once", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := b.Request(ctxTimeout(t, time.Hour), syncbridge.Message{Topic: "req"})
		done <- err
	}()
	<-h.entered
	b.Close()
	select {
	case err := <-done:
		if !errors.Is(err, syncbridge.ErrClosed) {
			t.Errorf("Request during Close: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Request still waiting 10 s after Close: the transport's context never ended")
	}
}

// notSentOnCancel drops "req" publishes when their context ends, from the
// transport's own AfterFunc: its verdict races with the caller's expiry.
type notSentOnCancel struct{ *memory.Transport }

func (n notSentOnCancel) PublishAsync(ctx context.Context, m syncbridge.Message, done func(error)) {
	if m.Topic != "req" {
		done(n.Transport.Publish(ctx, m))
		return
	}
	context.AfterFunc(ctx, func() { done(fmt.Errorf("dropped: %w (%w)", ctx.Err(), syncbridge.ErrNotSent)) })
}

// TestNotSentVerdictRace: a request the transport reports as not sent is
// ErrPublish from Request as from Go, whichever of the verdict and the
// caller's own expiry comes first.
func TestNotSentVerdictRace(t *testing.T) {
	tr := &memory.Transport{}
	defer tr.Close()
	b, err := syncbridge.New(context.Background(), notSentOnCancel{tr})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := range 2000 {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(time.Duration(i%5)*100*time.Microsecond, cancel)
		var err error
		if i%2 == 0 {
			_, err = b.Request(ctx, syncbridge.Message{Topic: "req"})
		} else {
			_, err = b.Go(ctx, syncbridge.Message{Topic: "req"}).Wait(context.Background())
		}
		cancel()
		if !errors.Is(err, syncbridge.ErrPublish) || !errors.Is(err, context.Canceled) {
			t.Fatalf("request %d: %v, want ErrPublish and context.Canceled", i, err)
		}
	}
}
