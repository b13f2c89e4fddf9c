package syncbridge

import (
	"encoding/hex"
	"sync"

	"github.com/google/uuid"
)

// numShards is the number of registry shards: a power of two, so that a
// sequence number picks its shard with a mask.
const numShards = 64

// answeredPerShard is how many answered sequence numbers each shard
// remembers to tell a duplicate reply from a late one.
const answeredPerShard = 128

// result is what a waiter receives: a reply or an error.
type result struct {
	msg *Message
	err error
}

// waiter is one request waiting for its reply. Exactly one party removes a
// waiter from the registry, and only that party delivers to it.
type waiter struct {
	ch   chan result // capacity 1; used by Request
	call *Call       // set for Go; then ch is nil
}

// deliver hands r to the waiter. It never blocks: ch has room for the one
// result a waiter ever receives.
func (w *waiter) deliver(r result) {
	if w.call != nil {
		w.call.complete(r.msg, r.err)
		return
	}
	w.ch <- r
}

// shard is one part of the registry.
type shard struct {
	mu       sync.Mutex // protects m, answered, next and closed
	m        map[uint64]*waiter
	answered [answeredPerShard]uint64 // recently answered sequence numbers
	next     int                      // next slot of answered to overwrite
	closed   bool
	_        [64]byte // keep shards on separate cache lines
}

// registry maps a request's sequence number to its waiter, sharded by the
// low bits of the sequence number.
type registry struct {
	shards [numShards]shard
}

func newRegistry() *registry {
	r := &registry{}
	for i := range r.shards {
		r.shards[i].m = make(map[uint64]*waiter)
	}
	return r
}

func (r *registry) shard(seq uint64) *shard { return &r.shards[seq&(numShards-1)] }

// add registers w under seq. It reports false when the registry is closed.
func (r *registry) add(seq uint64, w *waiter) bool {
	s := r.shard(seq)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.m[seq] = w
	s.mu.Unlock()
	return true
}

// remove unregisters seq and returns its waiter, or nil when it was not
// registered (already resolved, removed, or drained).
func (r *registry) remove(seq uint64) *waiter {
	s := r.shard(seq)
	s.mu.Lock()
	w := s.m[seq]
	if w != nil {
		delete(s.m, seq)
	}
	s.mu.Unlock()
	return w
}

// resolve unregisters seq for its reply and returns its waiter. When there
// is none, dup reports whether seq was answered recently.
func (r *registry) resolve(seq uint64) (w *waiter, dup bool) {
	s := r.shard(seq)
	s.mu.Lock()
	w = s.m[seq]
	if w != nil {
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
	return w, dup
}

// close marks every shard closed and returns the waiters that were
// registered; later adds fail.
func (r *registry) close() []*waiter {
	var ws []*waiter
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		s.closed = true
		for seq, w := range s.m {
			ws = append(ws, w)
			delete(s.m, seq)
		}
		s.mu.Unlock()
	}
	return ws
}

// len returns the number of registered waiters.
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

// idLen is the length of a correlation ID: a UUID-shaped string.
const idLen = 36

// idPrefixLen is the length of the part of an ID that names its Bridge.
const idPrefixLen = 19

// idGen makes correlation IDs: the Bridge's random 8-byte instance prefix
// followed by a sequence number, shaped as a UUID
// ("pppppppp-pppp-pppp-ssss-ssssssssssss"). Making one costs no syscall and
// no lock; the prefix lets a Bridge drop replies meant for other Bridges
// with one comparison.
type idGen struct {
	prefix [idPrefixLen]byte
}

func newIDGen() idGen {
	u := uuid.New() // one read from crypto/rand per Bridge
	var g idGen
	hex.Encode(g.prefix[0:8], u[0:4])
	g.prefix[8] = '-'
	hex.Encode(g.prefix[9:13], u[4:6])
	g.prefix[13] = '-'
	hex.Encode(g.prefix[14:18], u[6:8])
	g.prefix[18] = '-'
	return g
}

// appendID appends the ID of seq to dst.
func (g *idGen) appendID(dst []byte, seq uint64) []byte {
	const digits = "0123456789abcdef"
	dst = append(dst, g.prefix[:]...)
	var b [17]byte
	j := len(b) - 1
	for i := 0; i < 16; i++ {
		if j == 4 {
			b[j] = '-'
			j--
		}
		b[j] = digits[seq&0xf]
		seq >>= 4
		j--
	}
	return append(dst, b[:]...)
}

// own reports whether id was made by this generator's Bridge.
func (g *idGen) own(id []byte) bool {
	return len(id) == idLen && string(id[:idPrefixLen]) == string(g.prefix[:])
}

// parse returns the sequence number of an ID for which own is true.
func (g *idGen) parse(id []byte) (uint64, bool) {
	if len(id) != idLen || id[idPrefixLen+4] != '-' {
		return 0, false
	}
	var seq uint64
	for i := idPrefixLen; i < idLen; i++ {
		c := id[i]
		if i == idPrefixLen+4 {
			continue
		}
		var v byte
		switch {
		case '0' <= c && c <= '9':
			v = c - '0'
		case 'a' <= c && c <= 'f':
			v = c - 'a' + 10
		default:
			return 0, false
		}
		seq = seq<<4 | uint64(v)
	}
	return seq, true
}
