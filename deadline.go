package syncbridge

import (
	"context"
	"sync"
	"time"
)

// deadlineCtx is the context a Responder gives its handler: a deadline,
// and cancellation by Close, with nothing else. It costs no allocation and
// no timer unless someone asks for its Done channel; context.WithDeadline
// would cost both on every request, and most handlers never wait on Done.
type deadlineCtx struct {
	deadline int64      // Unix nanoseconds: 16 bytes less than a time.Time
	r        *Responder // Close cancels the context

	mu    sync.Mutex // protects done, timer and err
	done  chan struct{}
	timer *time.Timer
	err   error
}

func (c *deadlineCtx) Deadline() (time.Time, bool) { return time.Unix(0, c.deadline), true }

func (c *deadlineCtx) Value(any) any { return nil }

// Done returns a channel closed at the deadline, by Close, or at release.
func (c *deadlineCtx) Done() <-chan struct{} {
	c.mu.Lock()
	if c.done != nil {
		defer c.mu.Unlock()
		return c.done
	}
	c.done = make(chan struct{})
	done := c.done
	d := time.Duration(c.deadline - time.Now().UnixNano())
	if d <= 0 || c.err != nil {
		if c.err == nil {
			c.err = context.DeadlineExceeded
		}
		close(c.done)
		c.mu.Unlock()
		return done
	}
	c.timer = time.AfterFunc(d, func() { c.end(context.DeadlineExceeded) })
	// Registered, under c.mu, so that Close can close it and release,
	// which sees done set, finds it registered.
	r := c.r
	r.mu.Lock()
	r.waiting[c] = struct{}{}
	r.mu.Unlock()
	c.mu.Unlock()
	if r.closing.Load() { // Close may have begun before the registration
		c.end(context.Canceled)
	}
	return done
}

// Err returns nil until Done is closed, then why.
func (c *deadlineCtx) Err() error {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return err
	}
	switch {
	case c.r.closing.Load():
		c.end(context.Canceled)
	case time.Now().UnixNano() >= c.deadline:
		c.end(context.DeadlineExceeded)
	default:
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// end closes Done with err, unless it is closed already.
func (c *deadlineCtx) end(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	if c.done != nil {
		close(c.done)
		c.timer.Stop()
	}
}

// release ends the context as its cancel function would: called when the
// handler has returned, so that work it left behind stops too.
func (c *deadlineCtx) release() {
	c.end(context.Canceled)
	c.mu.Lock()
	registered := c.done != nil
	c.mu.Unlock()
	if registered {
		r := c.r
		r.mu.Lock()
		delete(r.waiting, c)
		r.mu.Unlock()
	}
}

func (c *deadlineCtx) String() string {
	return "syncbridge.deadlineCtx(" + time.Unix(0, c.deadline).String() + ")"
}
