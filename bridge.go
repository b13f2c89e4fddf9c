package syncbridge

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Bridge sends requests over a Transport and waits for their replies, which
// it reads from one reply subscription shared by every request. A Bridge is
// safe for concurrent use; create one per process (per reply topic) and
// share it. It does not own the Transport: close the Transport after the
// Bridge.
type Bridge struct {
	t       Transport
	cfg     config
	hooks   hooks
	ids     idGen
	reg     *registry
	sub     Subscription
	replyTo []byte // cfg.replyTopic as a header value

	async     AsyncPublisher   // t, when it publishes asynchronously
	checker   ResponderChecker // t, with WithFailFastNoResponders
	seq       atomic.Uint64    // last sequence number issued
	inflight  atomic.Int64     // requests between acquire and release
	part      atomic.Uint32    // round-robin index into cfg.replyParts
	stopping  atomic.Bool      // Shutdown or Close began: no new requests
	closeOnce sync.Once
	closeErr  error
	idleOnce  sync.Once
	idle      chan struct{} // closed when stopping and nothing is in flight
	stats     counters
	dl        deadlineCache
	watches   watches  // the contexts of Go's Calls
	timeouts  timeouts // Go's Calls whose contexts have no deadline
	// calls and timers recycle what Request and Gather wait on.
	// They belong to the Bridge, not the package, so that a Bridge's
	// channels and timers stay in the testing/synctest bubble that made it.
	calls  sync.Pool // *Call with its ch, for Request
	timers sync.Pool
}

// New returns a Bridge that publishes over t. It subscribes to its reply
// topic and returns only once that subscription is positioned, so that no
// reply can arrive before the Bridge is ready for it; ctx bounds that
// subscription (on Kafka: metadata and offset lookups). opts must be
// options that apply to a Bridge (BridgeOption); New fails on others.
func New(ctx context.Context, t Transport, opts ...Option) (*Bridge, error) {
	if t == nil {
		return nil, errors.New("syncbridge: New: nil Transport")
	}
	cfg := defaultConfig()
	h, err := applyOptions(&cfg, opts, true)
	if err != nil {
		return nil, err
	}
	if cfg.replyTopic == "" {
		return nil, errors.New("syncbridge: New: empty reply topic")
	}
	if cfg.maxInFlight < 0 {
		return nil, fmt.Errorf("syncbridge: New: max in flight %d is negative", cfg.maxInFlight)
	}
	for _, p := range cfg.replyParts {
		if p < 0 {
			return nil, fmt.Errorf("syncbridge: New: negative reply partition %d", p)
		}
	}
	b := &Bridge{
		t:       t,
		cfg:     cfg,
		hooks:   h,
		ids:     newIDGen(),
		reg:     newRegistry(),
		replyTo: []byte(cfg.replyTopic),
		idle:    make(chan struct{}),
	}
	b.watches.m = make(map[context.Context]*ctxWatch)
	b.timeouts.timer = time.AfterFunc(time.Hour, b.timeouts.fire)
	b.timeouts.timer.Stop()
	b.async, _ = t.(AsyncPublisher)
	if cfg.failFast {
		b.checker, _ = t.(ResponderChecker)
	}
	b.calls.New = func() any { return &Call{ch: make(chan struct{}, 1)} }
	b.timers.New = func() any {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return t
	}
	sub, err := t.Subscribe(ctx, SubscribeConfig{Topic: cfg.replyTopic, Partitions: cfg.replyParts, Concurrent: true}, b.onReply)
	if err != nil {
		return nil, fmt.Errorf("syncbridge: subscribe to reply topic %q: %w", cfg.replyTopic, err)
	}
	b.sub = sub
	return b, nil
}

// acquire admits a request, or says why not.
func (b *Bridge) acquire() error {
	if max := int64(b.cfg.maxInFlight); max > 0 {
		for { // never count a request the limit refuses
			n := b.inflight.Load()
			if n >= max {
				return ErrOverloaded
			}
			if b.inflight.CompareAndSwap(n, n+1) {
				break
			}
		}
	} else {
		b.inflight.Add(1)
	}
	// Checked after counting, so that Shutdown, which sets stopping and
	// then reads the count, never misses a request it should wait for.
	if b.stopping.Load() {
		b.release()
		return ErrClosed
	}
	return nil
}

// release ends what acquire admitted.
func (b *Bridge) release() {
	if b.inflight.Add(-1) == 0 && b.stopping.Load() {
		b.idleOnce.Do(func() { close(b.idle) })
	}
}

// outgoing returns the message to publish for msg: a copy with the
// correlation ID, reply address and deadline added to a new header slice.
// The caller's message and its header slice are left untouched. The
// headers and their values take one allocation, sized for them: the
// transport, and a responder in the same process, may keep them.
func (b *Bridge) outgoing(c *Call, msg *Message) Message {
	h := &b.cfg.headers
	var hdrs []Header
	var buf []byte
	n := len(msg.Headers) + 3
	if c.g != nil {
		n++
	}
	switch {
	case len(b.cfg.replyParts) == 0 && n <= 3: // the common case
		x := new(outgoing3)
		hdrs, buf = x.hdrs[:0], x.buf[:0]
	case n <= 4:
		x := new(outgoing4)
		hdrs, buf = x.hdrs[:0], x.buf[:0]
	default:
		x := new(outgoing4)
		hdrs, buf = make([]Header, 0, n+1), x.buf[:0]
	}
	for _, x := range msg.Headers {
		if !h.reserved(x.Key) { // ours are set below, once
			hdrs = append(hdrs, x)
		}
	}
	buf = b.ids.appendID(buf, c.seq)
	buf = b.dl.append(buf, c.deadline)
	hdrs = append(hdrs,
		Header{Key: h.CorrelationID, Value: buf[:idLen:idLen]},
		Header{Key: h.ReplyTopic, Value: b.replyTo},
		Header{Key: h.Deadline, Value: buf[idLen:len(buf):len(buf)]})
	if c.g != nil { // a Gather asks each responder to say who it is
		hdrs = append(hdrs, Header{Key: h.Responder, Value: []byte{}})
	}
	if ps := b.cfg.replyParts; len(ps) > 0 {
		p := ps[int(b.part.Add(1))%len(ps)]
		hdrs = append(hdrs, Header{Key: h.ReplyPartition, Value: b.cfg.dialect.appendReplyPartition(buf[len(buf):len(buf):cap(buf)], p)}) // dialect.go
	}
	out := *msg
	out.Headers = hdrs
	return out
}

// deadlineCache remembers the text of the last deadline header made:
// requests made with the same context, or with the same timeout within a
// millisecond, carry the same deadline, and copying it costs less than
// formatting it. It is a sequence lock of atomic words: a reader takes the
// text only if no writer changed it meanwhile, and a writer that finds
// another writing leaves the cache alone.
type deadlineCache struct {
	ver  atomic.Uint64 // odd while a writer updates the fields below
	ms   atomic.Int64
	n    atomic.Uint32
	text [3]atomic.Uint64 // the digits, little-endian
}

// append appends the deadline header's value for ns (Unix nanoseconds)
// to dst.
func (c *deadlineCache) append(dst []byte, ns int64) []byte {
	ms := ns / 1e6
	if ns%1e6 < 0 { // before 1970: round down, as time.Time.UnixMilli does
		ms--
	}
	v := c.ver.Load()
	if v&1 == 0 && v != 0 && c.ms.Load() == ms {
		n := c.n.Load()
		w0, w1, w2 := c.text[0].Load(), c.text[1].Load(), c.text[2].Load()
		if c.ver.Load() == v {
			var b [24]byte
			binary.LittleEndian.PutUint64(b[0:], w0)
			binary.LittleEndian.PutUint64(b[8:], w1)
			binary.LittleEndian.PutUint64(b[16:], w2)
			return append(dst, b[:n]...)
		}
	}
	start := len(dst)
	dst = appendDeadline(dst, time.UnixMilli(ms)) // wire.go
	if v&1 == 0 && c.ver.CompareAndSwap(v, v+1) {
		var b [24]byte
		n := copy(b[:], dst[start:]) // at most 20 bytes: an int64
		c.ms.Store(ms)
		c.n.Store(uint32(n))
		c.text[0].Store(binary.LittleEndian.Uint64(b[0:]))
		c.text[1].Store(binary.LittleEndian.Uint64(b[8:]))
		c.text[2].Store(binary.LittleEndian.Uint64(b[16:]))
		c.ver.Store(v + 2)
	}
	return dst
}

// outgoing3 is the memory of a request's headers, in the common case: the
// correlation ID, the reply topic and the deadline (an int64 in decimal),
// 176 bytes.
type outgoing3 struct {
	hdrs [3]Header
	buf  [idLen + 20]byte
}

// outgoing4 has room for one more header: the caller's own, a Gather's, or
// the reply partition (10 bytes in decimal, see Dialect).
type outgoing4 struct {
	hdrs [4]Header
	buf  [idLen + 20 + 10]byte
}

// Request publishes msg to msg.Topic and waits for its reply. It is Go
// followed by a wait for the Call: the same inputs give the same outcome.
//
// ctx bounds the whole request; when it has no deadline, the default
// timeout applies (see WithDefaultTimeout). The deadline travels with the
// request, so that a responder can skip a request its caller gave up on.
//
// Request returns the reply, or an error that says what happened (see the
// README's error table):
//   - ErrInvalidMessage, ErrOverloaded or ErrClosed: refused, nothing sent;
//   - ErrPublish, wrapping the transport's error (and ctx's error when ctx
//     ended first): certainly not sent, safe to retry;
//   - ErrNoReply together with ctx's error (context.DeadlineExceeded or
//     context.Canceled): sent, or maybe sent, and no reply came in time:
//     the responder may have run it, so retry only idempotent requests;
//   - a *RemoteError: the responder replied with an error;
//   - ErrClosed: the Bridge closed while the request waited (it may have
//     run).
func (b *Bridge) Request(ctx context.Context, msg Message) (*Message, error) {
	c := b.calls.Get().(*Call)
	c.b, c.topic, c.parent = b, msg.Topic, ctx
	b.start(c, &msg, false)
	// Wait as Go's watchers would: ctx, or the default timeout.
	select {
	case <-c.ch:
	default:
		var timer *time.Timer
		var expiry <-chan time.Time
		if _, ok := ctx.Deadline(); !ok {
			timer = b.timers.Get().(*time.Timer)
			timer.Reset(c.untilDeadline())
			expiry = timer.C
		}
		select {
		case <-c.ch:
		case <-ctx.Done():
			c.expire(ctx.Err())
			<-c.ch
		case <-expiry:
			c.expire(context.DeadlineExceeded)
			<-c.ch
		}
		if timer != nil {
			timer.Stop()
			b.timers.Put(timer)
		}
	}
	reply, err := c.reply, c.err
	b.recycle(c)
	return reply, err
}

// recycle puts the Call of a Request back in the pool when nothing can
// touch it any more: the transport is synchronous (its verdict came before
// Request waited) and neither watchers nor the transport's context
// functions were set up (one of them could still be running).
func (b *Bridge) recycle(c *Call) {
	if b.async != nil || c.watching || c.x != nil || c.hi != nil {
		return
	}
	ch := c.ch        // empty again: end sent its one wake-up, and Request took it
	*c = Call{ch: ch} // ctxEnded is false: recycled Calls never had x
	b.calls.Put(c)
}

// errNoTopic is the error of a request without a topic.
var errNoTopic = fmt.Errorf("%w: no topic", ErrInvalidMessage)

// publishError builds the error of a request that was certainly not sent:
// notSent, which wraps ErrNotSent, says why. cause, when not nil, is the
// error of the request's context, which ended first: the error wraps it
// too, as Stats counts the request by it.
func (b *Bridge) publishError(c *Call, notSent, cause error) error {
	if cause == nil || errors.Is(notSent, cause) {
		return fmt.Errorf("%w to %q (correlation %s): %w", ErrPublish, c.topic, b.ids.appendID(nil, c.seq), notSent)
	}
	return fmt.Errorf("%w to %q (correlation %s): %w (publish: %w)", ErrPublish, c.topic, b.ids.appendID(nil, c.seq), cause, notSent)
}

// noReply builds the error of a request that was sent, or maybe sent, and
// got no reply before cause (the context's error) ended it. pubErr, when
// not nil, is why the transport could not confirm that it was sent.
func (b *Bridge) noReply(c *Call, cause, pubErr error) error {
	if pubErr != nil && !errors.Is(pubErr, cause) {
		return fmt.Errorf("%w from %q (correlation %s): %w (publish: %w)", ErrNoReply, c.topic, b.ids.appendID(nil, c.seq), cause, pubErr)
	}
	return fmt.Errorf("%w from %q (correlation %s): %w", ErrNoReply, c.topic, b.ids.appendID(nil, c.seq), cause)
}

// onReply is the reply subscription's handler: it hands each reply to its
// waiter, or drops it.
func (b *Bridge) onReply(_ context.Context, msg Message) {
	id, ok := msg.Header(b.cfg.headers.CorrelationID)
	switch {
	case !ok:
		b.drop(DropMalformed, msg)
		return
	case !b.ids.own(id):
		b.drop(DropForeign, msg)
		return
	}
	seq, ok := b.ids.parse(id)
	if !ok || seq == 0 || seq > b.seq.Load() {
		b.drop(DropUnknown, msg)
		return
	}
	c, dup := b.reg.resolve(seq)
	if c == nil {
		if dup {
			b.drop(DropDuplicate, msg)
		} else {
			b.drop(DropLate, msg)
		}
		return
	}
	m := new(Message) // the caller's reply
	*m = msg
	if c.g != nil {
		dup, late, full := c.g.add(m, &b.cfg.headers)
		switch {
		case dup:
			b.drop(DropDuplicate, msg)
		case late:
			b.drop(DropLate, msg)
		case full && b.reg.remove(seq) != nil:
			c.end(nil, nil, outReply)
		}
		return
	}
	if re := parseReplyError(m, &b.cfg.headers); re != nil {
		c.end(nil, re, outRemote)
		return
	}
	c.end(m, nil, outReply)
}

func (b *Bridge) drop(reason DropReason, msg Message) {
	b.stats.dropped[reason].Add(1)
	if len(b.hooks.dropped) > 0 {
		m := msg // on the heap only when there are hooks
		for _, h := range b.hooks.dropped {
			h.OnDroppedReply(reason, &m)
		}
	}
	if l := b.cfg.logger; l != nil && reason != DropForeign {
		id, _ := msg.Header(b.cfg.headers.CorrelationID)
		l.Debug("syncbridge: dropped reply", "reason", reason.String(), "topic", msg.Topic, "correlation", string(id))
	}
}

// Close stops the Bridge at once: every request in flight fails with
// ErrClosed, later requests fail with ErrClosed, and the reply subscription
// is closed. Close is idempotent; it returns the error of closing the
// subscription, the same on every call.
func (b *Bridge) Close() error {
	b.closeOnce.Do(func() {
		b.stopping.Store(true)
		b.timeouts.timer.Stop() // the Calls it would expire end here
		for _, c := range b.reg.close() {
			c.end(nil, ErrClosed, outClosed)
		}
		b.closeErr = b.sub.Close()
		if b.inflight.Load() == 0 {
			b.idleOnce.Do(func() { close(b.idle) })
		}
	})
	return b.closeErr
}

// Shutdown stops the Bridge gracefully: new requests fail with ErrClosed at
// once, while requests in flight go on until they end or ctx does. Then it
// closes the Bridge (requests still in flight fail with ErrClosed) and
// returns ctx's error if ctx ended first, else Close's.
func (b *Bridge) Shutdown(ctx context.Context) error {
	b.stopping.Store(true)
	if b.inflight.Load() == 0 {
		b.idleOnce.Do(func() { close(b.idle) })
	}
	var err error
	select {
	case <-b.idle:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	return err
}
