package memory

import "sync/atomic"

// gate counts the handler calls in progress of a subscription, and lets
// its Close refuse new calls and wait for those in progress: a mutex and a
// sync.WaitGroup would do the same with two more atomic operations and a
// lock per call.
type gate struct {
	n      atomic.Int64  // calls in progress, plus gateClosed once closed
	done   chan struct{} // closed once the gate is closed and no call is in progress
	closed atomic.Bool   // done is closed
}

const gateClosed = 1 << 62

func newGate() gate { return gate{done: make(chan struct{})} }

// enter counts a call in progress and reports true, or reports false when
// the gate is closed: no call may start.
func (g *gate) enter() bool {
	if g.n.Add(1)&gateClosed != 0 {
		g.leave()
		return false
	}
	return true
}

// leave ends a call that enter counted (or refused).
func (g *gate) leave() {
	if g.n.Add(-1) == gateClosed {
		g.finish()
	}
}

// close refuses new calls. Call it once.
func (g *gate) close() {
	if g.n.Add(gateClosed) == gateClosed {
		g.finish()
	}
}

func (g *gate) finish() {
	if g.closed.CompareAndSwap(false, true) {
		close(g.done)
	}
}

// wait returns once the gate is closed and no call is in progress.
func (g *gate) wait() { <-g.done }
