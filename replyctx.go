package syncbridge

import (
	"context"
	"sync"
	"time"
)

// replyCtx is the context a Responder publishes a reply with: the
// request's deadline and nothing else. Close does not cancel it, so that a
// handler cancelled by Close still answers its caller. Like deadlineCtx
// it costs nothing unless the transport asks for Done, and AfterFunc (how
// context.AfterFunc watches it) costs one timer, no goroutine.
type replyCtx struct {
	deadline int64 // Unix nanoseconds

	mu    sync.Mutex // protects done and timer
	done  chan struct{}
	timer *time.Timer
}

func (c *replyCtx) Deadline() (time.Time, bool) { return time.Unix(0, c.deadline), true }

func (c *replyCtx) Value(any) any { return nil }

// Err returns context.DeadlineExceeded once the deadline passed.
func (c *replyCtx) Err() error {
	if time.Now().UnixNano() < c.deadline {
		return nil
	}
	c.expire() // Done is closed whenever Err says so
	return context.DeadlineExceeded
}

// Done returns a channel closed at the deadline.
func (c *replyCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if d := time.Duration(c.deadline - time.Now().UnixNano()); d > 0 {
			c.timer = time.AfterFunc(d, c.expire)
		} else {
			close(c.done)
		}
	}
	return c.done
}

// expire closes Done, if it was asked for and is not closed.
func (c *replyCtx) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		close(c.done)
		return
	}
	select {
	case <-c.done:
	default:
		close(c.done)
	}
}

// AfterFunc lets context.AfterFunc run f at the deadline with a timer, not
// a goroutine waiting on Done.
func (c *replyCtx) AfterFunc(f func()) (stop func() bool) {
	return time.AfterFunc(time.Duration(c.deadline-time.Now().UnixNano()), f).Stop
}

// release stops Done's timer, once the reply is published.
func (c *replyCtx) release() {
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
}

func (c *replyCtx) String() string {
	return "syncbridge.replyCtx(" + time.Unix(0, c.deadline).String() + ")"
}
