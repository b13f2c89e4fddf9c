// Package transporttest is the conformance suite every syncbridge.Transport
// must pass. A transport's tests call Run with a Setup:
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, transporttest.Setup{
//			New:        func(t *testing.T) syncbridge.Transport { ... },
//			Topic:      func(t *testing.T) string { ... },
//			Partitions: 4,
//		})
//	}
//
// The suite checks the Transport contract (delivery, broadcast positioning,
// consumer groups, keys and partitions, headers, offsets and timestamps,
// cancellation and ErrNotSent, PublishAsync when the transport has it,
// Concurrent handler calls, SubscribeAck when the transport has it
// (pipelined delivery, order, Close waiting for acks), Close and the error
// after it) and runs Bridges and Responders over the transport.
package transporttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
)

// Setup describes the transport under test.
type Setup struct {
	// New returns a ready transport. New registers its cleanup with
	// t.Cleanup; the transport must also have a Close() error method,
	// which the suite calls to check what happens after it (Close must be
	// idempotent).
	New func(t *testing.T) syncbridge.Transport
	// Topic returns the name of a fresh topic, unused by any other test,
	// ready to publish to and subscribe to, with Partitions partitions.
	Topic func(t *testing.T) string
	// Partitions is the number of partitions of the topics Topic returns;
	// at least 2.
	Partitions int
	// Timeout bounds each wait for a delivery. Zero means 30 s.
	Timeout time.Duration
}

// Run runs the conformance suite as subtests of t.
func Run(t *testing.T, s Setup) {
	if s.Timeout == 0 {
		s.Timeout = 30 * time.Second
	}
	if s.Partitions < 2 {
		t.Fatalf("transporttest: Setup.Partitions = %d, want at least 2", s.Partitions)
	}
	tests := []struct {
		name string
		f    func(*testing.T, Setup)
	}{
		{"RoundTrip", testRoundTrip},
		{"BroadcastPositionedAtEnd", testBroadcastPositioned},
		{"BroadcastFanOut", testBroadcastFanOut},
		{"BroadcastPartitions", testBroadcastPartitions},
		{"GroupCompeting", testGroupCompeting},
		{"GroupsIndependent", testGroupsIndependent},
		{"GroupResumes", testGroupResumes},
		{"KeyOrder", testKeyOrder},
		{"PublishCancelled", testPublishCancelled},
		{"PublishAsync", testPublishAsync},
		{"DeliveredOffsetAndTime", testOffsetAndTime},
		{"ConcurrentOverlaps", testConcurrentOverlaps},
		{"AckPipelines", testAckPipelines},
		{"AckOrder", testAckOrder},
		{"AckCloseWaits", testAckCloseWaits},
		{"CloseStopsDelivery", testCloseStopsDelivery},
		{"HasResponders", testHasResponders},
		{"UseAfterClose", testUseAfterClose},
		{"BridgeRequestReply", testBridgeRequestReply},
		{"BridgeSharedReplyTopic", testBridgeShared},
		{"BridgePinnedReplyPartitions", testBridgePinned},
		{"BridgeConcurrentHandlers", testBridgeConcurrent},
		{"BridgeGather", testBridgeGather},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, s) })
	}
}

// sink collects delivered messages.
type sink struct {
	ch chan syncbridge.Message
}

func newSink() *sink { return &sink{ch: make(chan syncbridge.Message, 100000)} }

func (k *sink) handle(_ context.Context, m syncbridge.Message) { k.ch <- m }

// next returns the next delivered message, failing t after timeout.
func (k *sink) next(t *testing.T, timeout time.Duration) syncbridge.Message {
	t.Helper()
	select {
	case m := <-k.ch:
		return m
	case <-time.After(timeout):
		t.Fatalf("no message delivered within %v", timeout)
		return syncbridge.Message{}
	}
}

func subscribe(t *testing.T, tr syncbridge.Transport, cfg syncbridge.SubscribeConfig, h syncbridge.Handler) syncbridge.Subscription {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub, err := tr.Subscribe(ctx, cfg, h)
	if err != nil {
		t.Fatalf("Subscribe(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := sub.Close(); err != nil {
			t.Errorf("Subscription.Close: %v", err)
		}
	})
	return sub
}

func publish(t *testing.T, tr syncbridge.Transport, m syncbridge.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tr.Publish(ctx, m); err != nil {
		t.Fatalf("Publish(%q): %v", m.Value, err)
	}
}

func testRoundTrip(t *testing.T, s Setup) {
	tr, topic := s.New(t), s.Topic(t)
	k := newSink()
	subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic}, k.handle)
	want := syncbridge.Message{
		Topic: topic,
		Key:   []byte("key\x00\xff"),
		Value: []byte("value\x00\x01\xfe\xff"),
		Headers: []syncbridge.Header{
			{Key: "bin", Value: []byte{0, 1, 2, 0xff}},
			{Key: "dup", Value: []byte("first")},
			{Key: "dup", Value: []byte("second")},
			{Key: "empty", Value: []byte{}},
		},
	}
	publish(t, tr, want)
	got := k.next(t, s.Timeout)
	if got.Topic != topic || !bytes.Equal(got.Key, want.Key) || !bytes.Equal(got.Value, want.Value) {
		t.Errorf("got topic %q key %q value %q, want %q %q %q", got.Topic, got.Key, got.Value, topic, want.Key, want.Value)
	}
	if len(got.Headers) != len(want.Headers) {
		t.Fatalf("got %d headers %v, want %d", len(got.Headers), got.Headers, len(want.Headers))
	}
	for i, h := range want.Headers {
		if got.Headers[i].Key != h.Key || !bytes.Equal(got.Headers[i].Value, h.Value) {
			t.Errorf("header %d = %q:%q, want %q:%q", i, got.Headers[i].Key, got.Headers[i].Value, h.Key, h.Value)
		}
	}
	if got.Partition < 0 || int(got.Partition) >= s.Partitions {
		t.Errorf("delivered from partition %d, want [0,%d)", got.Partition, s.Partitions)
	}
}

func testBroadcastPositioned(t *testing.T, s Setup) {
	tr, topic := s.New(t), s.Topic(t)
	// A message before the subscription exists is not delivered to it.
	for p := range s.Partitions {
		publish(t, tr, syncbridge.Message{Topic: topic, Value: []byte("before"), Partition: int32(p), UsePartition: true})
	}
	k := newSink()
	subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic}, k.handle)
	// Every message after Subscribe returned is, in order for one key.
	const n = 50
	for i := range n {
		publish(t, tr, syncbridge.Message{Topic: topic, Key: []byte("k"), Value: fmt.Appendf(nil, "after %d", i)})
	}
	for i := range n {
		got := k.next(t, s.Timeout)
		if want := fmt.Sprintf("after %d", i); string(got.Value) != want {
			t.Fatalf("message %d = %q, want %q", i, got.Value, want)
		}
	}
}

func testBroadcastFanOut(t *testing.T, s Setup) {
	tr, topic := s.New(t), s.Topic(t)
	a, b := newSink(), newSink()
	subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic}, a.handle)
	subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic}, b.handle)
	const n = 20
	for i := range n {
		publish(t, tr, syncbridge.Message{Topic: topic, Value: fmt.Appendf(nil, "%d", i)})
	}
	for _, k := range []*sink{a, b} {
		seen := map[string]bool{}
		for range n {
			seen[string(k.next(t, s.Timeout).Value)] = true
		}
		if len(seen) != n {
			t.Errorf("a broadcast subscription saw %d distinct messages, want %d", len(seen), n)
		}
	}
}

func testBroadcastPartitions(t *testing.T, s Setup) {
	tr, topic := s.New(t), s.Topic(t)
	one, other := newSink(), newSink()
	subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic, Partitions: []int32{1}}, one.handle)
	subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic, Partitions: []int32{0}}, other.handle)
	publish(t, tr, syncbridge.Message{Topic: topic, Value: []byte("to 1"), Partition: 1, UsePartition: true})
	publish(t, tr, syncbridge.Message{Topic: topic, Value: []byte("to 0"), Partition: 0, UsePartition: true})
	if got := one.next(t, s.Timeout); string(got.Value) != "to 1" || got.Partition != 1 {
		t.Errorf("subscription to partition 1 got %q from %d, want %q from 1", got.Value, got.Partition, "to 1")
	}
	if got := other.next(t, s.Timeout); string(got.Value) != "to 0" || got.Partition != 0 {
		t.Errorf("subscription to partition 0 got %q from %d, want %q from 0", got.Value, got.Partition, "to 0")
	}
	// Nothing else arrived: the partition-1 message reached only one
	// subscription (both sinks were drained of what they should get).
	publish(t, tr, syncbridge.Message{Topic: topic, Value: []byte("end"), Partition: 1, UsePartition: true})
	if got := one.next(t, s.Timeout); string(got.Value) != "end" {
		t.Errorf("subscription to partition 1 got %q, want %q", got.Value, "end")
	}
	select {
	case m := <-other.ch:
		t.Errorf("subscription to partition 0 got %q from partition %d", m.Value, m.Partition)
	default:
	}
}

// tagged records which member got which message.
type tagged struct {
	member int
	value  string
}

func testGroupCompeting(t *testing.T, s Setup) {
	tr, topic := s.New(t), s.Topic(t)
	got := make(chan tagged, 100000)
	for i := range 2 {
		subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic, Group: "g"}, func(_ context.Context, m syncbridge.Message) {
			got <- tagged{i, string(m.Value)}
		})
	}
	// Publish rounds of messages over every partition until both members
	// have received some: group membership may take a moment to settle.
	sent := 0
	count := map[string]int{}
	byMember := [2]int{}
	deadline := time.After(s.Timeout)
	for byMember[0] == 0 || byMember[1] == 0 {
		for p := range s.Partitions {
			publish(t, tr, syncbridge.Message{Topic: topic, Value: fmt.Appendf(nil, "%d", sent), Partition: int32(p), UsePartition: true})
			sent++
		}
		for len(count) < sent {
			select {
			case tg := <-got:
				count[tg.value]++
				byMember[tg.member]++
			case <-deadline:
				t.Fatalf("after %d messages: %d delivered, per member %v", sent, len(count), byMember)
			}
		}
	}
	for v, c := range count {
		if c > 1 {
			t.Logf("message %s delivered %d times (allowed: at-least-once across a rebalance)", v, c)
		}
	}
	// Once both members are active, each message goes to exactly one.
	const n = 40
	for i := range n {
		publish(t, tr, syncbridge.Message{Topic: topic, Value: fmt.Appendf(nil, "steady %d", i)})
	}
	steady := map[string]int{}
	for len(steady) < n {
		select {
		case tg := <-got:
			if len(tg.value) > 6 && tg.value[:6] == "steady" {
				steady[tg.value]++
			}
		case <-deadline:
			t.Fatalf("steady state: %d of %d delivered", len(steady), n)
		}
	}
	for v, c := range steady {
		if c != 1 {
			t.Errorf("message %s delivered %d times in a stable group, want 1", v, c)
		}
	}
}

func testGroupsIndependent(t *testing.T, s Setup) {
	tr, topic := s.New(t), s.Topic(t)
	a, b := newSink(), newSink()
	subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic, Group: "a"}, a.handle)
	subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic, Group: "b"}, b.handle)
	const n = 20
	for i := range n {
		publish(t, tr, syncbridge.Message{Topic: topic, Value: fmt.Appendf(nil, "%d", i)})
	}
	for _, k := range []*sink{a, b} {
		seen := map[string]bool{}
		for len(seen) < n {
			seen[string(k.next(t, s.Timeout).Value)] = true
		}
	}
}

func testGroupResumes(t *testing.T, s Setup) {
	tr, topic := s.New(t), s.Topic(t)
	first := newSink()
	sub := subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic, Group: "g"}, first.handle)
	publish(t, tr, syncbridge.Message{Topic: topic, Key: []byte("k"), Value: []byte("0")})
	if got := first.next(t, s.Timeout); string(got.Value) != "0" {
		t.Fatalf("first member got %q, want %q", got.Value, "0")
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	// Published while the group has no member: kept for the next one.
	for i := 1; i <= 10; i++ {
		publish(t, tr, syncbridge.Message{Topic: topic, Key: []byte("k"), Value: fmt.Appendf(nil, "%d", i)})
	}
	second := newSink()
	subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic, Group: "g"}, second.handle)
	for i := 1; i <= 10; i++ {
		got := second.next(t, s.Timeout)
		if string(got.Value) == "0" {
			t.Fatalf("message 0, handled before Close, was delivered again")
		}
		if want := fmt.Sprint(i); string(got.Value) != want {
			t.Fatalf("second member got %q, want %q", got.Value, want)
		}
	}
}

func testKeyOrder(t *testing.T, s Setup) {
	tr, topic := s.New(t), s.Topic(t)
	k := newSink()
	subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic, Group: "g"}, k.handle)
	const n = 100
	parts := map[int32]bool{}
	for i := range n {
		publish(t, tr, syncbridge.Message{Topic: topic, Key: []byte("same"), Value: fmt.Appendf(nil, "%d", i)})
	}
	for i := range n {
		got := k.next(t, s.Timeout)
		if want := fmt.Sprint(i); string(got.Value) != want {
			t.Fatalf("message %d = %q, want %q (same key, out of order)", i, got.Value, want)
		}
		parts[got.Partition] = true
	}
	if len(parts) != 1 {
		t.Errorf("one key went to partitions %v, want one", parts)
	}
}

// testPublishCancelled: a message whose context ended before Publish is
// not sent, and the error says so (ErrNotSent) along with why.
func testPublishCancelled(t *testing.T, s Setup) {
	tr, topic := s.New(t), s.Topic(t)
	k := newSink()
	subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic}, k.handle)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("cancelled")})
	if !errors.Is(err, context.Canceled) || !errors.Is(err, syncbridge.ErrNotSent) {
		t.Errorf("Publish with a cancelled context: %v, want context.Canceled and ErrNotSent", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	err = tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("expired")})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, syncbridge.ErrNotSent) {
		t.Errorf("Publish with an expired context: %v, want context.DeadlineExceeded and ErrNotSent", err)
	}
	// Neither was delivered: the next message is the first to arrive.
	publish(t, tr, syncbridge.Message{Topic: topic, Value: []byte("sent")})
	if got := k.next(t, s.Timeout); string(got.Value) != "sent" {
		t.Errorf("got %q, want only the message that was sent", got.Value)
	}
}

// testPublishAsync checks an AsyncPublisher: done is called once per
// message, nil once it is written; a message whose context ended first
// is not sent, and done says ErrNotSent.
func testPublishAsync(t *testing.T, s Setup) {
	tr, topic := s.New(t), s.Topic(t)
	ap, ok := tr.(syncbridge.AsyncPublisher)
	if !ok {
		t.Skip("the transport is not an AsyncPublisher: Publish is its only path")
	}
	k := newSink()
	subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic}, k.handle)
	const n = 100
	var calls [n + 1]int
	var mu sync.Mutex
	results := make(chan error, 2*(n+1))
	for i := range n {
		ap.PublishAsync(context.Background(), syncbridge.Message{Topic: topic, Key: []byte("k"), Value: fmt.Appendf(nil, "%d", i)}, func(err error) {
			mu.Lock()
			calls[i]++
			mu.Unlock()
			results <- err
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ap.PublishAsync(ctx, syncbridge.Message{Topic: topic, Key: []byte("k"), Value: []byte("cancelled")}, func(err error) {
		mu.Lock()
		calls[n]++
		mu.Unlock()
		results <- err
	})
	var notSent int
	for range n + 1 {
		select {
		case err := <-results:
			if err != nil {
				if !errors.Is(err, syncbridge.ErrNotSent) || !errors.Is(err, context.Canceled) {
					t.Errorf("done(%v), want nil or ErrNotSent with context.Canceled", err)
				}
				notSent++
			}
		case <-time.After(s.Timeout):
			t.Fatalf("done not called within %v", s.Timeout)
		}
	}
	if notSent != 1 {
		t.Errorf("%d messages not sent, want 1 (the cancelled one)", notSent)
	}
	for i := range n {
		if got := k.next(t, s.Timeout); string(got.Value) != fmt.Sprint(i) {
			t.Fatalf("message %d = %q, want %d: in order for one key, and the cancelled one never", i, got.Value, i)
		}
	}
	publish(t, tr, syncbridge.Message{Topic: topic, Key: []byte("k"), Value: []byte("end")})
	if got := k.next(t, s.Timeout); string(got.Value) != "end" {
		t.Errorf("after the cancelled message: got %q, want %q", got.Value, "end")
	}
	mu.Lock()
	defer mu.Unlock()
	for i, c := range calls {
		if c != 1 {
			t.Errorf("done of message %d called %d times, want 1", i, c)
		}
	}
}

// testOffsetAndTime: a delivered message carries its offset, increasing
// within a partition, and the time it was written.
func testOffsetAndTime(t *testing.T, s Setup) {
	tr, topic := s.New(t), s.Topic(t)
	k := newSink()
	subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic}, k.handle)
	before := time.Now().Add(-time.Second) // clocks of broker and test differ a little
	for i := range 3 {
		publish(t, tr, syncbridge.Message{Topic: topic, Partition: 1, UsePartition: true, Value: fmt.Appendf(nil, "%d", i)})
	}
	last := int64(-1)
	for range 3 {
		m := k.next(t, s.Timeout)
		if m.Offset <= last {
			t.Errorf("offset %d after %d: want increasing offsets in a partition", m.Offset, last)
		}
		last = m.Offset
		if m.Time.Before(before) || m.Time.After(time.Now().Add(time.Second)) {
			t.Errorf("message time %v, want about now", m.Time)
		}
	}
}

// testConcurrentOverlaps: with Concurrent, a group subscription's handler
// calls overlap, even for messages of one key: here each of 4 calls waits
// until all 4 are in progress.
func testConcurrentOverlaps(t *testing.T, s Setup) {
	tr, topic := s.New(t), s.Topic(t)
	const n = 4
	var mu sync.Mutex
	inProgress := 0
	all := make(chan struct{})
	done := make(chan struct{}, n)
	subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic, Group: "g", Concurrent: true}, func(ctx context.Context, m syncbridge.Message) {
		mu.Lock()
		inProgress++
		if inProgress == n {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-ctx.Done():
		}
		done <- struct{}{}
	})
	for i := range n {
		publish(t, tr, syncbridge.Message{Topic: topic, Key: []byte("same"), Value: fmt.Appendf(nil, "%d", i)})
	}
	select {
	case <-all:
	case <-time.After(s.Timeout):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("Concurrent: at most %d of %d handler calls were in progress at once, want them to overlap", inProgress, n)
	}
	for range n {
		<-done
	}
}

// testUseAfterClose: after Close, Publish fails with an error wrapping
// ErrClosed and ErrNotSent, Subscribe with one wrapping ErrClosed, and
// Close is idempotent.
func testUseAfterClose(t *testing.T, s Setup) {
	tr, topic := s.New(t), s.Topic(t)
	c, ok := tr.(interface{ Close() error })
	if !ok {
		t.Fatalf("%T has no Close() error method", tr)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	err := tr.Publish(context.Background(), syncbridge.Message{Topic: topic, Value: []byte("x")})
	if !errors.Is(err, syncbridge.ErrClosed) || !errors.Is(err, syncbridge.ErrNotSent) {
		t.Errorf("Publish after Close: %v, want ErrClosed and ErrNotSent", err)
	}
	if ap, ok := tr.(syncbridge.AsyncPublisher); ok {
		got := make(chan error, 1)
		ap.PublishAsync(context.Background(), syncbridge.Message{Topic: topic}, func(err error) { got <- err })
		if err := <-got; !errors.Is(err, syncbridge.ErrClosed) || !errors.Is(err, syncbridge.ErrNotSent) {
			t.Errorf("PublishAsync after Close: %v, want ErrClosed and ErrNotSent", err)
		}
	}
	for _, cfg := range []syncbridge.SubscribeConfig{{Topic: topic}, {Topic: topic, Group: "g"}} {
		sub, err := tr.Subscribe(context.Background(), cfg, func(context.Context, syncbridge.Message) {})
		if !errors.Is(err, syncbridge.ErrClosed) {
			t.Errorf("Subscribe(%+v) after Close: %v, want ErrClosed", cfg, err)
		}
		if sub != nil {
			sub.Close()
		}
	}
}

func testCloseStopsDelivery(t *testing.T, s Setup) {
	tr, topic := s.New(t), s.Topic(t)
	for _, group := range []string{"", "g"} {
		var mu sync.Mutex
		closed := false
		k := newSink()
		sub := subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic, Group: group}, func(ctx context.Context, m syncbridge.Message) {
			mu.Lock()
			defer mu.Unlock()
			if closed {
				t.Errorf("group %q: handler called after Close returned: %q", group, m.Value)
			}
			k.handle(ctx, m)
		})
		publish(t, tr, syncbridge.Message{Topic: topic, Key: []byte("k"), Value: []byte("one")})
		k.next(t, s.Timeout)
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
		if err := sub.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		mu.Lock()
		closed = true
		mu.Unlock()
		// A witness in the same position receives the next message; by
		// then the closed subscription would have received it too.
		witness := newSink()
		subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic, Group: group + "witness"}, witness.handle)
		publish(t, tr, syncbridge.Message{Topic: topic, Key: []byte("k"), Value: []byte("two")})
		for string(witness.next(t, s.Timeout).Value) != "two" {
		}
	}
}

// testHasResponders checks a ResponderChecker: a topic has responders
// while a group subscription reads it, and none before or after. A
// transport that answers from a cache may say "unknown" for a while, and
// is given the Setup's timeout to learn each change.
func testHasResponders(t *testing.T, s Setup) {
	tr, topic := s.New(t), s.Topic(t)
	rc, ok := tr.(syncbridge.ResponderChecker)
	if !ok {
		t.Skip("the transport is not a ResponderChecker")
	}
	await := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(s.Timeout)
		for {
			has, known := rc.HasResponders(topic)
			if known && has == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("HasResponders(%q) = %v, %v; want %v, true", topic, has, known, want)
			}
			time.Sleep(10 * time.Millisecond) // polling a cache refreshed in the background
		}
	}
	await(false)
	broadcast := subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic}, func(context.Context, syncbridge.Message) {})
	if has, known := rc.HasResponders(topic); known && has {
		t.Errorf("a broadcast subscription counts as a responder")
	}
	sub := subscribe(t, tr, syncbridge.SubscribeConfig{Topic: topic, Group: "g"}, func(context.Context, syncbridge.Message) {})
	await(true)
	sub.Close()
	broadcast.Close()
	await(false)
}
