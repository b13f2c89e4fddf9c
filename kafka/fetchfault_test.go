package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

// addPartitions grows topic to n partitions.
func addPartitions(t *testing.T, brokers []string, topic string, n int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrCreatePartitionsRequest()
	rt := kmsg.NewCreatePartitionsRequestTopic()
	rt.Topic, rt.Count = topic, n
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 20000
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Topics {
		if r.ErrorCode != 0 {
			msg := ""
			if r.ErrorMessage != nil {
				msg = *r.ErrorMessage
			}
			t.Fatalf("create partitions of %s: error %d %s", topic, r.ErrorCode, msg)
		}
	}
}

// A reply topic and a request topic that gain partitions under load: no
// reply is lost, and the new partitions carry requests and replies within
// about one metadata refresh (MetadataMaxAge, here 500 ms).
func TestPartitionsAdded(t *testing.T) {
	e := newEnv(t)
	requests, replies := e.topic(t, 2), e.topic(t, 2)
	const refresh = 500 * time.Millisecond
	opts := []kafka.Option{kafka.MetadataMaxAge(refresh), kafka.RetryBackoff(10*time.Millisecond, 200*time.Millisecond)}
	ctx := testCtx(t, 120*time.Second)

	var newRequestAt atomic.Int64 // unix nanos of the first request read from a new partition
	handler := func(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		if req.Partition >= 2 {
			newRequestAt.CompareAndSwap(0, time.Now().UnixNano())
		}
		return syncbridge.Message{Value: req.Value}, nil
	}
	resp, err := syncbridge.NewResponder(ctx, e.transport(t, opts...), requests, handler,
		syncbridge.WithGroup("grow-"+requests), syncbridge.WithConcurrentHandlers())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Close()
	b, err := syncbridge.New(ctx, e.transport(t, opts...), syncbridge.WithReplyTopic(replies))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	var (
		ok, failed, misrouted atomic.Int64
		newReplyAt            atomic.Int64
		stop                  = make(chan struct{})
		seq                   atomic.Int64
		wg                    sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				want := fmt.Sprint("payload-", seq.Add(1))
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				reply, err := b.Request(rctx, syncbridge.Message{Topic: requests, Value: []byte(want)})
				cancel()
				switch {
				case err != nil:
					if failed.Add(1) == 1 {
						t.Errorf("request %s: %v", want, err)
					}
				case string(reply.Value) != want:
					misrouted.Add(1)
				default:
					ok.Add(1)
					if reply.Partition >= 2 {
						newReplyAt.CompareAndSwap(0, time.Now().UnixNano())
					}
				}
			}
		})
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for !cond() {
			select {
			case <-tick.C:
			case <-ctx.Done():
				close(stop)
				wg.Wait()
				t.Fatalf("waiting for %s: %v", what, ctx.Err())
			}
		}
	}
	waitFor("200 replies", func() bool { return ok.Load() >= 200 })
	grown := time.Now()
	addPartitions(t, e.brokers, replies, 4)
	addPartitions(t, e.brokers, requests, 4)
	waitFor("a reply on a new partition", func() bool { return newReplyAt.Load() != 0 })
	waitFor("a request on a new partition", func() bool { return newRequestAt.Load() != 0 })
	base := ok.Load()
	waitFor("200 more replies", func() bool { return ok.Load() >= base+200 })
	close(stop)
	wg.Wait()

	replyAfter := time.Unix(0, newReplyAt.Load()).Sub(grown)
	requestAfter := time.Unix(0, newRequestAt.Load()).Sub(grown)
	t.Logf("partitions 2 -> 4 under load (MetadataMaxAge %v): %d requests, %d failed, %d misrouted; first reply on a new reply partition %v after, first request from a new request partition %v after; bridge %+v",
		refresh, ok.Load()+failed.Load()+misrouted.Load(), failed.Load(), misrouted.Load(), replyAfter.Round(time.Millisecond), requestAfter.Round(time.Millisecond), b.Stats())
	if failed.Load() != 0 || misrouted.Load() != 0 {
		t.Errorf("%d failed, %d misrouted, want 0 and 0", failed.Load(), misrouted.Load())
	}
}

// One broker failing its fetches does not stall the fetches from the
// others: messages on partitions led by healthy brokers keep arriving at
// once, and the failing broker's partitions are read again when it
// recovers.
func TestFetchBrokerFailureIsolated(t *testing.T) {
	if newEnvIsReal() {
		t.Skip("fails one broker's fetches on a kfake cluster")
	}
	const topic, parts = "isolated", 6
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(parts, topic))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e := &env{brokers: c.ListenAddrs(), cluster: c}
	// Backoffs long enough that a reader pausing every partition after one
	// broker's failure shows in the latency of the healthy ones.
	tr := e.transport(t, kafka.MetadataMaxAge(200*time.Millisecond), kafka.RetryBackoff(300*time.Millisecond, 2*time.Second))
	pub := e.transport(t)
	ctx := testCtx(t, 60*time.Second)

	victim := c.LeaderFor(topic, 0)
	var healthy, victims []int32
	for p := range int32(parts) {
		if c.LeaderFor(topic, p) == victim {
			victims = append(victims, p)
		} else {
			healthy = append(healthy, p)
		}
	}
	if len(healthy) == 0 {
		t.Fatalf("every partition is led by broker %d", victim)
	}

	arrived := make(chan syncbridge.Message, 1000)
	sub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, func(_ context.Context, m syncbridge.Message) {
		arrived <- m
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	var failing atomic.Bool
	var refused atomic.Int64
	failing.Store(true)
	c.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if failing.Load() && c.CurrentNode() == victim {
			refused.Add(1)
			return nil, errors.New("broker down for fetches"), true
		}
		return nil, nil, false
	})

	// Let the victim fail a few times, then measure the healthy ones.
	stuckSent := 0
	for refused.Load() < 2 {
		stuckSent++
		if err := pub.Publish(ctx, syncbridge.Message{Topic: topic, Partition: victims[0], UsePartition: true, Value: []byte("stuck")}); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-arrived:
			t.Fatalf("a message of the failing broker arrived: %q", m.Value)
		case <-time.After(50 * time.Millisecond):
		}
	}
	var worst time.Duration
	n := 0
	for began := time.Now(); n < 100 || time.Since(began) < 2*time.Second; n++ {
		i := n
		p := healthy[i%len(healthy)]
		want := fmt.Sprint("healthy-", i)
		if err := pub.Publish(ctx, syncbridge.Message{Topic: topic, Partition: p, UsePartition: true, Value: []byte(want)}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for {
			var m syncbridge.Message
			select {
			case m = <-arrived:
			case <-ctx.Done():
				t.Fatalf("message %s did not arrive", want)
			}
			if string(m.Value) == want {
				break
			}
			if string(m.Value) == "stuck" {
				t.Fatalf("a message of the failing broker arrived")
			}
		}
		worst = max(worst, time.Since(start))
	}
	stuckBefore := refused.Load()
	failing.Store(false)
	recovered := time.Now()
	var stuck int
	for stuck < stuckSent {
		select {
		case m := <-arrived:
			if string(m.Value) == "stuck" {
				stuck++
			}
		case <-ctx.Done():
			t.Fatalf("the failing broker's messages did not arrive after it recovered (%d)", stuck)
		}
	}
	t.Logf("broker %d failing fetches for partitions %v (%d fetches refused): %d messages on partitions %v of the other brokers, slowest delivered %v after its publish; the failing broker's messages arrived %v after it recovered",
		victim, victims, stuckBefore, n, healthy, worst.Round(time.Microsecond), time.Since(recovered).Round(time.Millisecond))
	if worst > 250*time.Millisecond {
		t.Errorf("a message on a healthy broker took %v to arrive: the failing broker stalls the others", worst)
	}
}

// A partition whose leader fails waits for the failed leader only for its
// backoff: it goes to a new leader as soon as the metadata names one
// (looked up every RetryBackoff, 100 ms apart at least, while it waits),
// not once a backoff grown by the old leader's failures has passed; and
// should the new leader refuse it at first, the backoff starts afresh.
func TestFetchNewLeaderAtOnce(t *testing.T) {
	if newEnvIsReal() {
		t.Skip("fails one broker's fetches on a kfake cluster")
	}
	const topic, parts = "newleader", 3
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(parts, topic))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e := &env{brokers: c.ListenAddrs(), cluster: c}
	// A backoff that grows to seconds after a few failures.
	const first = 200 * time.Millisecond
	tr := e.transport(t, kafka.RetryBackoff(first, 10*time.Second))
	pub := e.transport(t)
	ctx := testCtx(t, 60*time.Second)

	victim := c.LeaderFor(topic, 0)
	arrived := make(chan syncbridge.Message, 100)
	sub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic, Partitions: []int32{0}}, func(_ context.Context, m syncbridge.Message) {
		arrived <- m
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	const failures = 4 // the backoff is then first << 3
	f := failLeader(c, kmsg.Fetch, victim, failures, "broker down for fetches")
	select {
	case <-f.nth:
	case <-ctx.Done():
		t.Fatal("the victim was not asked to fetch")
	}
	// The partition has just been handed back for the fourth time: the
	// old leader gets it again only after first << 3.
	to, moved := f.move(t, topic)
	if err := pub.Publish(ctx, syncbridge.Message{Topic: topic, Partition: 0, UsePartition: true, Value: []byte("after the move")}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-arrived:
		if string(m.Value) != "after the move" {
			t.Fatalf("got %q", m.Value)
		}
	case <-ctx.Done():
		t.Fatal("the message did not arrive")
	}
	took := time.Since(moved)
	t.Logf("partition 0 moved from broker %d (%d fetches refused, backoff now %v) to broker %d (first fetch refused: %v): its next message arrived %v after the move",
		victim, f.refused.Load(), first<<(failures-1), to, f.refusedAt.Load(), took.Round(time.Millisecond))
	if !f.refusedAt.Load() {
		t.Error("the new leader was not asked to fetch before the message arrived")
	}
	if took > 6*first {
		t.Errorf("the message arrived %v after the move, want within %v: the partition waited for the failed leader's backoff", took, 6*first)
	}
}

// leaderFailure makes a kfake cluster refuse the requests of one kind that
// reach the victim broker, and the first one that reaches the broker the
// test then moves partition 0 to, as a new leader that has not applied its
// leadership yet does.
type leaderFailure struct {
	c         *kfake.Cluster
	victim    int32
	refused   atomic.Int64  // requests the victim refused
	newLeader atomic.Int32  // -1 until move
	refusedAt atomic.Bool   // the new leader refused its first request
	nth       chan struct{} // closed at the victim's failures-th refusal
}

func failLeader(c *kfake.Cluster, key kmsg.Key, victim int32, failures int64, downErr string) *leaderFailure {
	f := &leaderFailure{c: c, victim: victim, nth: make(chan struct{})}
	f.newLeader.Store(-1)
	c.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		switch c.CurrentNode() {
		case victim:
			if f.refused.Add(1) == failures {
				close(f.nth)
			}
			// The connection drops with the request sent.
			return nil, errors.New(downErr), true
		case f.newLeader.Load():
			if f.refusedAt.CompareAndSwap(false, true) {
				return nil, errors.New("not the leader yet"), true
			}
		}
		return nil, nil, false
	})
	return f
}

// move hands partition 0 of topic from the victim to another broker, and
// returns that broker and when it moved.
func (f *leaderFailure) move(t *testing.T, topic string) (int32, time.Time) {
	t.Helper()
	var to int32
	for to == f.victim {
		to++
	}
	moved := time.Now()
	f.newLeader.Store(to)
	if err := f.c.MoveTopicPartition(topic, 0, to); err != nil {
		t.Fatal(err)
	}
	return to, moved
}
