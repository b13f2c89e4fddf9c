package kafka_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

// deposed makes armed produce requests look, to the client, as a leader
// deposed while it waited for its replicas answers them: the broker
// appends the records, and the answer the client reads says
// NOT_LEADER_OR_FOLLOWER for every partition. That is what Kafka answers
// for an acks=all batch whose leadership moved before its replicas had it
// (seen in TestClusterLeaderKill when leadership moves back: the new
// leader had the record, and a client that took the error for a refusal
// wrote the request again).
type deposed struct {
	armed    atomic.Int32 // answers still to rewrite to NOT_LEADER_OR_FOLLOWER
	rewrote  atomic.Int32 // answers rewritten
	failures atomic.Int32 // answers that could not be rewritten

	mu    sync.Mutex // protects codes
	codes []int16    // error codes for the next answers, before armed ones
}

// take returns the error code the next produce answer gets, if it is to
// be rewritten.
func (d *deposed) take() (int16, bool) {
	d.mu.Lock()
	if len(d.codes) > 0 {
		code := d.codes[0]
		d.codes = d.codes[1:]
		d.mu.Unlock()
		return code, true
	}
	d.mu.Unlock()
	for {
		n := d.armed.Load()
		if n <= 0 {
			return 0, false
		}
		if d.armed.CompareAndSwap(n, n-1) {
			return 6, true
		}
	}
}

func (d *deposed) wrap(c net.Conn) net.Conn { return &deposedConn{Conn: c, d: d} }

type deposedConn struct {
	net.Conn
	d       *deposed
	mu      sync.Mutex  // protects the fields below
	left    int         // bytes of the request being written still to come
	partial []byte      // the start of a frame header split across writes
	queue   []rewriteAs // per request written and not yet answered: how to rewrite its answer
	out     []byte      // a rewritten answer being read
}

func (c *deposedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for q := p; len(q) > 0; {
		if c.left > 0 {
			n := min(c.left, len(q))
			c.left -= n
			q = q[n:]
			continue
		}
		need := 8 - len(c.partial) // size, API key, API version
		if len(q) < need {
			c.partial = append(c.partial, q...)
			break
		}
		hdr := append(c.partial, q[:need]...)
		c.partial = nil
		size := int(binary.BigEndian.Uint32(hdr))
		as := rewriteAs{version: -1}
		if binary.BigEndian.Uint16(hdr[4:]) == 0 { // a produce request
			if code, ok := c.d.take(); ok {
				as = rewriteAs{version: int16(binary.BigEndian.Uint16(hdr[6:])), code: code}
			}
		}
		c.queue = append(c.queue, as)
		c.left = size + 4 - len(hdr)
		q = q[need:]
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *deposedConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.out) == 0 {
		if len(c.queue) == 0 || c.queue[0].version < 0 {
			if len(c.queue) > 0 {
				// Pass this answer through; the next read starts the next
				// one only after the frame is consumed, which the caller
				// does frame by frame (one request in flight).
				c.queue = c.queue[1:]
			}
			return c.Conn.Read(p)
		}
		as := c.queue[0]
		c.queue = c.queue[1:]
		var hdr [4]byte
		if _, err := io.ReadFull(c.Conn, hdr[:]); err != nil {
			return 0, err
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(c.Conn, body); err != nil {
			return 0, err
		}
		c.out = c.rewrite(as, hdr, body)
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	return n, nil
}

// rewriteAs says how to rewrite a produce answer: the request's version
// (-1: leave the answer alone) and the error code to give every partition.
type rewriteAs struct {
	version int16
	code    int16
}

// rewrite sets every partition's error code in a produce answer to
// as.code.
func (c *deposedConn) rewrite(as rewriteAs, hdr [4]byte, body []byte) []byte {
	version := as.version
	head := 4 // correlation ID
	if version >= 9 {
		head++ // empty tagged fields of a flexible answer's header
	}
	res := kmsg.NewProduceResponse()
	res.Version = version
	if err := res.ReadFrom(body[head:]); err != nil {
		c.d.failures.Add(1)
		return append(hdr[:], body...)
	}
	for i := range res.Topics {
		for j := range res.Topics[i].Partitions {
			res.Topics[i].Partitions[j].ErrorCode = as.code
			res.Topics[i].Partitions[j].BaseOffset = -1
		}
	}
	out := append(make([]byte, 4, 4+len(body)), body[:head]...)
	out = res.AppendTo(out)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	c.d.rewrote.Add(1)
	return out
}

// A leader deposed while it waits for its replicas answers
// NOT_LEADER_OR_FOLLOWER for a batch it appended. The batch is sent again
// as it was, with the same sequence numbers, so that the broker, which has
// it, writes it once; a client that took the answer for a refusal batched
// the records anew (with records published meanwhile), got
// OUT_OF_ORDER_SEQUENCE_NUMBER, took a new producer ID and wrote them
// twice.
func TestNotLeaderAfterAppend(t *testing.T) {
	e := newEnv(t)
	if e.real {
		t.Skip("rewrites the broker's answers: kfake only (TestClusterLeaderKill sees the real thing)")
	}
	const parts = 4
	topic := e.topic(t, parts)
	d := new(deposed)
	tr := e.transport(t, kafka.WithConnWrapper(d.wrap), kafka.RetryBackoff(5*time.Millisecond, 50*time.Millisecond))
	ctx := testCtx(t, 60*time.Second)

	var (
		mu      sync.Mutex // protects seen
		seen    = make(map[string]int)
		markers = make(chan struct{}, parts)
	)
	sub, err := e.transport(t).Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, func(_ context.Context, m syncbridge.Message) {
		if string(m.Value) == "marker" {
			markers <- struct{}{}
			return
		}
		mu.Lock()
		seen[string(m.Value)]++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	const n, workers = 400, 8
	var (
		wg     sync.WaitGroup
		failed atomic.Int32
	)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if i%20 == 10 {
					d.armed.Add(1)
				}
				if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte(strconv.Itoa(i))}); err != nil {
					failed.Add(1)
					t.Errorf("publish %d: %v", i, err)
				}
			}
		})
	}
	wg.Wait()
	d.armed.Store(0)
	for p := range int32(parts) {
		if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("marker"), Partition: p, UsePartition: true}); err != nil {
			t.Fatal(err)
		}
	}
	for range parts {
		select {
		case <-markers:
		case <-ctx.Done():
			t.Fatal("markers not delivered")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	var dups, missing int
	for i := range n {
		c := seen[strconv.Itoa(i)]
		if c == 0 {
			missing++
		}
		dups += max(0, c-1)
	}
	t.Logf("%d messages, %d answers turned into NOT_LEADER_OR_FOLLOWER after the append: %d written twice, %d missing, %d publishes failed; transport %+v",
		n, d.rewrote.Load(), dups, missing, failed.Load(), tr.Stats())
	if d.failures.Load() != 0 {
		t.Fatalf("%d answers could not be decoded", d.failures.Load())
	}
	if d.rewrote.Load() == 0 {
		t.Fatal("no answer was rewritten: the test did not exercise the case")
	}
	if missing != 0 {
		t.Errorf("%d acknowledged messages missing", missing)
	}
	if dups != 0 {
		t.Errorf("%d messages written twice", dups)
	}
}

// A batch whose leader failed waits for that leader only for its backoff:
// it goes to a new leader as soon as the metadata names one (looked up
// every RetryBackoff, 100 ms apart at least, while it waits), not once a
// backoff grown by the old leader's failures has passed (the partition's
// other records wait behind it); and should the new leader refuse it at
// first, the backoff starts afresh.
func TestProduceNewLeaderAtOnce(t *testing.T) {
	if newEnvIsReal() {
		t.Skip("fails one broker's produce requests on a kfake cluster")
	}
	const topic = "newleader"
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(1, topic))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e := &env{brokers: c.ListenAddrs(), cluster: c}
	// A backoff that grows to seconds after a few failures.
	const first = 200 * time.Millisecond
	tr := e.transport(t, kafka.RetryBackoff(first, 10*time.Second))
	ctx := testCtx(t, 60*time.Second)
	if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("before")}); err != nil {
		t.Fatal(err)
	}

	victim := c.LeaderFor(topic, 0)
	const failures = 4 // the backoff is then first << 3
	// The victim drops the connection with the batch sent: the batch may
	// have been written, and goes again as it is.
	f := failLeader(c, kmsg.Produce, victim, failures, "broker down for produce requests")
	done := make(chan error, 1)
	go func() { done <- tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("across the move")}) }()
	select {
	case <-f.nth:
	case <-ctx.Done():
		t.Fatal("the victim was not sent the batch")
	}
	to, moved := f.move(t, topic)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	took := time.Since(moved)
	t.Logf("partition 0 moved from broker %d (%d produce requests refused, backoff now %v) to broker %d (first request refused: %v): the batch was acknowledged %v after the move",
		victim, f.refused.Load(), first<<(failures-1), to, f.refusedAt.Load(), took.Round(time.Millisecond))
	if !f.refusedAt.Load() {
		t.Error("the new leader was not sent the batch before it was acknowledged")
	}
	if took > 6*first {
		t.Errorf("acknowledged %v after the move, want within %v: the batch waited for the failed leader's backoff", took, 6*first)
	}
}

// A batch an earlier attempt may have written, answered
// OUT_OF_ORDER_SEQUENCE_NUMBER, is not sent again under a new producer ID,
// under which the broker could not tell it from the copy it may have: it
// fails, as maybe written. Here the broker has it (the first attempt was
// appended and answered NOT_LEADER_OR_FOLLOWER; the second, a duplicate
// the broker recognised, is answered out of order): sent under a new
// producer ID it was written twice.
func TestOutOfOrderAfterMaybeWritten(t *testing.T) {
	e := newEnv(t)
	if e.real {
		t.Skip("rewrites the broker's answers: kfake only")
	}
	topic := e.topic(t, 1)
	d := new(deposed)
	tr := e.transport(t, kafka.WithConnWrapper(d.wrap), kafka.RetryBackoff(5*time.Millisecond, 50*time.Millisecond))
	ctx := testCtx(t, 30*time.Second)

	seen := make(chan string, 10)
	sub, err := e.transport(t).Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, func(_ context.Context, m syncbridge.Message) {
		seen <- string(m.Value)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	// A first message gets the producer ID and is written.
	if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	d.codes = []int16{6, 45}
	d.mu.Unlock()
	err = tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("doubtful")})
	if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("marker")}); err != nil {
		t.Fatal(err)
	}
	copies := 0
	for v := ""; v != "marker"; {
		select {
		case v = <-seen:
		case <-ctx.Done():
			t.Fatal("the marker did not arrive")
		}
		if v == "doubtful" {
			copies++
		}
	}
	t.Logf("answers NOT_LEADER_OR_FOLLOWER then OUT_OF_ORDER_SEQUENCE_NUMBER: publish returned %v; written %d times", err, copies)
	if d.rewrote.Load() != 2 || d.failures.Load() != 0 {
		t.Fatalf("%d answers rewritten, %d not decoded: want 2 and 0", d.rewrote.Load(), d.failures.Load())
	}
	if copies != 1 {
		t.Errorf("the message was written %d times, want once", copies)
	}
	if err == nil || errors.Is(err, syncbridge.ErrNotSent) {
		t.Errorf("publish returned %v, want an error that does not say the message was not sent", err)
	}
}
