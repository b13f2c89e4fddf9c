package memory_test

// Tests of claims made by the package's doc comments that no other test
// backed: each says which claim it checks.

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

// TestClaimPublishPartlyQueued: when ctx ends while some subscriptions
// have msg and others' queues are full, Publish's error wraps only ctx's
// error, not ErrNotSent: the message was written (Transport.Publish).
func TestClaimPublishPartlyQueued(t *testing.T) {
	tr := &memory.Transport{QueueSize: 1}
	defer tr.Close()
	free := make(chan string, 10)
	sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "t"}, func(_ context.Context, m syncbridge.Message) {
		free <- string(m.Value)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	entered, release := make(chan struct{}, 1), make(chan struct{})
	stuck, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "t"}, func(ctx context.Context, m syncbridge.Message) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	defer close(release)
	for _, v := range []string{"in the call", "queued"} {
		if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "t", Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
		if v == "in the call" {
			<-entered
		}
	}
	// The free subscription has taken both from its queue (of one): only
	// the stuck one's queue is full.
	for _, want := range []string{"in the call", "queued"} {
		if got := <-free; got != want {
			t.Errorf("the free subscription got %q, want %q", got, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err = tr.Publish(ctx, syncbridge.Message{Topic: "t", Value: []byte("partly")})
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syncbridge.ErrNotSent) {
		t.Errorf("Publish queued for one subscription of two: %v, want DeadlineExceeded and not ErrNotSent", err)
	}
	if got := <-free; got != "partly" {
		t.Errorf("the free subscription got %q, want %q", got, "partly")
	}
}

// TestClaimFaults: Drop loses the message and Publish returns nil; a
// FaultFunc sees the message with its Partition set; Release delivers the
// held messages in publish order; Close drops held messages.
func TestClaimFaults(t *testing.T) {
	tr := &memory.Transport{Partitions: 4}
	defer tr.Close()
	got := make(chan string, 10)
	sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "t"}, func(_ context.Context, m syncbridge.Message) {
		got <- string(m.Value)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var parts []int32
	tr.SetFaults(func(m *syncbridge.Message) memory.Fault {
		parts = append(parts, m.Partition) // called from this goroutine
		switch string(m.Value) {
		case "drop":
			return memory.Drop
		case "hold 1", "hold 2":
			return memory.Hold
		}
		return memory.Deliver
	})
	for _, v := range []string{"drop", "hold 1", "hold 2", "deliver"} {
		if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "t", Value: []byte(v), Partition: 3, UsePartition: true}); err != nil {
			t.Errorf("Publish(%q) = %v, want nil", v, err)
		}
	}
	if fmt.Sprint(parts) != "[3 3 3 3]" {
		t.Errorf("FaultFunc saw partitions %v, want 3 each time", parts)
	}
	if v := <-got; v != "deliver" {
		t.Errorf("got %q first, want %q: dropped and held messages are not delivered", v, "deliver")
	}
	tr.SetFaults(nil)
	if n, err := tr.Release(context.Background()); n != 2 || err != nil {
		t.Fatalf("Release = %d, %v; want 2", n, err)
	}
	for _, want := range []string{"hold 1", "hold 2"} {
		if v := <-got; v != want {
			t.Errorf("released %q, want %q (publish order)", v, want)
		}
	}
	tr.SetFaults(func(*syncbridge.Message) memory.Fault { return memory.Hold })
	if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "t"}); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	if n := tr.Held(); n != 0 {
		t.Errorf("%d messages held after Close, want none", n)
	}
}

// TestClaimPartitioning: the zero Transport has DefaultPartitions
// partitions; a keyed message goes to the partition its key hashes to
// (FNV-1a), keyless ones round-robin.
func TestClaimPartitioning(t *testing.T) {
	var tr memory.Transport
	defer tr.Close()
	got := make(chan syncbridge.Message, 100)
	sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "t"}, func(_ context.Context, m syncbridge.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for p, ok := range map[int32]bool{memory.DefaultPartitions - 1: true, memory.DefaultPartitions: false} {
		err := tr.Publish(context.Background(), syncbridge.Message{Topic: "t", Partition: p, UsePartition: true})
		if (err == nil) != ok {
			t.Errorf("Publish to partition %d of the zero Transport: %v", p, err)
		}
		if ok {
			<-got
		}
	}
	for _, k := range []string{"a", "item-42", "x"} {
		if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "t", Key: []byte(k)}); err != nil {
			t.Fatal(err)
		}
		h := fnv.New32a()
		h.Write([]byte(k))
		if m, want := <-got, int32(h.Sum32()%memory.DefaultPartitions); m.Partition != want {
			t.Errorf("key %q on partition %d, want %d (FNV-1a)", k, m.Partition, want)
		}
	}
	var prev int32 = -1
	for i := range 2 * memory.DefaultPartitions {
		if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "t"}); err != nil {
			t.Fatal(err)
		}
		m := <-got
		if prev >= 0 && m.Partition != (prev+1)%memory.DefaultPartitions {
			t.Errorf("keyless message %d on partition %d after %d, want round-robin", i, m.Partition, prev)
		}
		prev = m.Partition
	}
}

// TestClaimGroupBounds: a group member holds at most 256 messages handed
// to its AckHandler and not acked, and a Concurrent member at most 64
// handler calls in progress (SubscribeAck, the package documentation); the
// rest wait until one is acked or returns.
func TestClaimGroupBounds(t *testing.T) {
	for _, tc := range []struct {
		name       string
		concurrent bool
		ack        bool
		bound      int64
	}{
		{"not acked", false, true, 256},
		{"concurrent calls", true, false, 64},
		{"concurrent, not acked", true, true, 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tr := &memory.Transport{Partitions: 2}
				defer tr.Close()
				var n atomic.Int64
				var mu sync.Mutex
				var acks []func()
				release := make(chan struct{})
				cfg := syncbridge.SubscribeConfig{Topic: "t", Group: "g", Concurrent: tc.concurrent}
				var sub syncbridge.Subscription
				var err error
				if tc.ack {
					sub, err = tr.SubscribeAck(context.Background(), cfg, func(_ context.Context, _ syncbridge.Message, ack func()) {
						n.Add(1)
						mu.Lock()
						acks = append(acks, ack)
						mu.Unlock()
					})
				} else {
					sub, err = tr.Subscribe(context.Background(), cfg, func(context.Context, syncbridge.Message) {
						n.Add(1)
						<-release
					})
				}
				if err != nil {
					t.Fatal(err)
				}
				const total = 300
				for i := range total {
					if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "t", Key: fmt.Appendf(nil, "k%d", i)}); err != nil {
						t.Fatal(err)
					}
				}
				synctest.Wait()
				if got := n.Load(); got != tc.bound {
					t.Errorf("%d messages handed out, want the bound %d", got, tc.bound)
				}
				if tc.ack {
					mu.Lock()
					first := acks[0]
					mu.Unlock()
					first()
				} else {
					release <- struct{}{}
				}
				synctest.Wait()
				if got := n.Load(); got != tc.bound+1 {
					t.Errorf("%d messages handed out after one was done, want %d", got, tc.bound+1)
				}
				close(release)
				for {
					mu.Lock()
					rest := acks
					acks = nil
					mu.Unlock()
					if len(rest) == 0 && n.Load() == total {
						break
					}
					for _, a := range rest {
						a()
					}
					synctest.Wait()
				}
				if err := sub.Close(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}
