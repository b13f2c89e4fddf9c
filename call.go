package syncbridge

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// Call is a request started by Go. It ends once, when the first of these
// happens: its reply arrives, its context ends (its own expiry), it is
// cancelled, or the Bridge closes. Its methods are safe for concurrent use.
//
// A caller may stop waiting for a Call and keep it, to look at it later:
// this is how a server answers 202 Accepted when a reply is slow, and serves
// the outcome when the client polls.
type Call struct {
	// Request is the message as published, with syncbridge's headers.
	Request Message

	b      *Bridge
	seq    uint64
	id     string
	w      waiter
	done   chan struct{}
	state  atomic.Bool // the Call ended
	stop   func() bool // stops the context.AfterFunc watching ctx
	cancel context.CancelFunc
	ctx    context.Context

	// reply and err are written once, before done is closed.
	reply *Message
	err   error
}

// Go starts a request and returns its Call. Go returns once the request is
// published (or publishing failed, or it was refused): the Call may already
// be done. ctx bounds the publish and the Call's life: the Call ends with
// ErrNoReply when ctx ends first. When ctx has no deadline, the default
// timeout applies. To let a Call outlive an HTTP request, derive ctx with
// context.WithoutCancel.
//
// The Call's errors are those of Request.
func (b *Bridge) Go(ctx context.Context, msg Message) *Call {
	c := &Call{b: b, done: make(chan struct{})}
	c.w.call = c
	if msg.Topic == "" {
		c.end(nil, fmt.Errorf("%w: no topic", ErrInvalidMessage), nil)
		return c
	}
	if err := b.acquire(); err != nil {
		c.end(nil, err, nil)
		return c
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(b.cfg.defaultTimeout)
	}
	c.ctx, c.cancel = context.WithDeadline(ctx, deadline)
	c.seq = b.seq.Add(1)
	c.Request = b.outgoing(&msg, c.seq, deadline)
	id, _ := c.Request.Header(b.cfg.headers.CorrelationID)
	c.id = string(id)
	// Watch ctx before registering, so that complete never races with
	// setting stop; an expiry before add is caught by the check after it.
	c.stop = context.AfterFunc(c.ctx, c.expire)
	if !b.reg.add(c.seq, &c.w) {
		c.complete(nil, ErrClosed)
		return c
	}
	if c.ctx.Err() != nil {
		c.expire()
		return c
	}
	if err := b.t.Publish(c.ctx, c.Request); err != nil {
		if b.reg.remove(c.seq) != nil {
			b.stats.publishErrors.Add(1)
			c.complete(nil, b.publishError(&c.Request, err))
		}
	}
	return c
}

// expire ends the Call when its context ends.
func (c *Call) expire() {
	if c.b.reg.remove(c.seq) != nil {
		c.complete(nil, c.b.noReply(&c.Request, c.ctx.Err()))
	}
}

// complete ends a Call that was admitted by acquire. The Bridge's slot is
// released before Done closes, so that a caller woken by Done can start
// its next request within the MaxInFlight limit at once.
func (c *Call) complete(reply *Message, err error) {
	c.end(reply, err, func() {
		c.stop()
		c.cancel()
		c.b.release()
	})
}

// end records the outcome once, runs before (when not nil), then closes
// done. It reports whether it did.
func (c *Call) end(reply *Message, err error, before func()) bool {
	if !c.state.CompareAndSwap(false, true) {
		return false
	}
	if err == nil && reply != nil {
		reply, err = c.finish(reply)
	}
	c.reply, c.err = reply, err
	if before != nil {
		before()
	}
	close(c.done)
	return true
}

func (c *Call) finish(reply *Message) (*Message, error) {
	return c.b.finish(result{msg: reply})
}

// ID returns the request's correlation ID, or "" when the Call ended before
// one was assigned.
func (c *Call) ID() string { return c.id }

// Done returns a channel that is closed when the Call ends. The returned
// channel is the same on every call.
func (c *Call) Done() <-chan struct{} { return c.done }

// Result returns the Call's outcome, as Request would, once it has ended;
// before that it returns ErrPending.
func (c *Call) Result() (*Message, error) {
	select {
	case <-c.done:
		return c.reply, c.err
	default:
		return nil, ErrPending
	}
}

// Wait waits until the Call ends or ctx does. When ctx ends first, Wait
// returns ctx's error and the Call goes on.
func (c *Call) Wait(ctx context.Context) (*Message, error) {
	select {
	case <-c.done:
		return c.reply, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Cancel stops the Call: it ends with ErrNoReply and context.Canceled
// unless it has ended already. A reply arriving later is dropped as late.
func (c *Call) Cancel() {
	if c.b != nil && c.seq != 0 && c.b.reg.remove(c.seq) != nil {
		c.complete(nil, c.b.noReply(&c.Request, context.Canceled))
	}
}
