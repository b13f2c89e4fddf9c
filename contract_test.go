package syncbridge_test

// Adversarial tests of the error contract: each forces one interleaving
// (of Close, Cancel, the transport's verdict, the reply, the Responder's
// Close) with a transport whose steps the test controls.

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

// guard bounds a wait that must end at once when the code is right.
const guard = 2 * time.Second

// lateWatcher is a transport whose Publish (and PublishAsync) to "req"
// says it holds the request, waits for the test, and only then looks at
// its context, as a transport does that finds a full queue: Done for
// Publish, context.AfterFunc for PublishAsync. Meanwhile the Call may end.
type lateWatcher struct {
	*memory.Transport
	entered chan struct{}
	goOn    chan struct{}
	ended   chan error // what the transport saw of its context
}

func newLateWatcher(t *testing.T) *lateWatcher {
	tr := &memory.Transport{}
	t.Cleanup(func() { tr.Close() })
	return &lateWatcher{tr, make(chan struct{}), make(chan struct{}), make(chan error, 1)}
}

func (l *lateWatcher) Publish(ctx context.Context, m syncbridge.Message) error {
	if m.Topic != "req" {
		return l.Transport.Publish(ctx, m)
	}
	l.entered <- struct{}{}
	<-l.goOn
	select {
	case <-ctx.Done(): // a full queue: wait for room or for the end
		l.ended <- ctx.Err()
		return fmt.Errorf("queue full: %w (%w)", ctx.Err(), syncbridge.ErrNotSent)
	case <-time.After(guard):
		l.ended <- errors.New("the context of a Call that ended never ended")
		return errors.New("gave up")
	}
}

type lateWatcherAsync struct{ *lateWatcher }

func (l lateWatcherAsync) PublishAsync(ctx context.Context, m syncbridge.Message, done func(error)) {
	if m.Topic != "req" {
		done(l.Transport.Publish(ctx, m))
		return
	}
	l.entered <- struct{}{}
	<-l.goOn
	t := time.AfterFunc(guard, func() {
		l.ended <- errors.New("the context of a Call that ended never ended")
		done(errors.New("gave up"))
	})
	context.AfterFunc(ctx, func() {
		if t.Stop() {
			l.ended <- ctx.Err()
			done(fmt.Errorf("dropped from the queue: %w (%w)", ctx.Err(), syncbridge.ErrNotSent))
		}
	})
}

// TestCloseBeforeTransportWatches: Close ends a Call that the transport
// holds but has not watched yet. The transport's context must end all the
// same (a Call that is over leaves nothing queued), else a synchronous
// Publish that waits for room blocks its Request past Close.
func TestCloseBeforeTransportWatches(t *testing.T) {
	for _, async := range []bool{false, true} {
		t.Run(fmt.Sprint("async=", async), func(t *testing.T) {
			lw := newLateWatcher(t)
			var tr syncbridge.Transport = lw
			if async {
				tr = lateWatcherAsync{lw}
			}
			b, err := syncbridge.New(context.Background(), tr)
			if err != nil {
				t.Fatal(err)
			}
			res := make(chan error, 1)
			go func() {
				var err error
				if async {
					_, err = b.Go(ctxTimeout(t, time.Hour), syncbridge.Message{Topic: "req"}).Wait(context.Background())
				} else {
					_, err = b.Request(ctxTimeout(t, time.Hour), syncbridge.Message{Topic: "req"})
				}
				res <- err
			}()
			<-lw.entered
			closed := make(chan struct{})
			go func() { b.Close(); close(closed) }()
			<-closed // the Call ended with ErrClosed; the transport has not looked at its ctx
			close(lw.goOn)
			if err := <-lw.ended; !errors.Is(err, context.Canceled) {
				t.Errorf("transport's context: %v, want it ended (context.Canceled) when the Call ended", err)
			}
			if err := <-res; !errors.Is(err, syncbridge.ErrClosed) {
				t.Errorf("request: %v, want ErrClosed", err)
			}
			if st := b.Stats(); st.Closed != 1 || st.InFlight != 0 || outcomes(st) != 1 {
				t.Errorf("stats %+v, want 1 closed", st)
			}
		})
	}
}

// outcomes sums the Stats outcome fields.
func outcomes(st syncbridge.Stats) uint64 {
	return st.Replies + st.RemoteErrors + st.Canceled + st.TimedOut + st.PublishErrors + st.Overloaded + st.Closed + st.NoResponders
}

// heldDone is an AsyncPublisher that keeps the done of each publish to
// "req" for the test, delivering the message first when deliver says so.
type heldDone struct {
	*memory.Transport
	deliver bool
	dones   chan heldPub
}

// heldPub is a publish heldDone holds: its context and its done.
type heldPub struct {
	ctx  context.Context
	done func(error)
}

func (h *heldDone) PublishAsync(ctx context.Context, m syncbridge.Message, done func(error)) {
	if m.Topic != "req" {
		done(h.Transport.Publish(ctx, m))
		return
	}
	if h.deliver {
		if err := h.Transport.Publish(context.Background(), m); err != nil {
			done(err)
			return
		}
	}
	h.dones <- heldPub{ctx, done}
}

// TestCancelThenVerdict: a Call cancelled (or timed out) while the
// transport holds it ends with the transport's verdict; whatever that
// verdict's own cause, the error wraps the context's error (Cancel's and
// Request's documentation) and counts where that error says: Stats and
// error agree, whichever of the two comes first.
func TestCancelThenVerdict(t *testing.T) {
	tooLarge := fmt.Errorf("message too large: %w", syncbridge.ErrNotSent)
	reset := errors.New("connection reset: the request may have been written")
	for _, v := range []struct {
		name    string
		verdict error
		want    error // ErrPublish or ErrNoReply
	}{
		{"not sent", tooLarge, syncbridge.ErrPublish},
		{"maybe sent", reset, syncbridge.ErrNoReply},
	} {
		for _, end := range []string{"Cancel", "ctx cancel", "deadline"} {
			t.Run(v.name+"/"+end, func(t *testing.T) {
				// In a bubble: the deadline (1 ms) passes only once the test
				// waits for it, never before Go publishes, however busy the
				// machine (a Call on an ended context is not published at all).
				synctest.Test(t, func(t *testing.T) {
					tr := &memory.Transport{}
					defer tr.Close()
					h := &heldDone{Transport: tr, dones: make(chan heldPub, 1)}
					b, err := syncbridge.New(context.Background(), h)
					if err != nil {
						t.Fatal(err)
					}
					defer b.Close()
					ctx, cancel := context.WithCancel(context.Background())
					defer cancel()
					cause := context.Canceled
					if end == "deadline" {
						ctx, cancel = context.WithTimeout(ctx, time.Millisecond)
						defer cancel()
						cause = context.DeadlineExceeded
					}
					call := b.Go(ctx, syncbridge.Message{Topic: "req"})
					held := <-h.dones
					switch end {
					case "Cancel":
						call.Cancel()
					case "ctx cancel":
						cancel()
					case "deadline":
						<-ctx.Done()
					}
					// The Call waits for the verdict: the transport holds it.
					// Its expiry reaches the transport's context (a real
					// transport's queue would drop it now); then the verdict.
					<-held.ctx.Done()
					if _, err := call.Result(); err != syncbridge.ErrPending {
						t.Fatalf("the Call ended (%v) before the transport's verdict", err)
					}
					held.done(v.verdict)
					_, err = call.Wait(ctxTimeout(t, guard))
					if !errors.Is(err, v.want) || !errors.Is(err, cause) || !errors.Is(err, v.verdict) {
						t.Errorf("%v: want %v wrapping %v and the transport's error", err, v.want, cause)
					}
					checkStatsMatch(t, b, []error{err})
				})
			})
		}
	}
}

// checkStatsMatch checks that the Bridge's Stats count errs (the outcomes
// of every request it made) field by field, as classify says, and that
// nothing is in flight.
func checkStatsMatch(t *testing.T, b *syncbridge.Bridge, errs []error) {
	t.Helper()
	var want syncbridge.Stats
	for _, err := range errs {
		*classify(t, &want, err)++
	}
	st := b.Stats()
	if st.InFlight != 0 || st.Waiting != 0 {
		t.Errorf("stats %+v: something still in flight", st)
	}
	st.InFlight, st.Waiting, st.Dropped = 0, 0, syncbridge.DroppedReplies{}
	if st != want {
		t.Errorf("stats %+v\n want %+v (from the errors)", st, want)
	}
}

// classify returns the Stats field that err belongs in, by what it wraps,
// and checks the errors.Is relations errors.go documents.
func classify(t *testing.T, st *syncbridge.Stats, err error) *uint64 {
	t.Helper()
	var re *syncbridge.RemoteError
	pub, noReply := errors.Is(err, syncbridge.ErrPublish), errors.Is(err, syncbridge.ErrNoReply)
	if pub && noReply {
		t.Errorf("%v is both ErrPublish and ErrNoReply", err)
	}
	if errors.Is(err, syncbridge.ErrNotSent) && !pub {
		t.Errorf("%v wraps ErrNotSent but not ErrPublish", err)
	}
	if pub && !errors.Is(err, syncbridge.ErrNotSent) {
		t.Errorf("%v is ErrPublish without the transport's ErrNotSent", err)
	}
	if noReply && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%v is ErrNoReply without the context's error", err)
	}
	switch {
	case err == nil:
		return &st.Replies
	case errors.As(err, &re):
		return &st.RemoteErrors
	case errors.Is(err, syncbridge.ErrClosed) && !pub && !noReply:
		return &st.Closed
	case errors.Is(err, syncbridge.ErrOverloaded):
		return &st.Overloaded
	case errors.Is(err, syncbridge.ErrNoResponders):
		return &st.NoResponders
	case errors.Is(err, context.Canceled) && (pub || noReply):
		return &st.Canceled
	case errors.Is(err, context.DeadlineExceeded) && (pub || noReply):
		return &st.TimedOut
	case pub:
		return &st.PublishErrors
	}
	t.Errorf("unexpected error %v", err)
	return new(uint64)
}

// closeDuringReply is a memory transport whose Publish of a reply (to the
// Bridge's reply topic) waits, when armed, until the Responder's Close has
// begun (the handler's context, which the test hands it, is cancelled),
// and then publishes: the reply of a handler that returned just before
// Close.
type closeDuringReply struct {
	*memory.Transport
	hctx     chan context.Context // the handler's context, once
	entered  chan struct{}
	canceled chan struct{}
}

func (c *closeDuringReply) Publish(ctx context.Context, m syncbridge.Message) error {
	if m.Topic == syncbridge.DefaultReplyTopic {
		hctx := <-c.hctx
		c.entered <- struct{}{}
		<-hctx.Done() // Close began
		close(c.canceled)
	}
	return c.Transport.Publish(ctx, m)
}

// TestResponderCloseAfterHandlerReturned: a handler returns, and Close
// begins before its reply is published. Close promises that the replies
// of the handler calls in progress are published: the caller gets it.
func TestResponderCloseAfterHandlerReturned(t *testing.T) {
	tr := newMemory(t)
	cd := &closeDuringReply{tr, make(chan context.Context, 1), make(chan struct{}), make(chan struct{})}
	r := newResponder(t, cd, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		ctx.Done() // registered: Close cancels it
		cd.hctx <- ctx
		return syncbridge.Message{Value: req.Value}, nil
	})
	b := newBridge(t, tr)
	call := b.Go(ctxTimeout(t, guard), syncbridge.Message{Topic: "req", Value: []byte("v")})
	<-cd.entered
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	<-cd.canceled
	reply, err := call.Wait(context.Background())
	if err != nil || string(reply.Value) != "v" {
		t.Errorf("reply of a handler that returned before Close: %v, %v; want it", reply, err)
	}
	<-closed
	if st := r.Stats(); st.ReplyFailed != 0 || st.ReplyExpired != 0 || st.InProgress != 0 {
		t.Errorf("responder stats %+v", st)
	}
}
