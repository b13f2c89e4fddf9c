package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
)

// endRecorder is a RequestEndHook that keeps every request's ID and error.
type endRecorder struct {
	mu   sync.Mutex // protects ends
	ends []requestEnd
}

type requestEnd struct {
	id  string // "" for a request refused before it was published
	err error
}

func (r *endRecorder) OnRequestEnd(info *syncbridge.RequestInfo) {
	r.mu.Lock()
	r.ends = append(r.ends, requestEnd{info.ID, info.Err})
	r.mu.Unlock()
}

// TestBridgeCancelNotSent is issue 8's test of "ErrPublish means certainly
// not written", through a Bridge and a Responder on Kafka: thousands of
// requests, a third of them cancelled at random moments during publish;
// the Responder records the correlation ID of every request it receives;
// no request that ended with ErrPublish is among them, for Request and Go
// alike.
func TestBridgeCancelNotSent(t *testing.T) {
	for _, mode := range []string{"Request", "Go"} {
		t.Run(mode, func(t *testing.T) { testBridgeCancelNotSent(t, mode == "Go") })
	}
}

func testBridgeCancelNotSent(t *testing.T, useGo bool) {
	e := newEnv(t)
	if e.cluster != nil {
		slowProduce(e.cluster, 3*time.Millisecond)
	}
	const parts = 4
	requests, replies := e.topic(t, parts), e.topic(t, parts)
	ctx := testCtx(t, 180*time.Second)
	names := syncbridge.DefaultHeaderNames()

	var (
		mu   sync.Mutex // protects seen
		seen = make(map[string]int)
	)
	handler := func(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		id, _ := req.Header(names.CorrelationID)
		mu.Lock()
		seen[string(id)]++
		mu.Unlock()
		return syncbridge.Message{Value: req.Value}, nil
	}
	// Without concurrent handlers a partition's requests are handled in
	// order: once the markers below are answered, every request written
	// before them has been recorded.
	resp, err := syncbridge.NewResponder(ctx, e.transport(t), requests, handler, syncbridge.WithGroup("notsent-"+requests))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Close()
	rec := new(endRecorder)
	b, err := syncbridge.New(ctx, e.transport(t), syncbridge.WithReplyTopic(replies), syncbridge.WithHooks(rec))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	marker := func(p int32) {
		t.Helper()
		reply, err := b.Request(ctx, syncbridge.Message{Topic: requests, Partition: p, UsePartition: true, Value: fmt.Appendf(nil, "marker-%d", p)})
		if err != nil || string(reply.Value) != fmt.Sprintf("marker-%d", p) {
			t.Fatalf("marker %d: %v, %v", p, reply, err)
		}
	}
	for p := range int32(parts) { // the Responder is assigned its partitions
		marker(p)
	}

	const n = 3000
	const workers = 32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				if rand.N(3) == 0 { // a third are cancelled, 0 to 3 ms in
					time.AfterFunc(rand.N(3*time.Millisecond), cancel)
				}
				msg := syncbridge.Message{Topic: requests, Key: []byte(strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))}
				if useGo {
					call := b.Go(rctx, msg)
					<-call.Done()
				} else {
					_, _ = b.Request(rctx, msg)
				}
				cancel()
			}
		})
	}
	wg.Wait()
	for p := range int32(parts) {
		marker(p)
	}

	mu.Lock()
	defer mu.Unlock()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var replied, canceled, publishErr, publishErrSeen, noReply, noReplySeen, other, handledTwice int
	ids := make(map[string]bool)
	for _, end := range rec.ends {
		id, err := end.id, end.err
		if id != "" && ids[id] {
			t.Errorf("request ID %s ended twice", id)
		}
		ids[id] = true
		if id != "" && seen[id] > 1 {
			handledTwice++
		}
		if errors.Is(err, context.Canceled) {
			canceled++
		}
		switch {
		case err == nil:
			replied++
		case errors.Is(err, syncbridge.ErrPublish):
			publishErr++
			if id != "" && seen[id] > 0 {
				publishErrSeen++
				t.Errorf("request %s: %v; yet the Responder received it", id, err)
			}
		case errors.Is(err, syncbridge.ErrNoReply):
			noReply++
			if seen[id] > 0 {
				noReplySeen++
			}
		default:
			other++
			t.Errorf("request %s: %v", id, err)
		}
	}
	total := len(rec.ends) - 2*parts
	t.Logf("N=%d requests via %s: %d replied, %d ErrPublish (the Responder saw %d of them), %d ErrNoReply (the Responder saw %d), %d other errors, %d handled twice; bridge %+v",
		total, map[bool]string{false: "Request", true: "Go"}[useGo], replied-2*parts, publishErr, publishErrSeen, noReply, noReplySeen, other, handledTwice, b.Stats())
	if total != n {
		t.Errorf("%d requests ended, want %d", total, n)
	}
	if publishErr == 0 {
		t.Errorf("no request ended with ErrPublish: the test did not exercise cancellation while queued")
	}
	if handledTwice != 0 {
		t.Errorf("%d requests handled twice", handledTwice)
	}
	// Stats counts each request once, by cause: the cancelled ones (not
	// sent or maybe sent) as Canceled, whichever error they got.
	if st := b.Stats(); st.Replies != uint64(replied) || st.Canceled != uint64(canceled) || st.InFlight != 0 {
		t.Errorf("Stats: %d replies, %d canceled, %d in flight; the requests got %d replies and %d errors wrapping context.Canceled", st.Replies, st.Canceled, st.InFlight, replied, canceled)
	}
}
