package kafka_test

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

// The round-trip benchmarks measure request/reply over Kafka without the
// Bridge: a requester publishes a request carrying an ID header to a
// 4-partition request topic, an echo republishes it to a 4-partition reply
// topic, and the requester's reply reader wakes the waiting caller.
//
// Requesters and echoes come in two kinds, this package's Transport and
// franz-go (kgo, linger 0), so that each can be compared against the other
// with the same echo. Sub-benchmarks: seq (one request at a time: latency)
// and par64 (64 requests in flight: throughput). Each reports p50 and p99
// latency in µs and req/s.

const benchID = "id"

// requester sends a request and waits for its echo.
type requester interface {
	roundTrip(ctx context.Context, id uint64) error
	close()
}

// statser is a requester or echo on this package's Transport.
type statser interface{ Stats() kafka.Stats }

// waiters maps request IDs to their callers.
type waiters struct {
	mu sync.Mutex // protects m
	m  map[uint64]chan struct{}
}

func (w *waiters) add(id uint64) chan struct{} {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	w.m[id] = ch
	w.mu.Unlock()
	return ch
}

func (w *waiters) remove(id uint64) {
	w.mu.Lock()
	delete(w.m, id)
	w.mu.Unlock()
}

func (w *waiters) resolve(idb []byte) {
	if len(idb) != 8 {
		return
	}
	id := binary.BigEndian.Uint64(idb)
	w.mu.Lock()
	ch := w.m[id]
	delete(w.m, id)
	w.mu.Unlock()
	if ch != nil {
		ch <- struct{}{}
	}
}

// sbRequester is a requester on this package's Transport.
type sbRequester struct {
	tr       *kafka.Transport
	sub      syncbridge.Subscription
	requests string
	w        waiters
}

func newSBRequester(tb testing.TB, e *env, requests, replies string) *sbRequester {
	r := &sbRequester{tr: e.transport(tb), requests: requests, w: waiters{m: make(map[uint64]chan struct{})}}
	sub, err := r.tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: replies}, func(_ context.Context, m syncbridge.Message) {
		v, _ := m.Header(benchID)
		r.w.resolve(v)
	})
	if err != nil {
		tb.Fatal(err)
	}
	r.sub = sub
	return r
}

func (r *sbRequester) roundTrip(ctx context.Context, id uint64) error {
	ch := r.w.add(id)
	defer r.w.remove(id)
	idb := binary.BigEndian.AppendUint64(nil, id)
	if err := r.tr.Publish(ctx, syncbridge.Message{Topic: r.requests, Value: []byte("ping"), Headers: []syncbridge.Header{{Key: benchID, Value: idb}}}); err != nil {
		return err
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *sbRequester) Stats() kafka.Stats { return r.tr.Stats() }

func (r *sbRequester) close() { _ = r.sub.Close(); _ = r.tr.Close() }

// kgoRequester is a requester on franz-go.
type kgoRequester struct {
	cl       *kgo.Client
	requests string
	w        waiters
	cancel   context.CancelFunc
	done     chan struct{}
}

func newKgoRequester(tb testing.TB, e *env, requests, replies string) *kgoRequester {
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ProducerLinger(0),
		kgo.ConsumeTopics(replies), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), kgo.FetchMaxWait(250*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	r := &kgoRequester{cl: cl, requests: requests, w: waiters{m: make(map[uint64]chan struct{})}, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		defer close(r.done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachRecord(func(rec *kgo.Record) {
				for _, h := range rec.Headers {
					if h.Key == benchID {
						r.w.resolve(h.Value)
					}
				}
			})
		}
	}()
	return r
}

func (r *kgoRequester) roundTrip(ctx context.Context, id uint64) error {
	ch := r.w.add(id)
	defer r.w.remove(id)
	idb := binary.BigEndian.AppendUint64(nil, id)
	r.cl.Produce(ctx, &kgo.Record{Topic: r.requests, Value: []byte("ping"), Headers: []kgo.RecordHeader{{Key: benchID, Value: idb}}}, nil)
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *kgoRequester) close() { r.cancel(); <-r.done; r.cl.Close() }

// startSBEcho runs an echo on this package's Transport: a group
// subscription whose handler republishes each request and returns once the
// reply is acknowledged, as a Responder does.
func startSBEcho(tb testing.TB, e *env, requests, replies string) func() {
	tr := e.transport(tb)
	sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: requests, Group: "echo-" + requests}, func(ctx context.Context, m syncbridge.Message) {
		_ = tr.Publish(ctx, syncbridge.Message{Topic: replies, Value: m.Value, Headers: m.Headers})
	})
	if err != nil {
		tb.Fatal(err)
	}
	return func() { _ = sub.Close(); _ = tr.Close() }
}

// startKgoEcho runs an echo on franz-go (linger 0, asynchronous produce).
func startKgoEcho(tb testing.TB, e *env, requests, replies string) func() {
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ProducerLinger(0),
		kgo.ConsumerGroup("kgo-echo-"+requests), kgo.ConsumeTopics(requests), kgo.FetchMaxWait(250*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachRecord(func(rec *kgo.Record) {
				cl.Produce(ctx, &kgo.Record{Topic: replies, Value: rec.Value, Headers: rec.Headers}, nil)
			})
		}
	}()
	return func() { cancel(); <-done; cl.Close() }
}

// cpuTime returns the CPU time the process used so far: the requester, the
// echo and the kfake broker together.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchKind is a requester and an echo to benchmark together.
type benchKind struct {
	name string
	req  func(testing.TB, *env, string, string) requester
	echo func(testing.TB, *env, string, string) func()
}

func sbReq(tb testing.TB, e *env, q, r string) requester  { return newSBRequester(tb, e, q, r) }
func kgoReq(tb testing.TB, e *env, q, r string) requester { return newKgoRequester(tb, e, q, r) }

// moreBenchKinds are added by other files.
var moreBenchKinds []benchKind

func BenchmarkTransportRoundTrip(b *testing.B) {
	for _, k := range append([]benchKind{
		{"syncbridge/echo=syncbridge", sbReq, startSBEcho},
		{"syncbridge/echo=kgo", sbReq, startKgoEcho},
		{"kgo/echo=kgo", kgoReq, startKgoEcho},
	}, moreBenchKinds...) {
		b.Run(k.name, func(b *testing.B) {
			e := newEnv(b)
			requests, replies := e.topic(b, 4), e.topic(b, 4)
			stop := k.echo(b, e, requests, replies)
			defer stop()
			r := k.req(b, e, requests, replies)
			defer r.close()
			var ids atomic.Uint64
			// Warm up until the echo's group has its partitions.
			deadline := time.Now().Add(30 * time.Second)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				err := r.roundTrip(ctx, ids.Add(1))
				cancel()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					b.Fatal("echo never answered")
				}
			}
			for _, par := range []int{1, 64} {
				name := "seq"
				if par > 1 {
					name = "par64"
				}
				b.Run(name, func(b *testing.B) {
					lat := make([]time.Duration, 0, b.N)
					var mu sync.Mutex
					var failed atomic.Int64
					next := make(chan struct{}, b.N)
					for range b.N {
						next <- struct{}{}
					}
					close(next)
					var before kafka.Stats
					st, _ := r.(statser)
					if st != nil {
						before = st.Stats()
					}
					cpu0 := cpuTime()
					b.ResetTimer()
					start := time.Now()
					var wg sync.WaitGroup
					for range par {
						wg.Go(func() {
							local := make([]time.Duration, 0, b.N/par+1)
							for range next {
								ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
								t0 := time.Now()
								if err := r.roundTrip(ctx, ids.Add(1)); err != nil {
									failed.Add(1)
								}
								local = append(local, time.Since(t0))
								cancel()
							}
							mu.Lock()
							lat = append(lat, local...)
							mu.Unlock()
						})
					}
					wg.Wait()
					elapsed := time.Since(start)
					cpu := cpuTime() - cpu0
					b.StopTimer()
					b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
					if f := failed.Load(); f > 0 {
						b.Errorf("%d of %d round trips failed", f, b.N)
					}
					slices.Sort(lat)
					b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
					b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
					b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
					if st != nil {
						after := st.Stats()
						b.ReportMetric(float64(after.Produced-before.Produced)/float64(after.ProduceRequests-before.ProduceRequests), "msgs/produce")
						b.ReportMetric(float64(after.Fetched-before.Fetched)/float64(after.FetchRequests-before.FetchRequests), "recs/fetch")
					}
				})
			}
		})
	}
}
