package syncbridge

import (
	"sync"
)

// numShards is the number of registry shards: a power of two, so that a
// sequence number picks its shard with a mask.
const numShards = 64

// answeredPerShard is how many answered sequence numbers each shard
// remembers to tell a duplicate reply from a late one.
const answeredPerShard = 128

// shard is one part of the registry.
type shard struct {
	mu       sync.Mutex // protects m, answered, next and closed
	m        map[uint64]*Call
	answered [answeredPerShard]uint64 // recently answered sequence numbers
	next     int                      // next slot of answered to overwrite
	closed   bool
	_        [64]byte // keep shards on separate cache lines
}

// registry maps a request's sequence number to its Call, sharded by the
// low bits of the sequence number.
type registry struct {
	shards [numShards]shard
}

func newRegistry() *registry {
	r := &registry{}
	for i := range r.shards {
		r.shards[i].m = make(map[uint64]*Call)
	}
	return r
}

func (r *registry) shard(seq uint64) *shard { return &r.shards[seq&(numShards-1)] }

// add registers c under seq. It reports false when the registry is closed.
func (r *registry) add(seq uint64, c *Call) bool {
	s := r.shard(seq)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.m[seq] = c
	s.mu.Unlock()
	return true
}

// remove unregisters seq and returns its Call, or nil when it was not
// registered (already resolved, removed, or drained).
func (r *registry) remove(seq uint64) *Call {
	s := r.shard(seq)
	s.mu.Lock()
	c := s.m[seq]
	if c != nil {
		delete(s.m, seq)
	}
	s.mu.Unlock()
	return c
}

// resolve unregisters seq for its reply and returns its Call. When there
// is none, dup reports whether seq was answered recently.
func (r *registry) resolve(seq uint64) (c *Call, dup bool) {
	s := r.shard(seq)
	s.mu.Lock()
	c = s.m[seq]
	if c != nil && c.g != nil { // a gathering stays for more replies
		s.mu.Unlock()
		return c, false
	}
	if c != nil {
		delete(s.m, seq)
		s.answered[s.next] = seq
		s.next = (s.next + 1) % answeredPerShard
	} else {
		for _, a := range s.answered {
			if a == seq {
				dup = true
				break
			}
		}
	}
	s.mu.Unlock()
	return c, dup
}

// close marks every shard closed and returns the Calls that were
// registered; later adds fail.
func (r *registry) close() []*Call {
	var cs []*Call
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		s.closed = true
		for seq, c := range s.m {
			cs = append(cs, c)
			delete(s.m, seq)
		}
		s.mu.Unlock()
	}
	return cs
}

// len returns the number of registered Calls.
func (r *registry) len() int {
	n := 0
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
