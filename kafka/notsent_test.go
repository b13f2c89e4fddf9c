package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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

// slowProduce makes a kfake cluster hold every produce request for a
// random 0 to max before handling it, so that produce requests are in
// flight for a while and messages queue behind them, as on a real broker.
// It sleeps on the cluster's loop: kfake's SleepControl races with itself
// when several requests sleep at once.
func slowProduce(c *kfake.Cluster, max time.Duration) {
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		time.Sleep(rand.N(max))
		return nil, nil, false
	})
}

// TestPublishCancelNotSent is the contract of issue 8, point 1, on the
// transport: thousands of messages, a share of them cancelled at random
// moments during publish; a subscriber records every message written;
// every message whose publish ended with an error wrapping ErrNotSent is
// absent from that record, and every acknowledged one is in it.
func TestPublishCancelNotSent(t *testing.T) {
	for _, mode := range []string{"PublishAsync", "Publish"} {
		t.Run(mode, func(t *testing.T) { testCancelNotSent(t, mode == "PublishAsync") })
	}
}

func testCancelNotSent(t *testing.T, async bool) {
	e := newEnv(t)
	if e.cluster != nil {
		slowProduce(e.cluster, 3*time.Millisecond)
	}
	const parts = 4
	topic := e.topic(t, parts)
	pub := e.transport(t)
	ctx := testCtx(t, 120*time.Second)

	// The record: every value written to the topic.
	var (
		mu       sync.Mutex // protects received, markers
		received = make(map[string]int)
		markers  = make(map[string]bool)
		allMarks = make(chan struct{})
	)
	sub, err := e.transport(t).Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, func(_ context.Context, m syncbridge.Message) {
		mu.Lock()
		defer mu.Unlock()
		if v := string(m.Value); len(v) > 7 && v[:7] == "marker-" {
			markers[v] = true
			if len(markers) == parts {
				close(allMarks)
			}
			return
		}
		received[string(m.Value)]++
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	const n = 4000
	const workers = 32
	type outcome struct {
		err      error
		calls    atomic.Int32
		canceled time.Time // when its context was cancelled; zero if never
		doneAt   time.Time
	}
	outs := make([]outcome, n)
	var wg sync.WaitGroup
	var cancelMu sync.Mutex // protects outcome.canceled
	for w := range workers {
		wg.Go(func() {
			var inner sync.WaitGroup
			for i := w; i < n; i += workers {
				o := &outs[i]
				pctx, cancel := context.WithCancel(ctx)
				var stop func() bool
				if rand.N(3) == 0 { // a third are cancelled, 0 to 3 ms in
					tm := time.AfterFunc(rand.N(3*time.Millisecond), func() {
						cancelMu.Lock()
						o.canceled = time.Now()
						cancelMu.Unlock()
						cancel()
					})
					stop = tm.Stop
				}
				msg := syncbridge.Message{Topic: topic, Key: []byte(strconv.Itoa(i % 97)), Value: []byte(strconv.Itoa(i))}
				finish := func(err error) {
					o.calls.Add(1)
					o.err = err
					o.doneAt = time.Now()
					if stop != nil {
						stop()
					}
					cancel()
				}
				if async {
					inner.Add(1)
					pub.PublishAsync(pctx, msg, func(err error) { finish(err); inner.Done() })
					if i%(4*workers) == w { // keep a few in flight per worker
						inner.Wait()
					}
				} else {
					finish(pub.Publish(pctx, msg))
				}
			}
			inner.Wait()
		})
	}
	wg.Wait()

	// Everything ever written to the topic is delivered before the markers.
	for p := range int32(parts) {
		if err := pub.Publish(ctx, syncbridge.Message{Topic: topic, Partition: p, UsePartition: true, Value: fmt.Appendf(nil, "marker-%d", p)}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-allMarks:
	case <-ctx.Done():
		t.Fatal("markers not delivered")
	}

	mu.Lock()
	defer mu.Unlock()
	var acked, notSent, maybe, notSentSeen, ackedMissing, maybeSeen, dup, badCalls int
	var late time.Duration
	for i := range outs {
		o := &outs[i]
		v := strconv.Itoa(i)
		if c := o.calls.Load(); c != 1 {
			badCalls++
			continue
		}
		if received[v] > 1 {
			dup++
		}
		cancelMu.Lock()
		canceled := o.canceled
		cancelMu.Unlock()
		switch {
		case o.err == nil:
			acked++
			if received[v] == 0 {
				ackedMissing++
			}
		case errors.Is(o.err, syncbridge.ErrNotSent):
			notSent++
			if received[v] > 0 {
				notSentSeen++
				t.Errorf("message %s: %v; yet it was written", v, o.err)
			}
			if !errors.Is(o.err, context.Canceled) {
				t.Errorf("message %s: %v, want context.Canceled", v, o.err)
			}
		default:
			maybe++
			if received[v] > 0 {
				maybeSeen++
			}
			if !errors.Is(o.err, context.Canceled) {
				t.Errorf("message %s: %v, want context.Canceled", v, o.err)
			}
		}
		if o.err != nil && !canceled.IsZero() {
			late = max(late, o.doneAt.Sub(canceled))
		}
	}
	t.Logf("N=%d acknowledged=%d not-sent=%d maybe-sent=%d (of which written: %d); not-sent messages the subscriber saw: %d; acknowledged but missing: %d; duplicates: %d; done called other than once: %d; slowest done after cancel: %v",
		n, acked, notSent, maybe, maybeSeen, notSentSeen, ackedMissing, dup, badCalls, late)
	if notSentSeen != 0 || ackedMissing != 0 || badCalls != 0 {
		t.Errorf("contract broken: %d not-sent messages written, %d acknowledged messages missing, %d done counts wrong", notSentSeen, ackedMissing, badCalls)
	}
	if notSent == 0 {
		t.Errorf("no message was cancelled while queued: the test did not exercise the not-sent path")
	}
	if late > time.Second {
		t.Errorf("done came %v after the context was cancelled", late)
	}
}

// PublishAsync does no network I/O: with a broker that never answers it
// returns at once, and done follows when the context ends, not sent.
func TestPublishAsyncDoesNotBlock(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	conns.Go(func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	})
	defer conns.Wait()
	defer l.Close()
	tr, err := kafka.New([]string{l.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	tr.PublishAsync(ctx, syncbridge.Message{Topic: "t", Value: []byte("x")}, func(err error) { done <- err })
	returned := time.Since(start)
	err = <-done
	took := time.Since(start)
	t.Logf("PublishAsync returned after %v; done after %v: %v", returned, took, err)
	if returned > 50*time.Millisecond {
		t.Errorf("PublishAsync took %v with an unresponsive broker", returned)
	}
	if !errors.Is(err, syncbridge.ErrNotSent) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("done got %v, want ErrNotSent and DeadlineExceeded", err)
	}
	if took > 200*time.Millisecond+200*time.Millisecond {
		t.Errorf("done came %v after PublishAsync, deadline 200ms", took)
	}
}

// A produce request that reached the broker but got no answer may have
// been written: its error does not say not sent.
func TestPublishLostAnswerMaybeSent(t *testing.T) {
	e := newEnv(t)
	if e.cluster == nil {
		t.Skip("needs kfake to drop connections")
	}
	topic := e.topic(t, 1)
	tr := e.transport(t, kafka.RetryBackoff(10*time.Millisecond, 50*time.Millisecond))
	var dropped atomic.Int32
	e.cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		dropped.Add(1)
		return nil, errors.New("drop the connection"), true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("x")})
	t.Logf("after %d dropped produce requests: %v", dropped.Load(), err)
	if err == nil || errors.Is(err, syncbridge.ErrNotSent) {
		t.Errorf("Publish: %v, want a maybe-sent error", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Publish: %v, want DeadlineExceeded", err)
	}
	if dropped.Load() < 2 {
		t.Errorf("%d produce requests: the lost answer was not retried", dropped.Load())
	}
}

// After Close, Publish fails with ErrClosed and ErrNotSent; messages queued
// behind a request in flight when Close came are not sent either.
func TestPublishAfterClose(t *testing.T) {
	e := newEnv(t)
	if e.cluster == nil {
		t.Skip("needs kfake to hold produce requests")
	}
	topic := e.topic(t, 1)
	tr, err := kafka.New(e.brokers)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 30*time.Second)
	if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	held, h := make(chan struct{}), e.holder(t)
	var once sync.Once
	e.cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		once.Do(func() { close(held) })
		h.hold()
		return nil, nil, false
	})
	const n = 20
	errs := make(chan error, n)
	tr.PublishAsync(ctx, syncbridge.Message{Topic: topic, Value: []byte("first")}, func(err error) { errs <- err })
	<-held
	for range n - 1 {
		tr.PublishAsync(ctx, syncbridge.Message{Topic: topic, Value: []byte("queued")}, func(err error) { errs <- err })
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	var inFlight, queued int
	for range n {
		err := <-errs
		if !errors.Is(err, syncbridge.ErrClosed) {
			t.Errorf("after Close: %v, want ErrClosed", err)
		}
		if errors.Is(err, syncbridge.ErrNotSent) {
			queued++
		} else {
			inFlight++
		}
	}
	t.Logf("at Close: %d in flight (maybe sent), %d queued (not sent)", inFlight, queued)
	if inFlight != 1 || queued != n-1 {
		t.Errorf("got %d maybe-sent and %d not-sent, want 1 and %d", inFlight, queued, n-1)
	}
	err = tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("late")})
	if !errors.Is(err, syncbridge.ErrClosed) || !errors.Is(err, syncbridge.ErrNotSent) {
		t.Errorf("Publish after Close: %v, want ErrClosed and ErrNotSent", err)
	}
}
