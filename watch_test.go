package syncbridge_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/syncbridge/syncbridge"
)

// TestSharedContextCancel: Calls started by Go with one context all end
// when it is cancelled, with ErrNoReply and context.Canceled, counted as
// cancelled; the Bridge then watches no context. Calls started on it
// after it ended end at once the same way.
func TestSharedContextCancel(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		<-release // no reply before the cancel
		return syncbridge.Message{}, nil
	}, syncbridge.WithDefaultTimeout(time.Hour))
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	const n = 50
	calls := make([]*syncbridge.Call, n)
	for i := range calls {
		calls[i] = e.b.Go(ctx, syncbridge.Message{Topic: "req"})
	}
	if got := syncbridge.WatchedContexts(e.b); got != 1 {
		t.Errorf("%d contexts watched for %d Calls on one, want 1", got, n)
	}
	cancel()
	late := e.b.Go(ctx, syncbridge.Message{Topic: "req"})
	for i, c := range append(calls, late) {
		_, err := c.Wait(context.Background())
		if !errors.Is(err, syncbridge.ErrNoReply) || !errors.Is(err, context.Canceled) {
			if i == n && errors.Is(err, syncbridge.ErrPublish) && errors.Is(err, context.Canceled) {
				continue // the late one: not sent at all
			}
			t.Fatalf("Call %d: %v, want ErrNoReply and context.Canceled", i, err)
		}
	}
	if st := e.b.Stats(); st.Canceled != n+1 || st.InFlight != 0 || st.Waiting != 0 {
		t.Errorf("stats %+v, want %d cancelled, nothing in flight", st, n+1)
	}
	if got := syncbridge.WatchedContexts(e.b); got != 0 {
		t.Errorf("%d contexts watched after every Call ended, want 0", got)
	}
}

// TestSharedContextDeadline: Calls started by Go with one context with a
// deadline end with ErrNoReply and context.DeadlineExceeded when it passes,
// counted as timed out.
func TestSharedContextDeadline(t *testing.T) {
	// In a bubble: every Call starts before the deadline passes, however
	// busy the machine.
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		e := newEnv(t, func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
			<-release
			return syncbridge.Message{}, nil
		})
		defer close(release)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		const n = 20
		calls := make([]*syncbridge.Call, n)
		for i := range calls {
			calls[i] = e.b.Go(ctx, syncbridge.Message{Topic: "req"})
		}
		for i, c := range calls {
			if _, err := c.Wait(context.Background()); !errors.Is(err, syncbridge.ErrNoReply) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Call %d: %v, want ErrNoReply and context.DeadlineExceeded", i, err)
			}
		}
		if st := e.b.Stats(); st.TimedOut != n {
			t.Errorf("stats %+v, want %d timed out", st, n)
		}
		if got := syncbridge.WatchedContexts(e.b); got != 0 {
			t.Errorf("%d contexts watched after every Call ended, want 0", got)
		}
	})
}

// TestSharedContextReplies: Calls on shared contexts that get their replies
// leave nothing watched, and the contexts' cancellation later reaches no
// Call; meanwhile goroutines start Calls on a few contexts, some cancelled
// while Calls are being added to them (run under -race).
func TestSharedContextReplies(t *testing.T) {
	e := newEnv(t, echo)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 30 {
				ctx, cancel := context.WithCancel(context.Background())
				calls := make([]*syncbridge.Call, 10)
				for i := range calls {
					if g == 0 && round%3 == 0 && i == 5 {
						cancel() // the rest are refused or cancelled
					}
					calls[i] = e.b.Go(ctx, syncbridge.Message{Topic: "req", Value: []byte("v")})
				}
				for i, c := range calls {
					reply, err := c.Wait(context.Background())
					switch {
					case err == nil && string(reply.Value) == "v":
					case errors.Is(err, context.Canceled) && ctx.Err() != nil:
					default:
						t.Errorf("goroutine %d round %d Call %d: %v, %v", g, round, i, reply, err)
					}
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	if got := syncbridge.WatchedContexts(e.b); got != 0 {
		t.Errorf("%d contexts watched after every Call ended, want 0", got)
	}
	if st := e.b.Stats(); st.InFlight != 0 || st.Waiting != 0 {
		t.Errorf("stats %+v, want nothing in flight", st)
	}
}

// TestDefaultTimeoutGo: Calls started by Go with a context without a
// deadline, some answered and some not, end when their own default timeout
// has passed, not before, with ErrNoReply and context.DeadlineExceeded,
// counted as timed out; answered ones end with their replies. Nothing is
// left in the Bridge's list of timeouts.
func TestDefaultTimeoutGo(t *testing.T) {
	// In a bubble: the answered Calls are answered before their timeout,
	// however busy the machine.
	synctest.Test(t, func(t *testing.T) {
		const timeout = 100 * time.Millisecond
		e := newEnv(t, nil, syncbridge.WithDefaultTimeout(timeout))
		r, err := syncbridge.NewResponder(context.Background(), e.tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
			if string(req.Value) == "drop" {
				<-ctx.Done() // the caller's deadline, passed on: no reply
				return syncbridge.Message{}, ctx.Err()
			}
			return syncbridge.Message{Value: req.Value}, nil
		}, syncbridge.WithConcurrentHandlers())
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		type started struct {
			c    *syncbridge.Call
			at   time.Time
			drop bool
		}
		var calls []started
		for i := range 40 {
			drop := i%3 != 0
			v := "keep"
			if drop {
				v = "drop"
			}
			at := time.Now() // before Go takes its own reading
			calls = append(calls, started{e.b.Go(context.Background(), syncbridge.Message{Topic: "req", Value: []byte(v)}), at, drop})
			if i%10 == 9 {
				time.Sleep(10 * time.Millisecond) // staggered deadlines, not a synchronisation
			}
		}
		drops := 0
		for i, s := range calls {
			reply, err := s.c.Wait(context.Background())
			took := time.Since(s.at)
			switch {
			case s.drop:
				drops++
				if !errors.Is(err, syncbridge.ErrNoReply) || !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Call %d: %v, want ErrNoReply and context.DeadlineExceeded", i, err)
				}
				if took < timeout {
					t.Errorf("Call %d ended after %v, before its default timeout %v", i, took, timeout)
				}
			case err != nil || string(reply.Value) != "keep":
				t.Errorf("Call %d: %v, %v; want its reply", i, reply, err)
			}
		}
		if st := e.b.Stats(); st.TimedOut != uint64(drops) || st.InFlight != 0 {
			t.Errorf("stats %+v, want %d timed out and nothing in flight", st, drops)
		}
		if n := syncbridge.TimedCalls(e.b); n != 0 {
			t.Errorf("%d Calls left in the timeouts list", n)
		}
	})
}
