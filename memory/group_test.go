package memory_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

// TestKeylessNotBehindBusyHandler: while handler calls of a consumer group
// are blocked, a keyless message is still handled, by another partition's
// worker, up to one call per partition at once. With GOMAXPROCS workers
// busy, a publisher does not wake another worker itself (GOMAXPROCS 1
// makes every case that one): the watchdog does, once the keyless queue
// has not moved for a while.
func TestKeylessNotBehindBusyHandler(t *testing.T) {
	for _, procs := range []int{0, 1} {
		t.Run(fmt.Sprintf("GOMAXPROCS=%d", procs), func(t *testing.T) {
			if procs > 0 {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			}
			const parts = 4
			tr := &memory.Transport{Partitions: parts}
			defer tr.Close()
			started := make(chan string, parts)
			release := make(chan struct{})
			sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "t", Group: "g"}, func(ctx context.Context, m syncbridge.Message) {
				started <- string(m.Value)
				select {
				case <-release:
				case <-ctx.Done():
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			defer close(release) // before sub.Close: the handler calls return
			seen := map[string]bool{}
			for i := range parts {
				v := fmt.Sprint(i)
				if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "t", Value: []byte(v)}); err != nil {
					t.Fatal(err)
				}
				// Message i is handled while messages 0..i-1 are blocked in
				// their handler calls.
				select {
				case got := <-started:
					seen[got] = true
				case <-time.After(10 * time.Second):
					t.Fatalf("message %d not handled while %d handler calls are blocked", i, i)
				}
			}
			if len(seen) != parts {
				t.Errorf("handled %v, want %d different messages", seen, parts)
			}
		})
	}
}

// TestKeylessAfterClose: keyless messages still queued, and a watchdog
// set for them, do not keep Close from returning or leak a goroutine
// (goleak checks, in TestMain).
func TestKeylessAfterClose(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // one busy call sets the watchdog
	tr := &memory.Transport{Partitions: 1}
	started := make(chan struct{}, 1)
	sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "t", Group: "g"}, func(ctx context.Context, _ syncbridge.Message) {
		select {
		case started <- struct{}{}:
		default:
		}
		<-ctx.Done() // until Close
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	<-started
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestKeylessQueueBounded: a group's keyless queue holds QueueSize
// messages; with every worker busy and the queue full, Publish blocks
// until its context ends, and says the message was not sent.
func TestKeylessQueueBounded(t *testing.T) {
	const size = 3
	tr := &memory.Transport{Partitions: 1, QueueSize: size}
	defer tr.Close()
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "t", Group: "g"}, func(ctx context.Context, _ syncbridge.Message) {
		select {
		case started <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	defer close(release)
	if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "t"}); err != nil {
		t.Fatal(err)
	}
	<-started // the only worker is busy from now on
	for i := range size {
		if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "t"}); err != nil {
			t.Fatalf("message %d of %d queued: %v", i+1, size, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = tr.Publish(ctx, syncbridge.Message{Topic: "t"})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, syncbridge.ErrNotSent) {
		t.Errorf("Publish to a full keyless queue: %v, want DeadlineExceeded and ErrNotSent", err)
	}
}
