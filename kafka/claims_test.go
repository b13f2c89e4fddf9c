package kafka_test

// Tests that back claims of the package documentation that no other test
// did: each would fail if its claim stopped being true.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

// refuseProduce answers a produce request with code for every partition it
// names, as a broker refusing it does.
func refuseProduce(req kmsg.Request, code int16) kmsg.Response {
	pr := req.(*kmsg.ProduceRequest)
	resp := pr.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range pr.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.ErrorCode = code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// PublishAsync's doc: errors that say the broker did not store the message
// (authorization here) wrap ErrNotSent, "unless an earlier attempt may have
// written it". A refusal at the first attempt is not sent; the same
// refusal after an attempt whose answer was lost is not: the lost attempt
// may have written it. Both wrap the broker's code and come back at once,
// not retried until the context ends.
func TestRefusalNotSentUnlessMaybeWritten(t *testing.T) {
	for _, lostFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("lostFirst=%v", lostFirst), func(t *testing.T) {
			e := newEnv(t)
			if e.cluster == nil {
				t.Skip("needs kfake to refuse produce requests")
			}
			topic := e.topic(t, 1)
			tr := e.transport(t, kafka.RetryBackoff(5*time.Millisecond, 20*time.Millisecond))
			var attempts atomic.Int32
			e.cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
				e.cluster.KeepControl()
				if attempts.Add(1) == 1 && lostFirst {
					return nil, errors.New("drop the connection"), true
				}
				return refuseProduce(req, int16(kafka.TopicAuthorizationFailed)), nil, true
			})
			ctx := testCtx(t, 30*time.Second)
			err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("x")})
			t.Logf("after %d produce requests: %v", attempts.Load(), err)
			if !errors.Is(err, kafka.TopicAuthorizationFailed) {
				t.Errorf("Publish: %v, want TopicAuthorizationFailed", err)
			}
			if got := errors.Is(err, syncbridge.ErrNotSent); got == lostFirst {
				t.Errorf("Publish: %v: wraps ErrNotSent: %v, want %v", err, got, !lostFirst)
			}
			if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("the refusal was retried until the context ended")
			}
			if want := map[bool]int32{false: 1, true: 2}[lostFirst]; attempts.Load() != want {
				t.Errorf("%d produce requests, want %d", attempts.Load(), want)
			}
		})
	}
}

// Subscribe's doc: a broadcast subscription's handler is called from one
// goroutine per partition leader, with or without cfg.Concurrent: on one
// broker, no two calls overlap, and each partition's messages come in
// offset order. Each call waits a little for another to start, so that
// calls made from several goroutines would overlap.
func TestBroadcastCallsSequential(t *testing.T) {
	for _, concurrent := range []bool{false, true} {
		t.Run(fmt.Sprintf("Concurrent=%v", concurrent), func(t *testing.T) {
			e := newEnv(t)
			if e.real {
				t.Skip("one goroutine in all needs a one-broker cluster")
			}
			const parts, perPart = 4, 6
			topic := e.topic(t, parts)
			tr := e.transport(t)
			ctx := testCtx(t, 30*time.Second)
			var (
				inCall     atomic.Int32
				overlapped atomic.Bool
				enterMu    sync.Mutex            // protects entered
				entered    = make(chan struct{}) // closed when the next call starts
				mu         sync.Mutex            // protects last
				last       = map[int32]int64{}
				outOfOrder []string
			)
			var c collector
			sub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic, Concurrent: concurrent}, func(ctx context.Context, m syncbridge.Message) {
				if inCall.Add(1) > 1 {
					overlapped.Store(true)
				}
				enterMu.Lock()
				prev, mine := entered, make(chan struct{})
				entered = mine
				enterMu.Unlock()
				close(prev)
				select { // another call starting now overlaps this one
				case <-mine:
					overlapped.Store(true)
				case <-time.After(5 * time.Millisecond):
				}
				mu.Lock()
				if o, ok := last[m.Partition]; ok && m.Offset <= o {
					outOfOrder = append(outOfOrder, fmt.Sprintf("%d@%d after %d", m.Partition, m.Offset, o))
				}
				last[m.Partition] = m.Offset
				mu.Unlock()
				inCall.Add(-1)
				c.handle(ctx, m)
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			var wg sync.WaitGroup
			for p := range int32(parts) {
				wg.Go(func() {
					for i := range perPart {
						tr.PublishAsync(ctx, syncbridge.Message{Topic: topic, Partition: p, UsePartition: true, Value: []byte(strconv.Itoa(i))}, func(err error) {
							if err != nil {
								t.Error(err)
							}
						})
					}
				})
			}
			wg.Wait()
			c.waitFor(t, parts*perPart, 20*time.Second)
			if overlapped.Load() {
				t.Error("handler calls of a broadcast subscription overlapped")
			}
			mu.Lock()
			defer mu.Unlock()
			if len(outOfOrder) > 0 {
				t.Errorf("out of offset order: %v", outOfOrder)
			}
		})
	}
}

// Subscribe's and SubscribeAck's docs: with cfg.Group, up to 256 messages
// per partition are pending at once (Concurrent calls in progress; or
// handed out and not acked), and the partition waits while that many are;
// once they end, the rest is delivered.
func TestGroupPendingBound(t *testing.T) {
	for _, mode := range []string{"Concurrent", "SubscribeAck"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			topic := e.topic(t, 1)
			ctx := testCtx(t, 60*time.Second)
			pub := e.transport(t)
			const bound, n = 256, 300
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				pub.PublishAsync(ctx, syncbridge.Message{Topic: topic, Value: []byte(strconv.Itoa(i))}, func(err error) {
					if err != nil {
						t.Error(err)
					}
					wg.Done()
				})
			}
			wg.Wait()

			var (
				mu      sync.Mutex // protects pending, maxPend, acks, holding
				pending int
				maxPend int
				acks    []func()
				holding = true
			)
			reached, exceeded := make(chan struct{}), make(chan struct{})
			var reachedOnce, exceededOnce sync.Once
			release := make(chan struct{})
			var handled collector
			// begin counts a message in; while holding, it keeps its ack
			// (if any) to be called on release, and reports true.
			begin := func(ack func()) (hold bool) {
				mu.Lock()
				defer mu.Unlock()
				if holding && ack != nil {
					acks = append(acks, ack)
				}
				pending++
				maxPend = max(maxPend, pending)
				if pending == bound {
					reachedOnce.Do(func() { close(reached) })
				}
				if pending > bound {
					exceededOnce.Do(func() { close(exceeded) })
				}
				return holding
			}
			end := func() {
				mu.Lock()
				pending--
				mu.Unlock()
			}
			tr := e.transport(t)
			cfg := syncbridge.SubscribeConfig{Topic: topic, Group: "bound-" + topic}
			var sub syncbridge.Subscription
			var err error
			if mode == "Concurrent" {
				cfg.Concurrent = true
				sub, err = tr.Subscribe(ctx, cfg, func(ctx context.Context, m syncbridge.Message) {
					if begin(nil) {
						select {
						case <-release:
						case <-ctx.Done():
						}
					}
					end()
					handled.handle(ctx, m)
				})
			} else {
				sub, err = tr.SubscribeAck(ctx, cfg, func(ctx context.Context, m syncbridge.Message, ack func()) {
					finish := func() { end(); ack() }
					hold := begin(finish)
					handled.handle(ctx, m)
					if !hold {
						finish()
					}
				})
			}
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			select {
			case <-reached:
			case <-ctx.Done():
				t.Fatalf("%d messages pending at most, want %d", maxPend, bound)
			}
			// None past the bound follows, though all n were fetched long
			// since: the partition waits.
			select {
			case <-exceeded:
			case <-time.After(200 * time.Millisecond):
			}
			mu.Lock()
			over := maxPend
			holding = false
			held := acks
			acks = nil
			mu.Unlock()
			if over != bound {
				t.Errorf("%d messages pending at once, want at most %d", over, bound)
			}
			close(release)
			for _, ack := range held {
				ack()
			}
			handled.waitFor(t, n, 30*time.Second)
		})
	}
}

// The package doc's Defaults, as a broker sees them from a Transport with
// no options: client ID "syncbridge"; produce requests with acks from
// every in-sync replica, the 30 s RequestTimeout as their ack timeout,
// uncompressed and idempotent (a producer ID) record batches; fetches
// that wait 250 ms and carry at most 16 MiB; group members that join with
// a 10 s session and a 10 s rebalance timeout. TestDocumentedDefaults
// checks the defaults a broker does not see.
func TestDefaultsOnTheWire(t *testing.T) {
	e := newEnv(t)
	if e.cluster == nil {
		t.Skip("reads the requests on kfake")
	}
	topic := e.topic(t, 1)
	var (
		mu      sync.Mutex // protects seen
		seen    = map[string]map[string]bool{}
		observe = func(what, got string) {
			mu.Lock()
			defer mu.Unlock()
			if seen[what] == nil {
				seen[what] = map[string]bool{}
			}
			seen[what][got] = true
		}
	)
	e.cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		observe("acks", strconv.Itoa(int(pr.Acks)))
		observe("produce timeout ms", strconv.Itoa(int(pr.TimeoutMillis)))
		for _, rt := range pr.Topics {
			for _, rp := range rt.Partitions {
				var b kmsg.RecordBatch
				if err := b.ReadFrom(rp.Records); err != nil {
					observe("batch", err.Error())
					continue
				}
				observe("codec", strconv.Itoa(int(b.Attributes&7)))
				observe("idempotent", strconv.FormatBool(b.ProducerID >= 0))
			}
		}
		return nil, nil, false
	})
	e.cluster.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		fr := req.(*kmsg.FetchRequest)
		observe("fetch max wait ms", strconv.Itoa(int(fr.MaxWaitMillis)))
		observe("fetch max bytes", strconv.Itoa(int(fr.MaxBytes)))
		return nil, nil, false
	})
	e.cluster.ControlKey(int16(kmsg.JoinGroup), func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		jr := req.(*kmsg.JoinGroupRequest)
		observe("session timeout ms", strconv.Itoa(int(jr.SessionTimeoutMillis)))
		observe("rebalance timeout ms", strconv.Itoa(int(jr.RebalanceTimeoutMillis)))
		return nil, nil, false
	})

	tr := e.transport(t)
	ctx := testCtx(t, 30*time.Second)
	group := "wire-" + topic
	var b, g collector
	bsub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, b.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer bsub.Close()
	gsub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic, Group: group}, g.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer gsub.Close()
	if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, 1, 10*time.Second)
	g.waitFor(t, 1, 20*time.Second)

	var clientIDs []string
	for _, m := range e.cluster.GroupInfo(group).Members {
		clientIDs = append(clientIDs, m.ClientID)
	}
	if len(clientIDs) != 1 || clientIDs[0] != "syncbridge" {
		t.Errorf("group members' client IDs %q, want [syncbridge]", clientIDs)
	}
	want := map[string]string{
		"acks":                 "-1",
		"produce timeout ms":   "30000",
		"codec":                "0",
		"idempotent":           "true",
		"fetch max wait ms":    "250",
		"fetch max bytes":      strconv.Itoa(16 << 20),
		"session timeout ms":   "10000",
		"rebalance timeout ms": "10000",
	}
	mu.Lock()
	defer mu.Unlock()
	for what, w := range want {
		if got := seen[what]; len(got) != 1 || !got[w] {
			t.Errorf("%s: saw %v, want only %s", what, got, w)
		}
	}
	if len(seen["batch"]) > 0 {
		t.Errorf("undecodable record batches: %v", seen["batch"])
	}
}

// HasResponders' doc: the first call for a topic answers "unknown"; the
// answer follows group members joining and leaving; and an answer older
// than three refresh intervals (the brokers stopped answering) is
// "unknown" again, not before two have passed, and known again once they
// answer.
func TestHasRespondersStale(t *testing.T) {
	e := newEnv(t)
	if e.cluster == nil {
		t.Skip("fails the brokers' ListGroups on kfake")
	}
	topic := e.topic(t, 1)
	// The answer turns unknown 3*age after the last refresh that answered,
	// which is just before the brokers stop answering here; took falls
	// below 2*age only if this goroutine is held up for more than age
	// between the two: 250 ms leaves a loaded -race machine that much
	// slack (at 100 ms it took 298 ms under load: 98 ms above the bound).
	const age = 250 * time.Millisecond
	tr := e.transport(t, kafka.MetadataMaxAge(age))
	if has, known := tr.HasResponders(topic); known {
		t.Errorf("first call: HasResponders = %v, %v; want unknown", has, known)
	}
	// await polls HasResponders until cond holds: it answers from a cache
	// refreshed in the background, and says nothing when it changes.
	await := func(what string, cond func(has, known bool) bool) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			has, known := tr.HasResponders(topic)
			if cond(has, known) {
				return time.Since(start)
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("HasResponders = %v, %v after 10s; want %s", has, known, what)
			}
			time.Sleep(5 * time.Millisecond) // polling a cache: no event to wait on
		}
	}
	ctx := testCtx(t, 30*time.Second)
	sub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic, Group: "stale-" + topic}, func(context.Context, syncbridge.Message) {})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	await("true, known", func(has, known bool) bool { return has && known })

	var failing atomic.Bool
	e.cluster.ControlKey(int16(kmsg.ListGroups), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		if failing.Load() {
			return nil, errors.New("drop the connection"), true
		}
		return nil, nil, false
	})
	failing.Store(true)
	took := await("unknown", func(_, known bool) bool { return !known })
	t.Logf("unknown %v after the brokers stopped answering (refresh interval %v)", took, age)
	if took < 2*age || took > 3*age+time.Second {
		t.Errorf("unknown %v after the brokers stopped answering, want between %v and %v", took, 2*age, 3*age)
	}
	failing.Store(false)
	await("true, known", func(has, known bool) bool { return has && known })
}

// MaxProduceBytes' doc: the produce loop splits what it gathered into
// several requests past the cap (counting the encoded records), and a
// single message larger than the cap is still sent alone.
func TestMaxProduceBytesSplits(t *testing.T) {
	e := newEnv(t)
	if e.cluster == nil {
		t.Skip("reads the produce requests on kfake")
	}
	const limit = 4096
	topic := e.topic(t, 4)
	type produced struct{ bytes, records int }
	var (
		mu   sync.Mutex // protects reqs
		reqs []produced
	)
	e.cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		var p produced
		for _, rt := range req.(*kmsg.ProduceRequest).Topics {
			for _, rp := range rt.Partitions {
				var b kmsg.RecordBatch
				if err := b.ReadFrom(rp.Records); err != nil {
					t.Errorf("undecodable batch: %v", err)
				}
				p.bytes += len(rp.Records)
				p.records += int(b.NumRecords)
			}
		}
		mu.Lock()
		reqs = append(reqs, p)
		mu.Unlock()
		time.Sleep(time.Millisecond) // on the broker's loop: requests queue behind it, as on a real broker
		return nil, nil, false
	})
	tr := e.transport(t, kafka.MaxProduceBytes(limit))
	ctx := testCtx(t, 30*time.Second)
	const n = 400
	var wg sync.WaitGroup
	value := make([]byte, 300)
	for i := range n + 1 {
		v := value
		if i == n/2 {
			v = make([]byte, 2*limit) // larger than the cap: alone
		}
		wg.Add(1)
		tr.PublishAsync(ctx, syncbridge.Message{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: v}, func(err error) {
			if err != nil {
				t.Errorf("message %d: %v", i, err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	var gathered, full, big int
	for _, p := range reqs {
		if p.records > 1 {
			gathered++
		}
		if p.bytes > limit*3/4 {
			full++
		}
		if p.bytes > limit {
			big++
			if p.records != 1 {
				t.Errorf("a produce request of %d bytes over the %d cap carries %d records, want 1 (alone)", p.bytes, limit, p.records)
			}
		}
	}
	t.Logf("%d messages in %d produce requests: %d with several records, %d filled over 3/4 of the cap, %d over it", n+1, len(reqs), gathered, full, big)
	if big != 1 {
		t.Errorf("%d produce requests over the cap, want 1 (the large message, alone)", big)
	}
	if full < 2 {
		t.Errorf("%d produce requests filled over 3/4 of the cap: messages were not gathered up to it", full)
	}
}
