package syncbridge

// WatchedContexts returns the number of contexts that b watches for
// several Calls at once (see watches).
func WatchedContexts(b *Bridge) int { return b.watches.len() }
