package kafka_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

// severable is a connection that fails every read and write once cut is
// set: a process that died, as its broker sees it.
type severable struct {
	net.Conn
	cut *atomic.Bool
}

var errSevered = errors.New("test: connection severed")

func (c severable) Read(p []byte) (int, error) {
	if c.cut.Load() {
		c.Conn.Close()
		return 0, errSevered
	}
	return c.Conn.Read(p)
}

func (c severable) Write(p []byte) (int, error) {
	if c.cut.Load() {
		c.Conn.Close()
		return 0, errSevered
	}
	return c.Conn.Write(p)
}

// committed returns the group's committed offset of topic's partition 0,
// -1 when none.
func committed(ctx context.Context, e *env, group, topic string) (int64, error) {
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections()
	cl := &kafkago.Client{Addr: kafkago.TCP(e.brokers...), Transport: tr}
	res, err := cl.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0}}})
	if err != nil {
		return 0, err
	}
	if res.Error != nil {
		return 0, res.Error
	}
	for _, p := range res.Topics[topic] {
		if p.Partition == 0 {
			return p.CommittedOffset, p.Error
		}
	}
	return -1, nil
}

// SubscribeAck on a group is at least once, with commits only below the
// acked: a member that acks every message of a partition but one, then
// dies (its connections cut: no more heartbeats, commits or LeaveGroup),
// has committed up to that one; the next owner of the partition gets it
// again, and every message after it, acked or not, but none before it.
func TestSubscribeAckCrash(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(t, 1)
	group := "ackcrash-" + topic
	ctx := testCtx(t, 2*time.Minute)
	pub := e.transport(t)
	const n, held = 20, 10
	for i := range n {
		if err := pub.Publish(ctx, syncbridge.Message{Topic: topic, Value: strconv.AppendInt(nil, int64(i), 10)}); err != nil {
			t.Fatal(err)
		}
	}

	var cut atomic.Bool
	victim := e.transport(t, kafka.WithConnWrapper(func(c net.Conn) net.Conn { return severable{c, &cut} }),
		kafka.GroupTimeouts(6*time.Second, 500*time.Millisecond, 10*time.Second), kafka.ClientID("victim"))
	var (
		mu      sync.Mutex
		seen    int
		heldAck func()
	)
	all := make(chan struct{})
	sub, err := victim.SubscribeAck(ctx, syncbridge.SubscribeConfig{Topic: topic, Group: group}, func(_ context.Context, m syncbridge.Message, ack func()) {
		v, _ := strconv.Atoi(string(m.Value))
		mu.Lock()
		defer mu.Unlock()
		if v == held {
			heldAck = ack
		} else {
			ack()
		}
		if seen++; seen == n {
			close(all)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mu.Lock()
		if heldAck != nil {
			heldAck()
		}
		mu.Unlock()
		sub.Close()
	})
	select {
	case <-all:
	case <-ctx.Done():
		t.Fatalf("the victim got %d of %d messages", seen, n)
	}
	// The victim commits what is acked below the message it holds.
	var off int64
	for off < held && ctx.Err() == nil {
		if off, err = committed(ctx, e, group, topic); err != nil {
			t.Fatal(err)
		}
	}
	if off != held {
		t.Fatalf("committed offset %d with message %d not acked (and every other acked), want %d", off, held, held)
	}
	cut.Store(true) // the victim dies

	survivor := e.transport(t, kafka.ClientID("survivor"))
	var (
		smu  sync.Mutex
		got  []int
		last = make(chan struct{})
	)
	sub2, err := survivor.SubscribeAck(ctx, syncbridge.SubscribeConfig{Topic: topic, Group: group}, func(_ context.Context, m syncbridge.Message, ack func()) {
		v, _ := strconv.Atoi(string(m.Value))
		smu.Lock()
		got = append(got, v)
		smu.Unlock()
		if v == n-1 {
			close(last)
		}
		ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Close()
	select {
	case <-last:
	case <-ctx.Done():
		t.Fatal("the survivor never got the partition's last message")
	}
	smu.Lock()
	defer smu.Unlock()
	want := make([]int, 0, n-held)
	for i := held; i < n; i++ {
		want = append(want, i)
	}
	if !slices.Equal(got, want) {
		t.Errorf("the survivor got %v, want %v: the message not acked and those after it, none before", got, want)
	}
}

// A Responder on this transport handles the next requests of a partition
// while its reply to the first is being produced (held here by kfake), and
// the replies that queue meanwhile leave in one produce request; every
// caller gets its reply. kfake only: it holds a produce request.
func TestResponderPipelinesOnKafka(t *testing.T) {
	e := newEnv(t)
	if e.cluster == nil {
		t.Skip("holds a produce request in the broker: kfake only")
	}
	requests, replies := e.topic(t, 1), e.topic(t, 1)
	ctx := testCtx(t, time.Minute)
	held, h := make(chan struct{}), e.holder(t)
	var once sync.Once
	e.cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		for _, tp := range req.(*kmsg.ProduceRequest).Topics {
			if tp.Topic == replies {
				once.Do(func() {
					close(held)
					h.hold()
				})
			}
		}
		return nil, nil, false
	})
	rt := e.transport(t)
	const n = 6
	calls := make(chan struct{}, n)
	r, err := syncbridge.NewResponder(ctx, rt, requests, func(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		calls <- struct{}{}
		return syncbridge.Message{Value: req.Value}, nil
	}, syncbridge.WithGroup("pipeline-"+requests))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b := newBridge(t, e.transport(t), syncbridge.WithReplyTopic(replies))
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			v := strconv.Itoa(i)
			rep, err := b.Request(ctx, syncbridge.Message{Topic: requests, Value: []byte(v)})
			if err != nil || string(rep.Value) != v {
				t.Errorf("request %s: %q, %v", v, rep.Value, err)
			}
		})
	}
	<-held
	for i := range n {
		select {
		case <-calls:
		case <-time.After(20 * time.Second):
			h.release()
			wg.Wait()
			t.Fatalf("%d of %d requests handled while the first reply was held: the Responder waits for each reply", i, n)
		}
	}
	st := r.Stats()
	h.release()
	wg.Wait()
	if st.InProgress == 0 {
		t.Error("InProgress 0 with replies not acknowledged")
	}
	// A caller can read its reply before the broker's acknowledgement
	// reaches the Responder's transport; Shutdown returns once every
	// reply is acknowledged, and so counted.
	if err := r.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if s := rt.Stats(); s.Produced != n || s.ProduceRequests > 2 {
		t.Errorf("%d replies in %d produce requests, want %d in at most 2: the held one, and the rest together", s.Produced, s.ProduceRequests, n)
	}
}
