package otel

import (
	"sync"
	"sync/atomic"
)

// cache is a bounded map read without locks: readers load an immutable
// map; a writer copies it with its entry added. Entries are few and, once
// warm, never added, so reads (one per hook call) never contend.
type cache[K comparable, V any] struct {
	m  atomic.Pointer[map[K]V]
	mu sync.Mutex // serialises writers
}

// get returns the value of k.
func (c *cache[K, V]) get(k K) (V, bool) {
	if p := c.m.Load(); p != nil {
		v, ok := (*p)[k]
		return v, ok
	}
	var zero V
	return zero, false
}

// add stores v for k unless k has a value already, which it returns, or
// the cache holds max entries; it returns the value of k, and whether k
// has one now.
func (c *cache[K, V]) add(k K, v V, max int) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[K]V
	if p := c.m.Load(); p != nil {
		old = *p
	}
	if x, ok := old[k]; ok {
		return x, true
	}
	if len(old) >= max {
		return v, false
	}
	m := make(map[K]V, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[k] = v
	c.m.Store(&m)
	return v, true
}
