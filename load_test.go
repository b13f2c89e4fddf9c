package syncbridge_test

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

// payload makes a per-request payload that names caller and request.
func payload(caller, i int) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, uint64(caller))
	binary.BigEndian.PutUint64(b[8:], uint64(i))
	return b
}

// TestLoad sends 1,000,000 requests from 10,000 concurrent callers through
// the memory transport to an echo responder: every reply reaches its own
// caller, none is lost, and afterwards nothing is left behind.
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: skipped with -short")
	}
	const total, inFlight = 1_000_000, 10_000
	tr := &memory.Transport{}
	r, err := syncbridge.NewResponder(context.Background(), tr, "req", echo)
	if err != nil {
		t.Fatal(err)
	}
	// A generous timeout: a lost reply still fails the test, and a slow
	// machine does not.
	b, err := syncbridge.New(context.Background(), tr, syncbridge.WithDefaultTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	// Each goroutine keeps perG requests in flight: one by Request, the
	// rest as Calls (see raceEnabled).
	perG := 1
	if raceEnabled {
		perG = 4
	}
	var next, ok, misrouted, failed atomic.Int64
	var wg sync.WaitGroup
	for g := range inFlight / perG {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(int64(perG))
				if n > total {
					return
				}
				calls := make([]*syncbridge.Call, perG-1)
				for j := range calls {
					calls[j] = b.Go(context.Background(), syncbridge.Message{Topic: "req", Value: payload(g, int(n)-j)})
				}
				want := payload(g, int(n)-perG+1)
				reply, err := b.Request(context.Background(), syncbridge.Message{Topic: "req", Value: want})
				check := func(reply *syncbridge.Message, err error, want []byte) {
					switch {
					case err != nil:
						failed.Add(1)
					case string(reply.Value) != string(want):
						misrouted.Add(1)
					default:
						ok.Add(1)
					}
				}
				check(reply, err, want)
				for j, c := range calls {
					reply, err := c.Wait(context.Background())
					check(reply, err, payload(g, int(n)-j))
				}
			}
		}()
	}
	wg.Wait()
	if ok.Load() != total || misrouted.Load() != 0 || failed.Load() != 0 {
		t.Errorf("%d ok, %d misrouted, %d failed; want %d ok", ok.Load(), misrouted.Load(), failed.Load(), total)
	}
	st := b.Stats()
	if st.Waiting != 0 || st.InFlight != 0 || st.Replies != total {
		t.Errorf("after the load: %+v", st)
	}
	b.Close()
	r.Close()
	tr.Close()
	goleak.VerifyNone(t)
}

// TestCancellationStorm cancels and times out requests at random while
// they are in flight, against a responder that is sometimes slow: every
// request ends with its own reply or ErrNoReply, every late reply is
// dropped and counted, and nothing is left behind.
func TestCancellationStorm(t *testing.T) {
	const callers, perCaller = 2000, 100
	tr := &memory.Transport{}
	r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		if req.Value[0]%4 == 0 { // sometimes slow, for timeouts to happen
			select {
			case <-time.After(time.Duration(req.Value[1]) * 10 * time.Microsecond):
			case <-ctx.Done():
			}
		}
		return syncbridge.Message{Value: req.Value}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := syncbridge.New(context.Background(), tr)
	if err != nil {
		t.Fatal(err)
	}
	var ok, noReply, misrouted, other atomic.Int64
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 1))
			for i := range perCaller {
				want := append([]byte{byte(rng.IntN(256)), byte(rng.IntN(256))}, payload(c, i)...)
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(3000))*time.Microsecond)
				var reply *syncbridge.Message
				var err error
				switch rng.IntN(3) {
				case 0: // cancelled by the caller mid-flight
					call := b.Go(ctx, syncbridge.Message{Topic: "req", Value: want})
					if rng.IntN(2) == 0 {
						call.Cancel()
					}
					reply, err = call.Wait(context.Background())
				case 1: // cancel from another goroutine
					go cancel()
					reply, err = b.Request(ctx, syncbridge.Message{Topic: "req", Value: want})
				default: // deadline
					reply, err = b.Request(ctx, syncbridge.Message{Topic: "req", Value: want})
				}
				cancel()
				switch {
				case err == nil && string(reply.Value) == string(want):
					ok.Add(1)
				case err == nil:
					misrouted.Add(1)
				case errors.Is(err, syncbridge.ErrNoReply) || errors.Is(err, syncbridge.ErrPublish):
					noReply.Add(1)
				default:
					other.Add(1)
					t.Errorf("unexpected error: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	// Every reply the responder publishes from now on is late. Close the
	// responder (it waits for its handlers, whose replies are then out),
	// then flush the reply subscription with one more request.
	r.Close()
	flush, err := syncbridge.NewResponder(context.Background(), tr, "flush", echo)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Request(context.Background(), syncbridge.Message{Topic: "flush"}); err != nil {
		t.Fatal(err)
	}
	st, rst := b.Stats(), r.Stats()
	t.Logf("%d ok, %d without reply; bridge %+v; responder %+v", ok.Load(), noReply.Load(), st, rst)
	if misrouted.Load() != 0 || other.Load() != 0 {
		t.Errorf("%d misrouted, %d unexpected errors", misrouted.Load(), other.Load())
	}
	if ok.Load()+noReply.Load() != callers*perCaller {
		t.Errorf("%d ok + %d without reply != %d requests", ok.Load(), noReply.Load(), callers*perCaller)
	}
	if ok.Load() == 0 || noReply.Load() == 0 {
		t.Errorf("the storm did not mix outcomes: %d ok, %d without reply", ok.Load(), noReply.Load())
	}
	// Each reply published either reached its caller or was dropped late.
	replied := rst.Handled - rst.ReplyFailed - rst.ReplyExpired
	dropped := st.Dropped.Late + st.Dropped.Duplicate
	if got := st.Replies - 1 + dropped; got != replied { // -1: the flush request
		t.Errorf("%d replies received + %d dropped late != %d replies published", st.Replies-1, dropped, replied)
	}
	if st.Waiting != 0 || st.InFlight != 0 {
		t.Errorf("after the storm: %d waiting, %d in flight", st.Waiting, st.InFlight)
	}
	b.Close()
	flush.Close()
	tr.Close()
	goleak.VerifyNone(t)
}
