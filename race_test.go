//go:build race

package syncbridge_test

// raceEnabled reports whether the race detector is on. It allows at most
// 8128 live goroutines, so load tests keep some requests in flight as
// Calls instead of one goroutine each.
const raceEnabled = true
