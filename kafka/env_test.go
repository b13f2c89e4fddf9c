package kafka_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// env is the broker a test runs against: an in-process kfake cluster, or
// the real Kafka at KAFKA_BROKERS.
type env struct {
	brokers []string
	real    bool
	cluster *kfake.Cluster // nil on a real broker
}

// newEnv returns the test's broker. On kfake each test gets its own
// cluster, closed when the test ends.
func newEnv(t testing.TB, opts ...kfake.Opt) *env {
	t.Helper()
	if b := os.Getenv("KAFKA_BROKERS"); b != "" {
		return &env{brokers: strings.Split(b, ","), real: true}
	}
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &env{brokers: c.ListenAddrs(), cluster: c}
}

var topicSeq atomic.Int64

var nonTopic = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

// topic creates a fresh topic with the given number of partitions and
// returns its name.
func (e *env) topic(t testing.TB, partitions int) string {
	t.Helper()
	return e.topicWith(t, partitions, nil)
}

// topicWith creates a fresh topic with the given number of partitions and
// topic configs, and returns its name.
func (e *env) topicWith(t testing.TB, partitions int, configs map[string]string) string {
	t.Helper()
	name := fmt.Sprintf("sb.%s.%d.%d", nonTopic.ReplaceAllString(t.Name(), "_"), time.Now().UnixNano()%1e6, topicSeq.Add(1))
	if len(name) > 200 {
		name = name[len(name)-200:]
	}
	var entries []kafkago.ConfigEntry
	for k, v := range configs {
		entries = append(entries, kafkago.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections()
	client := &kafkago.Client{Addr: kafkago.TCP(e.brokers...), Transport: tr, Timeout: 30 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{{
		Topic: name, NumPartitions: partitions, ReplicationFactor: e.replication(), ConfigEntries: entries,
	}}})
	if err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	if err := res.Errors[name]; err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	if e.real && len(e.brokers) > 1 {
		e.awaitTopic(t, name, partitions)
	}
	return name
}

// awaitTopic waits until every broker's metadata has topic with its
// partitions and their leaders: on a cluster, a topic just created reaches
// the brokers one after the other.
func (e *env) awaitTopic(t testing.TB, topic string, partitions int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, b := range e.brokers {
		for {
			// A metadata request to broker b itself.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			var parts []kafkago.Partition
			conn, err := kafkago.DialContext(ctx, "tcp", b)
			if err == nil {
				parts, err = conn.ReadPartitions(topic)
				conn.Close()
			}
			cancel()
			ready := err == nil && len(parts) == partitions
			for _, p := range parts {
				ready = ready && p.Leader.ID >= 0 && p.Leader.Host != ""
			}
			if ready {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("topic %s not in broker %s's metadata after 30s: %v", topic, b, err)
			}
			time.Sleep(20 * time.Millisecond) // polling the cluster's state: no event to wait on
		}
	}
}

// replication is the replication factor of test topics: KAFKA_REPLICATION,
// or 1.
func (e *env) replication() int {
	if n, err := strconv.Atoi(os.Getenv("KAFKA_REPLICATION")); err == nil && n > 0 {
		return n
	}
	return 1
}

// transport returns a new Transport on e, closed when the test ends.
func (e *env) transport(t testing.TB, opts ...kafka.Option) *kafka.Transport {
	t.Helper()
	tr, err := kafka.New(e.brokers, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// ctx returns a context that ends with the test or after d.
func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// collector gathers delivered messages.
type collector struct {
	mu   sync.Mutex // protects msgs, wait
	msgs []syncbridge.Message
	wait []waiter
}

type waiter struct {
	n  int
	ch chan struct{}
}

func (c *collector) handle(_ context.Context, m syncbridge.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs = append(c.msgs, m)
	kept := c.wait[:0]
	for _, w := range c.wait {
		if len(c.msgs) >= w.n {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	c.wait = kept
}

// waitFor waits until at least n messages arrived, or fails the test.
func (c *collector) waitFor(t testing.TB, n int, d time.Duration) []syncbridge.Message {
	t.Helper()
	if err := c.await(n, d); err != nil {
		t.Fatal(err)
	}
	return c.snapshot()
}

// await waits until at least n messages arrived; it may be called from any
// goroutine.
func (c *collector) await(n int, d time.Duration) error {
	c.mu.Lock()
	ch := make(chan struct{})
	if len(c.msgs) >= n {
		close(ch)
	} else {
		c.wait = append(c.wait, waiter{n, ch})
	}
	c.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-time.After(d):
		return fmt.Errorf("got %d messages after %v, want %d", c.len(), d, n)
	}
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

func (c *collector) snapshot() []syncbridge.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]syncbridge.Message(nil), c.msgs...)
}

// freePort returns a TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// holder holds kfake requests in their control function (SleepControl)
// until released.
//
// A control function still asleep when its cluster closes can deadlock
// kfake's run loop, which Close does not wait for: SleepControl returns on
// the cluster's end, the control function's goroutine then takes the
// cluster's control mutex for the run loop to release, and a run loop
// that picks another ready case over the end (the sleeper's wake-up, a
// request) blocks on that mutex for good; goleak then finds it. So the
// holder releases when the test ends, before the cluster closes (its
// Cleanup runs before newEnv's) and waits until every held control
// function has been resumed by the run loop; once released, nothing is
// held.
type holder struct {
	c        *kfake.Cluster
	ch       chan struct{}
	mu       sync.Mutex // protects released, asleep's Add
	released bool
	asleep   sync.WaitGroup
}

// holder returns a holder on e's kfake cluster, released when the test
// ends.
func (e *env) holder(t testing.TB) *holder {
	t.Helper()
	h := &holder{c: e.cluster, ch: make(chan struct{})}
	t.Cleanup(func() {
		h.release()
		if err := h.wait(time.Minute); err != nil {
			t.Error(err)
		}
	})
	return h
}

// hold, called in a control function, holds its request until release;
// once released it returns at once.
func (h *holder) hold() {
	h.mu.Lock()
	if h.released {
		h.mu.Unlock()
		return
	}
	h.asleep.Add(1)
	h.mu.Unlock()
	// Unless the cluster closed, SleepControl returns through the run
	// loop's wake-up, after which the run loop waits for this control
	// function's result whatever else comes.
	defer h.asleep.Done()
	h.c.SleepControl(func() { <-h.ch })
}

// release lets the held requests go, and any later ones pass.
func (h *holder) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.released {
		h.released = true
		close(h.ch)
	}
}

// wait waits, after release, up to d until every held control function
// has resumed.
func (h *holder) wait(d time.Duration) error {
	done := make(chan struct{})
	go func() {
		h.asleep.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(d):
		return fmt.Errorf("a request held in kfake was not resumed %v after its release", d)
	}
}
