package kafka

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/syncbridge/syncbridge"
)

// Broadcast subscriptions of one Transport to the same partitions of the
// same topic share one reader: one fetch per broker and round serves them
// all, and each record is handed to every subscription in turn, from one
// goroutine. A subscription that joins a running reader starts at the end
// offsets it resolved, which are never behind the reader's position.

// sharedKey identifies the partitions a shared reader reads.
type sharedKey struct {
	topic string
	parts string // the sorted partition IDs, formatted; "all" for every one
}

// sharedReader is a reader serving one or more broadcast subscriptions.
type sharedReader struct {
	t      *Transport
	key    sharedKey
	subs   atomic.Pointer[[]*broadcastSub] // copy on write, under t.shareMu
	cancel context.CancelFunc
	done   chan struct{} // closed when the reader's goroutines have ended
}

// broadcastSub is a running broadcast subscription.
type broadcastSub struct {
	t      *Transport
	r      *sharedReader
	h      syncbridge.Handler
	start  map[int32]int64 // first offset to deliver, per partition
	ctx    context.Context // the handler's; ends on Close
	cancel context.CancelFunc

	mu     sync.Mutex // held during handler calls; protects closed
	closed bool
	once   sync.Once
}

// subscribeBroadcast subscribes to parts of topic; all says parts are every
// partition the topic has, and those it will have.
func (t *Transport) subscribeBroadcast(ctx context.Context, topic string, parts []int32, all bool, h syncbridge.Handler) (syncbridge.Subscription, error) {
	var offsets map[int32]int64
	err := t.retry(ctx, func() error {
		var err error
		offsets, err = t.listOffsets(ctx, topic, parts, lastOffset)
		return err
	})
	if err != nil {
		return nil, err
	}
	s := &broadcastSub{t: t, h: h, start: offsets}
	s.ctx, s.cancel = context.WithCancel(t.ctx)
	key := sharedKey{topic: topic, parts: fmt.Sprint(parts)}
	if all {
		key.parts = "all"
	}

	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		s.cancel()
		return nil, errClosed
	}
	r := t.shared[key]
	if r == nil {
		r = &sharedReader{t: t, key: key, done: make(chan struct{})}
		r.subs.Store(&[]*broadcastSub{})
		t.shared[key] = r
		var rctx context.Context
		rctx, r.cancel = context.WithCancel(t.ctx)
		curs := make([]*cursor, len(parts))
		for i, p := range parts {
			curs[i] = &cursor{partition: p, offset: offsets[p]}
		}
		rd := &reader{t: t, topic: topic, deliver: r.deliver, all: all}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			defer close(r.done)
			rd.run(rctx, curs)
		}()
	}
	s.r = r
	subs := append(slices.Clone(*r.subs.Load()), s)
	r.subs.Store(&subs)
	t.subs[s] = struct{}{}
	t.mu.Unlock()
	return s, nil
}

// deliver hands recs to every subscription, record by record. It
// delivers them all even when the fetch that read them is being cancelled
// (another broker failed): the cursor moves past them.
func (r *sharedReader) deliver(_ context.Context, c *cursor, recs []record) {
	subs := *r.subs.Load()
	for i := range recs {
		for _, s := range subs {
			if recs[i].offset < s.start[c.partition] {
				continue
			}
			s.mu.Lock()
			if !s.closed {
				s.h(s.ctx, recs[i].msg)
			}
			s.mu.Unlock()
		}
	}
}

// Close stops the subscription and returns once no handler call of it is
// in progress (and, for the last subscription of a shared reader, once the
// reader's goroutines have ended). Idempotent.
func (s *broadcastSub) Close() error {
	s.once.Do(func() {
		s.cancel()
		t, r := s.t, s.r
		t.mu.Lock()
		delete(t.subs, s)
		subs := slices.DeleteFunc(slices.Clone(*r.subs.Load()), func(x *broadcastSub) bool { return x == s })
		r.subs.Store(&subs)
		last := len(subs) == 0
		if last {
			delete(t.shared, r.key)
		}
		t.mu.Unlock()
		// Wait for a handler call in progress.
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		if last {
			r.cancel()
		}
	})
	if len(*s.r.subs.Load()) == 0 {
		<-s.r.done
	}
	return nil
}
