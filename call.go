package syncbridge

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Call is a request started by Go. It ends once, when the first of these
// happens: its reply arrives, its context ends (its own expiry), it is
// cancelled, or the Bridge closes. Its methods are safe for concurrent use.
//
// A caller may stop waiting for a Call and keep it, to look at it later:
// this is how a server answers 202 Accepted when a reply is slow, and serves
// the outcome when the client polls. A Call waiting for its reply costs a
// few hundred bytes and no goroutine.
type Call struct {
	b     *Bridge
	seq   uint64 // 0 when the Call ended before it was registered
	topic string
	w     waiter
	ctx   context.Context
	state atomic.Bool // the Call ended, or is ending

	stop     func() bool // stops the context.AfterFunc watching ctx; nil if none
	timer    *time.Timer // the default timeout when ctx has no deadline; nil if none
	timedOut atomic.Bool // timer fired

	mu    sync.Mutex    // protects done and ended
	done  chan struct{} // made when first asked for
	ended bool          // reply and err are final

	// reply and err are written once, before ended is set.
	reply *Message
	err   error
}

// closedChan is the Done channel of a Call that ended before anyone asked.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Go starts a request and returns its Call. Go returns once the request is
// published (or publishing failed, or it was refused): the Call may already
// be done. ctx bounds the publish and the Call's life: the Call ends with
// ErrNoReply when ctx ends first. When ctx has no deadline, the default
// timeout applies. To let a Call outlive an HTTP request, derive ctx with
// context.WithoutCancel.
//
// The Call's errors are those of Request.
func (b *Bridge) Go(ctx context.Context, msg Message) *Call {
	c := &Call{b: b, topic: msg.Topic, ctx: ctx}
	c.w.call = c
	if msg.Topic == "" {
		c.end(nil, fmt.Errorf("%w: no topic", ErrInvalidMessage), nil)
		return c
	}
	if err := b.acquire(); err != nil {
		c.end(nil, err, nil)
		return c
	}
	if err := ctx.Err(); err != nil { // nothing will be published
		c.seq = b.seq.Add(1)
		b.stats.publishErrors.Add(1)
		c.complete(nil, b.publishError(c.topic, c.seq, err))
		return c
	}
	deadline, hasDeadline := ctx.Deadline()
	if !hasDeadline {
		deadline = time.Now().Add(b.cfg.defaultTimeout)
	}
	c.seq = b.seq.Add(1)
	out := b.outgoing(&msg, c.seq, deadline)
	// Watch for the end before registering, so that complete never races
	// with setting stop and timer; an end before add is caught after it.
	// No context or timer of our own: a Call that waits costs little.
	if ctx.Done() != nil {
		c.stop = context.AfterFunc(ctx, c.expire)
	}
	if !hasDeadline {
		c.timer = time.AfterFunc(b.cfg.defaultTimeout, c.expireTimer)
	}
	if !b.reg.add(c.seq, &c.w) {
		c.complete(nil, ErrClosed)
		return c
	}
	if c.ctx.Err() != nil || c.timedOut.Load() {
		c.expire()
		return c
	}
	pctx := ctx
	if !hasDeadline { // Publish must end by the deadline too
		var cancel context.CancelFunc
		pctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	if err := b.t.Publish(pctx, out); err != nil {
		if b.reg.remove(c.seq) != nil {
			b.stats.publishErrors.Add(1)
			c.complete(nil, b.publishError(c.topic, c.seq, err))
		}
	}
	return c
}

// expireTimer ends the Call at its default timeout.
func (c *Call) expireTimer() {
	c.timedOut.Store(true)
	c.expire()
}

// expire ends the Call when its context ends or its default timeout
// passes.
func (c *Call) expire() {
	if c.b.reg.remove(c.seq) == nil {
		return
	}
	err := c.ctx.Err()
	if err == nil {
		err = context.DeadlineExceeded // the default timeout
	}
	c.complete(nil, c.b.noReply(c.topic, c.seq, err))
}

// complete ends a Call that was admitted by acquire. The Bridge's slot is
// released before Done closes, so that a caller woken by Done can start
// its next request within the MaxInFlight limit at once.
func (c *Call) complete(reply *Message, err error) {
	c.end(reply, err, func() {
		if c.stop != nil {
			c.stop()
		}
		if c.timer != nil {
			c.timer.Stop()
		}
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
		reply, err = c.b.finish(result{msg: reply})
	}
	c.reply, c.err = reply, err
	if before != nil {
		before()
	}
	c.mu.Lock()
	c.ended = true
	if c.done != nil {
		close(c.done)
	}
	c.mu.Unlock()
	return true
}

// ID returns the request's correlation ID, or "" when the Call ended before
// one was assigned.
func (c *Call) ID() string {
	if c.seq == 0 {
		return ""
	}
	return string(c.b.ids.appendID(nil, c.seq))
}

// Done returns a channel that is closed when the Call ends. The returned
// channel is the same on every call.
func (c *Call) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		if c.ended {
			c.done = closedChan
		} else {
			c.done = make(chan struct{})
		}
	}
	return c.done
}

// Result returns the Call's outcome, as Request would, once it has ended;
// before that it returns ErrPending.
func (c *Call) Result() (*Message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ended {
		return nil, ErrPending
	}
	return c.reply, c.err
}

// Wait waits until the Call ends or ctx does. When ctx ends first, Wait
// returns ctx's error and the Call goes on.
func (c *Call) Wait(ctx context.Context) (*Message, error) {
	select {
	case <-c.Done():
		return c.Result()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Cancel stops the Call: it ends with ErrNoReply and context.Canceled
// unless it has ended already. A reply arriving later is dropped as late.
func (c *Call) Cancel() {
	if c.seq != 0 && c.b.reg.remove(c.seq) != nil {
		c.complete(nil, c.b.noReply(c.topic, c.seq, context.Canceled))
	}
}
