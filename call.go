package syncbridge

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Call is a request started by Go. It ends once, when the first of these
// happens: its reply arrives, its context ends or its default timeout
// passes, it is cancelled, the transport reports that it could not be sent,
// or the Bridge closes. Its methods are safe for concurrent use.
//
// A caller may stop waiting for a Call and keep it, to look at it later:
// this is how a server answers 202 Accepted when a reply is slow, and serves
// the outcome when the client polls. A Call waiting for its reply costs no
// goroutine, and under 256 bytes when Calls share their context or their
// contexts have no deadline (TestInFlightMemory); a context of its own adds
// the AfterFunc that watches it.
type Call struct {
	b        *Bridge
	seq      uint64 // 0 when the Call ended before acquire admitted it and gave it one
	topic    string
	parent   context.Context // the caller's context
	deadline int64           // Unix nanoseconds: the parent's deadline, or the default timeout's

	// Set before the Call is shared, read-only after.
	ch chan struct{} // Request's wake-up, capacity 1; nil for Go

	mu         sync.Mutex  // protects the fields below, and those of x
	publishing bool        // handed to the transport, verdict not known yet
	ending     bool        // end began: no new watchers
	ended      bool        // reply and err are final
	watching   bool        // watch ran
	ctxEnded   atomic.Bool // cancelCtx ran: x.ctxErr is set
	done       chan struct{}
	reply      *Message
	err        error
	stop       func() bool // stops the context.AfterFunc watching parent, if it has one of its own
	w          *ctxWatch   // watches parent with other Calls on it, if it has no AfterFunc of its own
	tprev      *Call       // links in the Bridge's timeouts, when parent has no deadline
	tnext      *Call
	x          *callExtra   // what few Calls need; nil until one does
	hi         *RequestInfo // for request hooks; nil without them
	g          *gathering   // for Gather: many replies; nil otherwise

}

// callExtra holds the state of a Call that only some Calls need: those
// whose transport watches the context the Call gave it, or whose publish
// failed or expired.
type callExtra struct {
	expired error         // why the Call expired while publishing
	pubErr  error         // a publish error that left the request maybe sent
	notSent error         // the transport's verdict: certainly not sent
	ctxErr  error         // the transport context's error, once it ended
	ctxDone chan struct{} // the transport context's Done
	afters  []*afterFunc  // the transport context's AfterFuncs
}

// extra returns c.x, making it if needed. c.mu must be held.
func (c *Call) extra() *callExtra {
	if c.x == nil {
		c.x = new(callExtra)
	}
	return c.x
}

// closedChan is the Done channel of a Call that ended before anyone asked.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Go starts a request and returns its Call, which says how it ended once
// it has. Go returns as soon as the request is handed to the transport
// (or refused): it does not wait for the broker's acknowledgement, and the
// Call may already be done. ctx bounds the Call's life: the Call ends when
// ctx ends first. When ctx has no deadline, the default timeout applies.
// To let a Call outlive an HTTP request, derive ctx with
// context.WithoutCancel.
//
// Request is Go followed by a wait: for the same inputs, a Call ends with
// the error Request would return, and counts in the same Stats field.
func (b *Bridge) Go(ctx context.Context, msg Message) *Call {
	c := &Call{b: b, topic: msg.Topic, parent: ctx}
	b.start(c, &msg, true)
	return c
}

// start sends the request of c. With watch, c watches its context and
// default timeout itself (Go); without, its caller does (Request).
func (b *Bridge) start(c *Call, msg *Message, watch bool) {
	if b.hooks.requests() {
		c.hi = &RequestInfo{Context: c.parent, Topic: msg.Topic, Start: time.Now()}
	}
	if msg.Topic == "" {
		c.end(nil, errNoTopic, outInvalid)
		return
	}
	if g := c.g; g != nil && (g.count < 0 || g.quiet < 0) {
		c.end(nil, fmt.Errorf("%w: Gather with count %d, quiet %v", ErrInvalidMessage, g.count, g.quiet), outInvalid)
		return
	}
	if b.checker != nil {
		if has, known := b.checker.HasResponders(msg.Topic); known && !has {
			c.end(nil, fmt.Errorf("%w on %q", ErrNoResponders, msg.Topic), outNoResponders)
			return
		}
	}
	if err := b.acquire(); err != nil {
		o := outOverloaded
		if err == ErrClosed {
			o = outClosed
		}
		c.end(nil, err, o)
		return
	}
	c.seq = b.seq.Add(1) // admitted: end releases the slot

	if hi := c.hi; hi != nil {
		hi.ID = string(b.ids.appendID(nil, c.seq))
	}
	if err := c.parent.Err(); err != nil { // nothing will be published
		c.end(nil, b.publishError(c, ErrNotSent, err), outcomeOf(err))
		return
	}
	if d, ok := c.parent.Deadline(); ok {
		c.deadline = d.UnixNano()
	} else {
		c.deadline = addSat(time.Now().UnixNano(), b.cfg.defaultTimeout)
	}
	out := b.outgoing(c, msg)
	if hi := c.hi; hi != nil {
		m := out // on the heap only when there are hooks
		hi.Message = &m
		for _, h := range b.hooks.reqStart {
			h.OnRequestStart(hi)
		}
		out = m
		hi.pubStart = time.Now()
	}
	c.publishing = true // before anyone else can see c
	if !b.reg.add(c.seq, c) {
		c.end(nil, ErrClosed, outClosed)
		return
	}
	if watch {
		c.watch()
	}
	// The transport watches the Call itself as its context: it ends when
	// the Call expires (its context, its deadline, Cancel) or ends (Close),
	// so that nothing stays queued or retried for a Call that is over.
	pctx := (*callCtx)(c)
	if ap := b.async; ap != nil {
		ap.PublishAsync(pctx, out, c.published)
		return
	}
	c.published(b.t.Publish(pctx, out))
}

// watch makes the Call expire when its context ends or its default
// timeout passes. It runs once, for Go, or when the transport asks for the
// Done channel of the context Request gave it.
func (c *Call) watch() {
	c.mu.Lock()
	if c.watching || c.ending {
		c.mu.Unlock()
		return
	}
	c.watching = true
	c.mu.Unlock()
	// Outside the lock: either may run its function at once.
	var stop func() bool
	var w *ctxWatch
	if c.parent.Done() != nil {
		if w = c.b.watches.add(c); w == nil {
			stop = context.AfterFunc(c.parent, c.expireCtx)
		}
	}
	_, hasDeadline := c.parent.Deadline()
	if !hasDeadline {
		c.b.timeouts.add(c)
	}
	c.mu.Lock()
	c.stop, c.w = stop, w
	ended := c.ending
	c.mu.Unlock()
	if ended { // ended meanwhile: end could not stop them
		c.stopWatching(stop, w, !hasDeadline)
	}
}

// stopWatching undoes what watch did: stop and w are its watchers of the
// context, and timed says that it added c to the Bridge's timeouts.
func (c *Call) stopWatching(stop func() bool, w *ctxWatch, timed bool) {
	if stop != nil {
		stop()
	}
	if w != nil {
		c.b.watches.remove(w, c)
	}
	if timed {
		c.b.timeouts.remove(c)
	}
}

// untilDeadline returns the time left until the Call's deadline.
func (c *Call) untilDeadline() time.Duration {
	return time.Duration(c.deadline - time.Now().UnixNano())
}

// addSat returns ns + d, or the largest int64 if that overflows.
func addSat(ns int64, d time.Duration) int64 {
	if s := ns + int64(d); s >= ns || d < 0 {
		return s
	}
	return math.MaxInt64
}

func (c *Call) expireCtx() { c.expire(c.parent.Err()) }

// expire ends the Call because of cause (the context's error). While the
// transport still holds the request, the Call waits for its verdict, which
// the transport gives promptly once the context it was given has ended:
// only it knows whether the request was sent.
func (c *Call) expire(cause error) {
	c.mu.Lock()
	if c.ending {
		c.mu.Unlock()
		return
	}
	if c.publishing {
		if x := c.extra(); x.expired == nil {
			x.expired = cause
		}
		c.mu.Unlock()
		c.cancelCtx(cause) // the transport watches it
		return
	}
	err, o := c.verdict(cause)
	c.mu.Unlock()
	if c.b.reg.remove(c.seq) != nil {
		c.end(nil, err, o)
	}
}

// verdict returns the error and outcome of a Call that ends without a
// reply because of cause (nil: the transport's not-sent verdict alone).
// c.mu must be held.
func (c *Call) verdict(cause error) (error, outcome) {
	var notSent, pubErr error
	if c.x != nil {
		notSent, pubErr = c.x.notSent, c.x.pubErr
	}
	if notSent != nil {
		err := c.b.publishError(c, notSent, cause)
		return err, outcomeOf(err)
	}
	return c.b.noReply(c, cause, pubErr), outcomeOf(cause)
}

// published receives the transport's verdict on the request.
func (c *Call) published(err error) {
	c.mu.Lock()
	c.publishing = false
	if hi := c.hi; hi != nil && !c.ending {
		hi.PublishDuration = time.Since(hi.pubStart)
	}
	var cause error
	if c.x != nil {
		cause = c.x.expired
	}
	notSent := err != nil && errors.Is(err, ErrNotSent)
	switch {
	case notSent:
		c.extra().notSent = err // before unlocking: an expire sees it
	case err != nil:
		c.extra().pubErr = err
	}
	if !notSent && cause == nil {
		// Sent, or maybe sent: the Call waits for its reply, or its end.
		c.mu.Unlock()
		return
	}
	e, o := c.verdict(cause)
	c.mu.Unlock()
	if c.b.reg.remove(c.seq) != nil {
		c.end(nil, e, o)
	}
}

// end records the Call's outcome, counts it, releases its slot and wakes
// its waiters. Exactly one party calls it: the one that removed the Call
// from the registry, or start before registering it.
func (c *Call) end(reply *Message, err error, o outcome) {
	b := c.b
	if c.g != nil && c.g.ended(o) > 0 && (o == outCanceled || o == outTimedOut) {
		err, o = nil, outReply // a gathering that got replies succeeded
	}
	if hi := c.hi; hi != nil {
		c.mu.Lock()
		c.ending = true // published no longer writes hi
		c.mu.Unlock()
		hi.Outcome, hi.Err, hi.Reply, hi.Duration = Outcome(o), err, reply, time.Since(hi.Start)
		if re, ok := err.(*RemoteError); ok {
			hi.Reply = re.Reply
		}
		for _, h := range b.hooks.reqEnd {
			h.OnRequestEnd(hi)
		}
	}
	b.stats.outcomes[o].Add(1)
	// The slot is released before the end shows, so that a caller woken
	// by the Call can start its next request within MaxInFlight at once,
	// and Stats never shows an ended Call in flight.
	if c.seq != 0 { // admitted by acquire
		b.release()
	}
	c.mu.Lock()
	c.ending = true // no new watchers; those started meanwhile are stopped here
	c.reply, c.err, c.ended = reply, err, true
	done := c.done // closed below: Done made it, and will not again
	stop, w, watching := c.stop, c.w, c.watching
	transportWatches := c.x != nil && (c.x.ctxDone != nil || len(c.x.afters) > 0)
	c.mu.Unlock()
	// What watched the Call lets go of it before its waiters wake.
	if watching {
		_, hasDeadline := c.parent.Deadline()
		c.stopWatching(stop, w, !hasDeadline)
	}
	if transportWatches {
		c.cancelCtx(context.Canceled) // the Call is over: let the transport go
	}
	if done != nil {
		close(done)
	}
	if c.ch != nil {
		c.ch <- struct{}{}
	}
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

// Cancel stops the Call as a cancellation of its context would: it ends
// with context.Canceled, wrapped in ErrPublish when the transport reports
// that the request was not sent and in ErrNoReply otherwise, unless it has
// ended already. A reply arriving later is dropped as late.
func (c *Call) Cancel() {
	if c.seq != 0 {
		c.expire(context.Canceled)
	}
}

// callCtx is the context a Call gives the transport when the caller's
// context has no deadline: the caller's values and cancellation, and the
// default timeout's deadline. Unlike context.WithDeadline it costs no
// allocation unless the transport asks for Done. It is a Call.
type callCtx Call

// afterFunc is one function registered by callCtx.AfterFunc.
type afterFunc struct {
	f       func()
	stopped bool // protected by the Call's mu
}

func (x *callCtx) Deadline() (time.Time, bool) { return time.Unix(0, x.deadline), true }

func (x *callCtx) Value(key any) any { return x.parent.Value(key) }

func (x *callCtx) Err() error {
	c := (*Call)(x)
	if c.ctxEnded.Load() {
		c.mu.Lock()
		err := c.x.ctxErr
		c.mu.Unlock()
		return err
	}
	// The deadline shows once the Call's watchers (or Request, which
	// waits on a timer) expire it: no clock read here, on every Publish.
	return c.parent.Err()
}

func (x *callCtx) Done() <-chan struct{} {
	c := (*Call)(x)
	c.watch() // the watchers end it
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.endedExtra()
	if e.ctxDone == nil {
		e.ctxDone = make(chan struct{})
		if e.ctxErr != nil {
			close(e.ctxDone)
		}
	}
	return e.ctxDone
}

// AfterFunc lets context.AfterFunc and context.WithCancel on a callCtx run
// without a goroutine of their own.
func (x *callCtx) AfterFunc(f func()) (stop func() bool) {
	c := (*Call)(x)
	c.watch()
	a := &afterFunc{f: f}
	c.mu.Lock()
	e := c.endedExtra()
	if e.ctxErr != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	e.afters = append(e.afters, a)
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if a.stopped {
			return false
		}
		a.stopped = true
		return true
	}
}

// endedExtra returns c.extra(), with the transport's context ended if
// the Call has: end cancels that context only when the transport watched
// it by then, and a transport may look at it later (a full queue), when
// the Call ended before it did. c.mu must be held.
func (c *Call) endedExtra() *callExtra {
	e := c.extra()
	if c.ended && e.ctxErr == nil {
		e.ctxErr = context.Canceled
		c.ctxEnded.Store(true)
	}
	return e
}

// cancelCtx ends the transport's context with err, once.
func (c *Call) cancelCtx(err error) {
	c.mu.Lock()
	e := c.extra()
	if e.ctxErr != nil {
		c.mu.Unlock()
		return
	}
	e.ctxErr = err
	c.ctxEnded.Store(true)
	if e.ctxDone != nil {
		close(e.ctxDone)
	}
	var run []func()
	for _, a := range e.afters {
		if !a.stopped {
			a.stopped = true
			run = append(run, a.f)
		}
	}
	e.afters = nil
	c.mu.Unlock()
	for _, f := range run {
		go f() // as context.AfterFunc does
	}
}

func (x *callCtx) String() string { return "syncbridge.Call.context" }
