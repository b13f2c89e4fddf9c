package kafka

import "github.com/syncbridge/syncbridge"

// concurrentOf reports whether cfg allows overlapping handler calls.
func concurrentOf(cfg syncbridge.SubscribeConfig) bool { return false }
