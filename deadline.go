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
//
// It holds the context the request's reply is published with (rc, which
// carries the deadline for both), and keeps why it ended as a byte: the
// two share one allocation with the request (inbound), which stays within
// a smaller size class.
type deadlineCtx struct {
	rc replyCtx   // the reply's context; rc.deadline is the deadline of both
	r  *Responder // Close cancels the context

	mu    sync.Mutex // protects done, timer and err
	err   ctxErr
	done  chan struct{}
	timer *time.Timer
}

// ctxErr is why a deadlineCtx ended, in a byte.
type ctxErr uint8

const (
	ctxLive     ctxErr = iota // not ended
	ctxCanceled               // context.Canceled
	ctxExpired                // context.DeadlineExceeded
)

// error returns the error e stands for (nil while live).
func (e ctxErr) error() error {
	switch e {
	case ctxCanceled:
		return context.Canceled
	case ctxExpired:
		return context.DeadlineExceeded
	}
	return nil
}

func (c *deadlineCtx) Deadline() (time.Time, bool) { return time.Unix(0, c.rc.deadline), true }

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
	d := time.Duration(c.rc.deadline - time.Now().UnixNano())
	if d <= 0 || c.err != ctxLive {
		if c.err == ctxLive {
			c.err = ctxExpired
		}
		close(c.done)
		c.mu.Unlock()
		return done
	}
	c.timer = time.AfterFunc(d, func() { c.end(ctxExpired) })
	// Registered, under c.mu, so that Close can close it and release,
	// which sees done set, finds it registered.
	r := c.r
	r.mu.Lock()
	r.waiting[c] = struct{}{}
	r.mu.Unlock()
	c.mu.Unlock()
	if r.closing.Load() { // Close may have begun before the registration
		c.end(ctxCanceled)
	}
	return done
}

// Err returns nil until Done is closed, then why.
func (c *deadlineCtx) Err() error {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if err != ctxLive {
		return err.error()
	}
	switch {
	case c.r.closing.Load():
		c.end(ctxCanceled)
	case time.Now().UnixNano() >= c.rc.deadline:
		c.end(ctxExpired)
	default:
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err.error()
}

// end closes Done with err, unless it is closed already.
func (c *deadlineCtx) end(err ctxErr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != ctxLive {
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
	c.end(ctxCanceled)
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
	return "syncbridge.deadlineCtx(" + time.Unix(0, c.rc.deadline).String() + ")"
}
