package syncbridge

import (
	"context"
	"sync"
	"time"
)

// deadlineCtx is the context a Responder gives its handler: a deadline
// with nothing else. It costs no allocation and no timer unless someone
// asks for its Done channel; context.WithDeadline would cost both on every
// request, and most handlers never wait on Done.
type deadlineCtx struct {
	deadline time.Time

	mu    sync.Mutex // protects done, timer and err
	done  chan struct{}
	timer *time.Timer
	err   error
}

func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *deadlineCtx) Value(any) any { return nil }

// Done returns a channel closed at the deadline, or at release.
func (c *deadlineCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if d := time.Until(c.deadline); d <= 0 || c.err != nil {
			if c.err == nil {
				c.err = context.DeadlineExceeded
			}
			close(c.done)
		} else {
			c.timer = time.AfterFunc(d, func() { c.end(context.DeadlineExceeded) })
		}
	}
	return c.done
}

// Err returns nil until Done is closed, then why.
func (c *deadlineCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil && !time.Now().Before(c.deadline) {
		c.err = context.DeadlineExceeded
		if c.done != nil {
			close(c.done)
			c.timer.Stop()
		}
	}
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
func (c *deadlineCtx) release() { c.end(context.Canceled) }

func (c *deadlineCtx) String() string { return "syncbridge.deadlineCtx(" + c.deadline.String() + ")" }
