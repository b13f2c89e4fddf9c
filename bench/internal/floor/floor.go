// Package floor is the smallest hand-written request/reply bridge: callers
// send to a channel, responder goroutines answer, and a 64-shard mutex map
// keyed by a UUID string routes each answer to its caller's channel. It
// has no headers, no transport, no deadlines on the wire: it is the floor
// that syncbridge's benchmarks measure the library against.
package floor

import (
	"context"
	"hash/maphash"
	"sync"

	"github.com/google/uuid"
)

const shards = 64

type request struct {
	id      string
	payload []byte
}

type shard struct {
	mu sync.Mutex // protects m
	m  map[string]chan []byte
	_  [40]byte
}

// Bridge is the floor bridge. Close it to stop its responders.
type Bridge struct {
	reqs   chan request
	shards [shards]shard
	seed   maphash.Seed
	wg     sync.WaitGroup
}

// New starts responders goroutines answering with handle.
func New(responders int, handle func([]byte) []byte) *Bridge {
	b := &Bridge{reqs: make(chan request, 1024), seed: maphash.MakeSeed()}
	for i := range b.shards {
		b.shards[i].m = make(map[string]chan []byte)
	}
	for range responders {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			for r := range b.reqs {
				reply := handle(r.payload)
				s := b.shard(r.id)
				s.mu.Lock()
				ch, ok := s.m[r.id]
				delete(s.m, r.id)
				s.mu.Unlock()
				if ok {
					ch <- reply
				}
			}
		}()
	}
	return b
}

func (b *Bridge) shard(id string) *shard {
	return &b.shards[maphash.String(b.seed, id)%shards]
}

// Request sends payload and waits for its answer or ctx's end.
func (b *Bridge) Request(ctx context.Context, payload []byte) ([]byte, error) {
	id := uuid.NewString()
	ch := make(chan []byte, 1)
	s := b.shard(id)
	s.mu.Lock()
	s.m[id] = ch
	s.mu.Unlock()
	select {
	case b.reqs <- request{id: id, payload: payload}:
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.m, id)
		s.mu.Unlock()
		return nil, ctx.Err()
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.m, id)
		s.mu.Unlock()
		return nil, ctx.Err()
	}
}

// Close stops the responders once the queued requests are answered.
// No Request may be in progress or follow.
func (b *Bridge) Close() {
	close(b.reqs)
	b.wg.Wait()
}
