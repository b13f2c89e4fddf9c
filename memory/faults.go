package memory

import (
	"context"

	"github.com/syncbridge/syncbridge"
)

// Fault is what happens to a published message: see SetFaults.
type Fault int

// Faults.
const (
	// Deliver delivers the message normally.
	Deliver Fault = iota
	// Drop loses the message; Publish still returns nil, as a broker that
	// lost a message after acknowledging it would.
	Drop
	// Duplicate delivers the message twice, as at-least-once delivery may.
	Duplicate
	// Hold keeps the message back until Release: a delay whose end the test
	// chooses, and, releasing after later messages, a reordering.
	Hold
)

// FaultFunc decides the fate of each published message. It is called with
// the message about to be delivered (its Partition set), from the
// publishing goroutine; it must be safe for concurrent use.
type FaultFunc func(msg *syncbridge.Message) Fault

// SetFaults makes the transport consult f for every message published
// from now on. nil restores normal delivery. Meant for tests.
func (t *Transport) SetFaults(f FaultFunc) {
	t.init()
	if f == nil {
		t.faults.Store(nil)
		return
	}
	t.faults.Store(&f)
}

// Release delivers the messages held so far, in the order they were
// published, and returns how many there were. It blocks like Publish while
// queues are full, until ctx ends.
func (t *Transport) Release(ctx context.Context) (int, error) {
	t.init()
	t.mu.Lock()
	hs := t.held
	t.held = nil
	t.mu.Unlock()
	for i, h := range hs {
		tp, err := t.topic(h.msg.Topic)
		if err != nil {
			return i, err
		}
		if _, err := t.deliver(ctx, tp, h.msg, h.keyless); err != nil {
			return i, err
		}
	}
	return len(hs), nil
}

// Held returns the number of messages held for Release.
func (t *Transport) Held() int {
	t.init()
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.held)
}
