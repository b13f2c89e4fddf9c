package kafka_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
)

// counter counts deliveries per value and per subscriber.
type counter struct {
	mu    sync.Mutex // protects seen, by, total, wait
	seen  map[string]int
	by    map[string]int
	total int
	wait  []nameWaiter
}

// nameWaiter waits for n distinct values (name "") or n deliveries to one
// member.
type nameWaiter struct {
	name string
	n    int
	ch   chan struct{}
}

func newCounter() *counter {
	return &counter{seen: make(map[string]int), by: make(map[string]int)}
}

func (c *counter) handler(name string) syncbridge.Handler {
	return func(_ context.Context, m syncbridge.Message) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.seen[string(m.Value)]++
		c.by[name]++
		c.total++
		kept := c.wait[:0]
		for _, w := range c.wait {
			if c.reachedLocked(w.name, w.n) {
				close(w.ch)
			} else {
				kept = append(kept, w)
			}
		}
		c.wait = kept
	}
}

func (c *counter) reachedLocked(name string, n int) bool {
	if name == "" {
		return len(c.seen) >= n
	}
	return c.by[name] >= n
}

// waitDistinct waits until n distinct values arrived.
func (c *counter) waitDistinct(t testing.TB, n int, d time.Duration) {
	t.Helper()
	c.waitFor(t, "", n, d)
}

// waitFor waits until member name handled n messages, or, for name "", n
// distinct values arrived.
func (c *counter) waitFor(t testing.TB, name string, n int, d time.Duration) {
	t.Helper()
	c.mu.Lock()
	ch := make(chan struct{})
	if c.reachedLocked(name, n) {
		close(ch)
	} else {
		c.wait = append(c.wait, nameWaiter{name, n, ch})
	}
	c.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(d):
		c.mu.Lock()
		defer c.mu.Unlock()
		t.Fatalf("after %v: %d distinct values, member %q handled %d; wanted %d", d, len(c.seen), name, c.by[name], n)
	}
}

func (c *counter) count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.by[name]
}

func (c *counter) duplicates() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total - len(c.seen)
}

func TestGroupCompetingConsumers(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(t, 4)
	group := "competing-" + topic
	ctx := testCtx(t, 60*time.Second)
	c := newCounter()

	a, b := e.transport(t), e.transport(t)
	subA, err := a.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic, Group: group}, c.handler("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer subA.Close()
	subB, err := b.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic, Group: group}, c.handler("b"))
	if err != nil {
		t.Fatal(err)
	}
	defer subB.Close()

	pub := e.transport(t)
	sent := 0
	publish := func() {
		t.Helper()
		if err := pub.Publish(ctx, syncbridge.Message{Topic: topic, Key: []byte(strconv.Itoa(sent)), Value: []byte(strconv.Itoa(sent))}); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	// Keep publishing until both members have partitions (Kafka offers
	// no event for that here), then publish a fixed load.
	deadline := time.Now().Add(40 * time.Second)
	for c.count("a") == 0 || c.count("b") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after %d messages: a got %d, b got %d", sent, c.count("a"), c.count("b"))
		}
		for range 8 {
			publish()
		}
		c.waitDistinct(t, sent, 30*time.Second)
	}
	for range 400 {
		publish()
	}
	c.waitDistinct(t, sent, 30*time.Second)
	if d := c.duplicates(); d != 0 {
		t.Errorf("%d messages delivered twice", d)
	}
	t.Logf("%d messages: a handled %d, b handled %d", sent, c.count("a"), c.count("b"))
}

// A member closed mid-stream commits what it handled; a new member of the
// group resumes after it, losing nothing.
func TestGroupResumesAfterClose(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(t, 4)
	group := "resume-" + topic
	ctx := testCtx(t, 60*time.Second)
	pub := e.transport(t)
	const n = 400
	// Concurrent publishes make fat record batches, so that the second
	// member resumes in the middle of one: records below its offset must
	// be skipped.
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				if err := pub.Publish(ctx, syncbridge.Message{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if st := pub.Stats(); st.ProduceRequests >= st.Produced {
		t.Logf("no batching: %d messages in %d produce requests", st.Produced, st.ProduceRequests)
	}

	c := newCounter()
	first := e.transport(t)
	h := c.handler("first")
	reached := make(chan struct{})
	var once sync.Once
	var handled int
	var mu sync.Mutex
	sub1, err := first.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic, Group: group}, func(ctx context.Context, m syncbridge.Message) {
		h(ctx, m)
		mu.Lock()
		handled++
		if handled == n/4 {
			once.Do(func() { close(reached) })
		}
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-reached:
	case <-ctx.Done():
		t.Fatal("first member never handled a quarter of the messages")
	}
	if err := sub1.Close(); err != nil {
		t.Fatal(err)
	}
	got1 := c.count("first")
	if got1 >= n {
		t.Skipf("first member handled all %d messages before Close", got1)
	}

	second := e.transport(t)
	sub2, err := second.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic, Group: group}, c.handler("second"))
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Close()
	c.waitDistinct(t, n, 30*time.Second)
	if d := c.duplicates(); d != 0 {
		t.Errorf("%d messages delivered twice: the first member's commits were lost", d)
	}
	t.Logf("first handled %d, second %d", got1, c.count("second"))
}

// A group that never committed starts at the earliest offset: messages
// published before its first member subscribed are delivered.
func TestGroupStartsAtEarliest(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(t, 2)
	tr := e.transport(t)
	ctx := testCtx(t, 60*time.Second)
	for i := range 10 {
		if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	c := newCounter()
	sub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic, Group: "earliest-" + topic}, c.handler("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for i := 10; i < 20; i++ {
		if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	c.waitDistinct(t, 20, 30*time.Second)
}

// Members join and leave while messages flow: rebalances commit what was
// handled before giving partitions up, so nothing is lost or handled twice.
func TestGroupRebalanceUnderLoad(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(t, 4)
	group := "churn-" + topic
	ctx := testCtx(t, 120*time.Second)
	c := newCounter()
	pub := e.transport(t)

	stop := make(chan struct{})
	published := make(chan int, 1)
	go func() {
		n := 0
		defer func() { published <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := pub.Publish(ctx, syncbridge.Message{Topic: topic, Key: []byte(strconv.Itoa(n)), Value: []byte(strconv.Itoa(n))}); err != nil {
				t.Error(err)
				return
			}
			n++
		}
	}()
	join := func(name string) syncbridge.Subscription {
		t.Helper()
		sub, err := e.transport(t).Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic, Group: group}, c.handler(name))
		if err != nil {
			t.Fatal(err)
		}
		return sub
	}
	waitHandled := func(name string, n int) {
		t.Helper()
		c.waitFor(t, name, n, 60*time.Second)
	}
	a := join("a")
	waitHandled("a", 50)
	b := join("b")
	waitHandled("b", 50)
	start := time.Now()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	cnt := c.count("b")
	waitHandled("b", cnt+200)
	t.Logf("b took over a's partitions and handled 200 more within %v", time.Since(start))
	d := join("d")
	defer d.Close()
	waitHandled("d", 50)
	close(stop)
	n := <-published
	c.waitDistinct(t, n, 60*time.Second)
	_ = b.Close()
	if dup := c.duplicates(); dup != 0 {
		t.Errorf("%d of %d messages handled twice", dup, n)
	}
	t.Logf("%d messages: a %d, b %d, d %d", n, c.count("a"), c.count("b"), c.count("d"))
}
