package api

import (
	"sync"
	"time"
)

// store keeps the takedowns answered with 202 Accepted, so that a client can
// poll for their outcome. It holds at most max of them: a finished takedown
// is forgotten ttl after it finished, or earlier, oldest first, to make room;
// pending ones are never evicted, so a full store of pending takedowns
// refuses new ones.
type store struct {
	max int
	ttl time.Duration

	mu     sync.Mutex           // protects m, closed
	m      map[string]*takedown // by takedown ID
	closed bool
}

func newStore(max int, ttl time.Duration) *store {
	return &store{max: max, ttl: ttl, m: make(map[string]*takedown)}
}

// add stores td, and reports whether there was room.
func (s *store) add(td *takedown) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if len(s.m) >= s.max {
		s.evict(time.Now())
	}
	if len(s.m) >= s.max {
		return false
	}
	s.m[td.id] = td
	return true
}

// evict forgets the finished takedowns past their ttl and, if the store is
// still full, the one that finished first. s.mu must be held.
func (s *store) evict(now time.Time) {
	var oldest *takedown
	var oldestEnd time.Time
	for id, td := range s.m {
		end, ok := td.endedAt()
		if !ok {
			continue
		}
		if now.Sub(end) > s.ttl {
			delete(s.m, id)
			continue
		}
		if oldest == nil || end.Before(oldestEnd) {
			oldest, oldestEnd = td, end
		}
	}
	if len(s.m) >= s.max && oldest != nil {
		delete(s.m, oldest.id)
	}
}

// get returns the takedown id, unless it is unknown or was forgotten.
func (s *store) get(id string) (*takedown, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	td, ok := s.m[id]
	if !ok {
		return nil, false
	}
	if end, ended := td.endedAt(); ended && time.Since(end) > s.ttl {
		delete(s.m, id)
		return nil, false
	}
	return td, true
}

// len returns the number of takedowns stored.
func (s *store) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// close makes add fail from now on.
func (s *store) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
}

// fifo is a bounded set of recently published reports, so that the API can
// say "received" for a report the items service has not processed yet. Past
// max entries the oldest is forgotten.
type fifo struct {
	max int

	mu    sync.Mutex          // protects m, order
	m     map[string]reportAt // by report ID
	order []string            // report IDs, oldest first
}

type reportAt struct {
	itemID string
	at     time.Time
}

func newFIFO(max int) *fifo { return &fifo{max: max, m: make(map[string]reportAt)} }

func (f *fifo) add(id string, r reportAt) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.order) >= f.max {
		delete(f.m, f.order[0])
		f.order = f.order[1:]
	}
	f.m[id] = r
	f.order = append(f.order, id)
}

func (f *fifo) get(id string) (reportAt, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.m[id]
	return r, ok
}
