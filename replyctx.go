package syncbridge

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// replyCtx is the context a Responder publishes a reply with: the
// request's deadline and nothing else. Close does not cancel it, so that a
// handler cancelled by Close still answers its caller. It costs 16 bytes
// and nothing else unless the transport asks for Done; then one timer
// serves Done and every AfterFunc (how context.AfterFunc watches it,
// without a goroutine of its own).
type replyCtx struct {
	deadline int64 // Unix nanoseconds
	x        atomic.Pointer[replyDone]
}

// replyDone is a replyCtx's timer, and Done channel, made on demand.
type replyDone struct {
	mu     sync.Mutex // protects the rest
	done   chan struct{}
	timer  *time.Timer
	fired  bool
	first  afterEntry    // the first AfterFunc's (a transport registers one)
	afters []*afterEntry // the others'
}

// afterEntry is one function registered by replyCtx.AfterFunc.
type afterEntry struct {
	f       func()
	stopped bool // protected by replyDone.mu
}

func (c *replyCtx) Deadline() (time.Time, bool) { return time.Unix(0, c.deadline), true }

func (c *replyCtx) Value(any) any { return nil }

// Err returns context.DeadlineExceeded once the deadline passed.
func (c *replyCtx) Err() error {
	if time.Now().UnixNano() < c.deadline {
		return nil
	}
	c.state().expire() // Done is closed whenever Err says so
	return context.DeadlineExceeded
}

// Done returns a channel closed at the deadline.
func (c *replyCtx) Done() <-chan struct{} {
	x := c.state()
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.done == nil {
		x.done = make(chan struct{})
		if x.fired {
			close(x.done)
		}
	}
	return x.done
}

// state returns c's replyDone, making it (and its timer) on first use.
func (c *replyCtx) state() *replyDone {
	if x := c.x.Load(); x != nil {
		return x
	}
	x := &replyDone{}
	x.mu.Lock()
	if !c.x.CompareAndSwap(nil, x) {
		x.mu.Unlock()
		return c.x.Load()
	}
	defer x.mu.Unlock()
	if d := time.Duration(c.deadline - time.Now().UnixNano()); d > 0 {
		x.timer = time.AfterFunc(d, x.expire)
	} else {
		x.fire()
	}
	return x
}

// expire closes Done and runs the AfterFuncs, once.
func (x *replyDone) expire() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.fire()
}

// fire is expire with x.mu held.
func (x *replyDone) fire() {
	if x.fired {
		return
	}
	x.fired = true
	if x.done != nil {
		close(x.done)
	}
	if a := &x.first; a.f != nil && !a.stopped {
		a.stopped = true
		go a.f()
	}
	for _, a := range x.afters {
		if !a.stopped {
			a.stopped = true
			go a.f() // as context.AfterFunc does
		}
	}
	x.afters = nil
}

// AfterFunc lets context.AfterFunc run f at the deadline from Done's
// timer, not from a goroutine waiting on Done.
func (c *replyCtx) AfterFunc(f func()) (stop func() bool) {
	x := c.state()
	x.mu.Lock()
	if x.fired {
		x.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	var a *afterEntry
	if x.first.f == nil {
		a = &x.first
		a.f = f
	} else {
		a = &afterEntry{f: f}
		x.afters = append(x.afters, a)
	}
	x.mu.Unlock()
	return func() bool {
		x.mu.Lock()
		defer x.mu.Unlock()
		if a.stopped {
			return false
		}
		a.stopped = true
		return true
	}
}

// release stops Done's timer, once the reply is published.
func (c *replyCtx) release() {
	x := c.x.Load()
	if x == nil {
		return
	}
	x.mu.Lock()
	if x.timer != nil {
		x.timer.Stop()
	}
	x.mu.Unlock()
}

func (c *replyCtx) String() string {
	return "syncbridge.replyCtx(" + time.Unix(0, c.deadline).String() + ")"
}
