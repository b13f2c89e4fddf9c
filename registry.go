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

// minSlots is the smallest table of a shard: a power of two.
const minSlots = 16

// shard is one part of the registry. Sequence numbers are issued in order,
// so the Calls of a shard in flight have nearly consecutive indexes
// (seq / numShards): a table indexed by the index modulo its size finds a
// Call with no hashing and takes 8 bytes per slot, where a map would take
// 2 to 4 times that. A Call that stays while newer ones wrap around the
// table (a long deadline among many short requests) moves to a map of old
// Calls, rather than making the table cover every index since.
type shard struct {
	mu       sync.Mutex               // protects the fields below
	slots    []*Call                  // by index modulo len(slots), a power of two
	n        int                      // Calls in slots
	old      map[uint64]*Call         // Calls moved out of slots; nil when none
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
		r.shards[i].slots = make([]*Call, minSlots)
	}
	return r
}

func (r *registry) shard(seq uint64) *shard { return &r.shards[seq&(numShards-1)] }

// slot returns the slot of seq in s.slots.
func (s *shard) slot(seq uint64) **Call {
	return &s.slots[(seq/numShards)&uint64(len(s.slots)-1)]
}

// find returns the Call registered under seq, or nil. s.mu must be held.
func (s *shard) find(seq uint64) *Call {
	if c := *s.slot(seq); c != nil && c.seq == seq {
		return c
	}
	return s.old[seq] // nil map: nil
}

// take unregisters the Call c found under seq. s.mu must be held.
func (s *shard) take(seq uint64, c *Call) {
	if p := s.slot(seq); *p == c {
		*p = nil
		s.n--
		if len(s.slots) > minSlots && s.n < len(s.slots)/8 {
			s.resize(len(s.slots) / 2)
		}
		return
	}
	delete(s.old, seq)
	if len(s.old) == 0 {
		s.old = nil
	}
}

// resize moves the Calls in slots to a table of n slots; one that finds
// its new slot taken by another (their indexes differ by a multiple of n),
// the older of the two goes to old. s.mu must be held.
func (s *shard) resize(n int) {
	prev := s.slots
	s.slots = make([]*Call, n)
	for _, c := range prev {
		if c == nil {
			continue
		}
		p := s.slot(c.seq)
		if o := *p; o != nil {
			if o.seq > c.seq {
				c, o = o, c
			}
			s.toOld(o)
		}
		*p = c
	}
}

// toOld moves c, which is in slots, to old. s.mu must be held.
func (s *shard) toOld(c *Call) {
	if s.old == nil {
		s.old = make(map[uint64]*Call)
	}
	s.old[c.seq] = c
	s.n--
}

// add registers c under seq. It reports false when the registry is closed.
func (r *registry) add(seq uint64, c *Call) bool {
	s := r.shard(seq)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	for p := s.slot(seq); *p != nil; p = s.slot(seq) {
		// Taken by a Call with an index len(slots) or more below: more
		// Calls in flight than slots, or an old Call left behind.
		if s.n*2 < len(s.slots) {
			o := *p
			*p = nil
			s.toOld(o)
		} else {
			s.resize(2 * len(s.slots))
		}
	}
	*s.slot(seq) = c
	s.n++
	return true
}

// remove unregisters seq and returns its Call, or nil when it was not
// registered (already resolved, removed, or drained).
func (r *registry) remove(seq uint64) *Call {
	s := r.shard(seq)
	s.mu.Lock()
	c := s.find(seq)
	if c != nil {
		s.take(seq, c)
	}
	s.mu.Unlock()
	return c
}

// resolve unregisters seq for its reply and returns its Call. When there
// is none, dup reports whether seq was answered recently.
func (r *registry) resolve(seq uint64) (c *Call, dup bool) {
	s := r.shard(seq)
	s.mu.Lock()
	c = s.find(seq)
	if c != nil && c.g != nil { // a gathering stays for more replies
		s.mu.Unlock()
		return c, false
	}
	if c != nil {
		s.take(seq, c)
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
		for j, c := range s.slots {
			if c != nil {
				cs = append(cs, c)
				s.slots[j] = nil
			}
		}
		for _, c := range s.old {
			cs = append(cs, c)
		}
		s.n, s.old = 0, nil
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
		n += s.n + len(s.old)
		s.mu.Unlock()
	}
	return n
}
