package syncbridge

import (
	"context"
	"sync"
	"time"
)

// timeouts expires the Calls started by Go whose contexts have no deadline,
// when their default timeout passes. The default timeout is the same for
// every Call of a Bridge, so their deadlines come in the order the Calls
// start: they wait in a list in that order, with one timer for the first,
// and a Call costs two links in the list instead of a timer of its own
// (about 150 bytes per Call in flight).
type timeouts struct {
	mu         sync.Mutex // protects the list, and the links of the Calls in it
	head, tail *Call
	timer      *time.Timer // runs fire; set for head's deadline (or earlier)
}

// add puts c, whose deadline is the default timeout's, at the end of the
// list.
func (ts *timeouts) add(c *Call) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.tail == nil {
		ts.head, ts.tail = c, c
		ts.timer.Reset(c.untilDeadline())
		return
	}
	c.tprev = ts.tail
	ts.tail.tnext = c
	ts.tail = c
}

// remove takes c out of the list, if it is in it. The timer stays set: when
// it fires for a Call no longer first, it sets itself for the new first.
func (ts *timeouts) remove(c *Call) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.unlink(c)
}

// unlink takes c out of the list if it is in it. ts.mu must be held.
func (ts *timeouts) unlink(c *Call) {
	if c.tprev == nil && ts.head != c {
		return // not in the list
	}
	if c.tprev != nil {
		c.tprev.tnext = c.tnext
	} else {
		ts.head = c.tnext
	}
	if c.tnext != nil {
		c.tnext.tprev = c.tprev
	} else {
		ts.tail = c.tprev
	}
	c.tprev, c.tnext = nil, nil
}

// fire expires the Calls whose deadlines passed, from the head of the
// list, and sets the timer for the next.
func (ts *timeouts) fire() {
	now := time.Now().UnixNano()
	var expired []*Call
	ts.mu.Lock()
	for c := ts.head; c != nil && c.deadline <= now; c = ts.head {
		ts.unlink(c)
		expired = append(expired, c)
	}
	if ts.head != nil {
		ts.timer.Reset(time.Duration(ts.head.deadline - now))
	}
	ts.mu.Unlock()
	for _, c := range expired {
		c.expire(context.DeadlineExceeded)
	}
}
