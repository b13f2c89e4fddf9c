package kafka_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

// lossy loses the broker's answers to produce requests, after the broker
// has handled them: the answer is read, then the connection is dropped.
type lossy struct {
	armed atomic.Int32 // answers still to lose
	lost  atomic.Int32 // answers lost
}

// take uses up one armed loss, if there is one.
func (l *lossy) take() bool {
	for {
		n := l.armed.Load()
		if n <= 0 {
			return false
		}
		if l.armed.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

func (l *lossy) wrap(c net.Conn) net.Conn { return &lossyConn{Conn: c, l: l} }

type lossyConn struct {
	net.Conn
	l       *lossy
	mu      sync.Mutex // protects left
	left    int        // bytes of the request being written still to come
	partial []byte     // the start of a frame header split across writes
	lose    atomic.Bool
}

func (c *lossyConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for q := p; len(q) > 0; {
		if c.left > 0 {
			n := min(c.left, len(q))
			c.left -= n
			q = q[n:]
			continue
		}
		need := 6 - len(c.partial)
		if len(q) < need {
			c.partial = append(c.partial, q...)
			break
		}
		hdr := append(c.partial, q[:need]...)
		c.partial = nil
		size := int(binary.BigEndian.Uint32(hdr))
		if binary.BigEndian.Uint16(hdr[4:]) == 0 && c.l.take() { // a produce request
			c.lose.Store(true)
		}
		c.left = size + 4 - len(hdr)
		q = q[need:]
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *lossyConn) Read(p []byte) (int, error) {
	if c.lose.Load() {
		// The broker answered: it handled the request. Lose the answer.
		_, _ = c.Conn.Read(p)
		_ = c.Conn.Close()
		if c.lose.CompareAndSwap(true, false) {
			c.l.lost.Add(1)
		}
		return 0, errors.New("lossy: answer lost")
	}
	return c.Conn.Read(p)
}

// A produce request whose answer is lost is sent again; the idempotent
// producer (the default, under RequireAll) makes the broker write it once,
// and a retried record keeps the partition it was first given. With
// RequireLeader, which has no idempotence, the same losses write records
// twice, on one partition: the test sees duplicates when there are some.
func TestNoDuplicatesAfterLostAnswers(t *testing.T) {
	for _, idempotent := range []bool{true, false} {
		name := map[bool]string{true: "idempotent", false: "acks=1"}[idempotent]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			const parts = 4
			topic := e.topic(t, parts)
			l := new(lossy)
			opts := []kafka.Option{kafka.WithConnWrapper(l.wrap), kafka.RetryBackoff(5*time.Millisecond, 50*time.Millisecond)}
			if !idempotent {
				opts = append(opts, kafka.RequiredAcks(kafka.RequireLeader))
			}
			tr := e.transport(t, opts...)
			ctx := testCtx(t, 60*time.Second)

			var (
				mu      sync.Mutex // protects seen
				seen    = make(map[string][]int32)
				markers = make(chan struct{}, parts)
			)
			sub, err := e.transport(t).Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, func(_ context.Context, m syncbridge.Message) {
				if string(m.Value) == "marker" {
					markers <- struct{}{}
					return
				}
				mu.Lock()
				seen[string(m.Value)] = append(seen[string(m.Value)], m.Partition)
				mu.Unlock()
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()

			const n, workers = 400, 8
			var wg sync.WaitGroup
			var failed atomic.Int32
			for w := range workers {
				wg.Go(func() {
					for i := w; i < n; i += workers {
						if i%20 == 10 {
							l.armed.Add(1)
						}
						if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte(strconv.Itoa(i))}); err != nil {
							failed.Add(1)
							t.Errorf("publish %d: %v", i, err)
						}
					}
				})
			}
			wg.Wait()
			l.armed.Store(0)
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
			var dups, missing, moved int
			for i := range n {
				ps := seen[strconv.Itoa(i)]
				if len(ps) == 0 {
					missing++
				}
				dups += max(0, len(ps)-1)
				for _, p := range ps {
					if p != ps[0] {
						moved++
						t.Errorf("message %d written to partitions %v", i, ps)
						break
					}
				}
			}
			t.Logf("%s: %d messages, %d produce answers lost (each retried): %d written twice, %d missing, %d on two partitions, %d publishes failed; transport %+v",
				name, n, l.lost.Load(), dups, missing, moved, failed.Load(), tr.Stats())
			if l.lost.Load() == 0 {
				t.Fatal("no answer was lost: the test did not exercise retries")
			}
			if missing != 0 {
				t.Errorf("%d acknowledged messages missing", missing)
			}
			if idempotent && dups != 0 {
				t.Errorf("the idempotent producer wrote %d messages twice", dups)
			}
			if !idempotent && dups == 0 {
				t.Errorf("without idempotence no message was written twice: the test cannot see duplicates")
			}
		})
	}
}

// A broker over a quota answers with a throttle time and mutes the
// connection for it: the next request on it waits that long instead of
// being sent into the muted connection.
func TestThrottleHonoured(t *testing.T) {
	e := newEnv(t)
	if e.cluster == nil {
		t.Skip("needs kfake to answer with a throttle time")
	}
	topic := e.topic(t, 1)
	tr := e.transport(t)
	ctx := testCtx(t, 30*time.Second)
	if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	const throttle = 400 * time.Millisecond
	e.cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		preq := req.(*kmsg.ProduceRequest)
		res := preq.ResponseKind().(*kmsg.ProduceResponse)
		res.SetVersion(preq.GetVersion())
		res.ThrottleMillis = int32(throttle / time.Millisecond)
		for _, rt := range preq.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				st.Partitions = append(st.Partitions, sp)
			}
			res.Topics = append(res.Topics, st)
		}
		return res, nil, true
	})
	if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("throttled")}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("the publish after a %v throttle took %v; transport %+v", throttle, took.Round(time.Millisecond), tr.Stats())
	if took < throttle-50*time.Millisecond {
		t.Errorf("the next produce request did not wait for the throttle time")
	}
	if tr.Stats().Throttled == 0 {
		t.Errorf("Stats.Throttled is 0")
	}
}
