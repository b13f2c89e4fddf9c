package syncbridge

// WatchedContexts returns the number of contexts that b watches for
// several Calls at once (see watches).
func WatchedContexts(b *Bridge) int { return b.watches.len() }

// TimedCalls returns the number of Calls in b's timeouts list.
func TimedCalls(b *Bridge) int {
	b.timeouts.mu.Lock()
	defer b.timeouts.mu.Unlock()
	n := 0
	for c := b.timeouts.head; c != nil; c = c.tnext {
		n++
	}
	return n
}
