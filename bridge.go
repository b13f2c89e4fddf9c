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

	seq       atomic.Uint64 // last sequence number issued
	inflight  atomic.Int64  // requests between acquire and release
	part      atomic.Uint32 // round-robin index into cfg.replyParts
	stopping  atomic.Bool   // Shutdown or Close began: no new requests
	closeOnce sync.Once
	closeErr  error
	idleOnce  sync.Once
	idle      chan struct{} // closed when stopping and nothing is in flight
	stats     counters
	// waiters recycles the waiters of Request. It belongs to the Bridge,
	// not the package, so that a Bridge's channels stay in the
	// testing/synctest bubble that made it.
	waiters sync.Pool
}

// New returns a Bridge that publishes over t. It subscribes to its reply
// topic and returns only once that subscription is positioned, so that no
// reply can arrive before the Bridge is ready for it. Subscribing takes at
// most the default timeout (see WithDefaultTimeout).
func New(t Transport, opts ...Option) (*Bridge, error) {
	if t == nil {
		return nil, errors.New("syncbridge: New: nil Transport")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		if o != nil {
			o.applyBridge(&cfg)
		}
	}
	if err := cfg.headers.validate(); err != nil {
		return nil, err
	}
	if cfg.replyTopic == "" {
		return nil, errors.New("syncbridge: New: empty reply topic")
	}
	if cfg.defaultTimeout <= 0 {
		return nil, fmt.Errorf("syncbridge: New: default timeout %v is not positive", cfg.defaultTimeout)
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
		hooks:   newHooks(cfg.hooks),
		ids:     newIDGen(),
		reg:     newRegistry(),
		replyTo: []byte(cfg.replyTopic),
		idle:    make(chan struct{}),
	}
	b.waiters.New = func() any { return &waiter{ch: make(chan result, 1)} }
	ctx, cancel := context.WithTimeout(context.Background(), cfg.defaultTimeout)
	defer cancel()
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
				b.stats.overloaded.Add(1)
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
// The caller's message and its header slice are left untouched.
func (b *Bridge) outgoing(msg *Message, seq uint64, deadline time.Time) Message {
	h := &b.cfg.headers
	n := len(msg.Headers) + 4
	// One allocation for the headers and the bytes of ours, sized for the
	// common cases: every byte allocated per request costs GC time.
	var hdrs []Header
	var buf []byte
	switch {
	case n <= 4:
		o := new(outgoingBuf[[4]Header])
		hdrs, buf = o.hdrs[:0], o.buf[:0]
	case n <= 8:
		o := new(outgoingBuf[[8]Header])
		hdrs, buf = o.hdrs[:0], o.buf[:0]
	default:
		hdrs, buf = make([]Header, 0, n), make([]byte, 0, outgoingBytes)
	}
	for _, x := range msg.Headers {
		if !h.reserved(x.Key) { // ours are set below, once
			hdrs = append(hdrs, x)
		}
	}
	buf = b.ids.appendID(buf, seq)
	buf = appendDeadline(buf, deadline)
	hdrs = append(hdrs,
		Header{Key: h.CorrelationID, Value: buf[:idLen:idLen]},
		Header{Key: h.ReplyTopic, Value: b.replyTo},
		Header{Key: h.Deadline, Value: buf[idLen:len(buf):len(buf)]})
	if ps := b.cfg.replyParts; len(ps) > 0 {
		p := ps[int(b.part.Add(1))%len(ps)]
		hdrs = append(hdrs, Header{Key: h.ReplyPartition, Value: binary.BigEndian.AppendUint32(buf[len(buf):len(buf):cap(buf)], uint32(p))})
	}
	out := *msg
	out.Headers = hdrs
	return out
}

// outgoingBytes is room for the values of a request's headers: correlation
// ID, deadline and reply partition.
const outgoingBytes = idLen + 20 + 4

// outgoingBuf is the memory of a request's headers, allocated at once.
type outgoingBuf[H [4]Header | [8]Header] struct {
	hdrs H
	buf  [outgoingBytes]byte
}

// Request publishes msg to msg.Topic and waits for its reply.
//
// ctx bounds the whole request; when it has no deadline, the default
// timeout applies (see WithDefaultTimeout). The deadline travels with the
// request, so that a responder can skip a request its caller gave up on.
//
// Request returns the reply, or an error that says what happened:
// ErrOverloaded or ErrClosed before anything was sent; ErrPublish (wrapping
// the transport's error) when the request could not be published, so that
// it is safe to retry; ErrNoReply together with ctx's error
// (context.DeadlineExceeded or context.Canceled) when it was published but
// no reply came in time; a *RemoteError when the responder replied with an
// error; ErrClosed when the Bridge closed while waiting.
func (b *Bridge) Request(ctx context.Context, msg Message) (*Message, error) {
	if msg.Topic == "" {
		return nil, fmt.Errorf("%w: no topic", ErrInvalidMessage)
	}
	if err := b.acquire(); err != nil {
		return nil, err
	}
	defer b.release()
	deadline, ok := ctx.Deadline()
	if !ok {
		var cancel context.CancelFunc
		deadline = time.Now().Add(b.cfg.defaultTimeout)
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	seq := b.seq.Add(1)
	out := b.outgoing(&msg, seq, deadline)
	w := b.waiters.Get().(*waiter)
	if !b.reg.add(seq, w) {
		b.waiters.Put(w)
		return nil, ErrClosed
	}
	if err := b.t.Publish(ctx, out); err != nil {
		if b.reg.remove(seq) == nil {
			// A reply (or Close) beat the publish error: take it.
			r := <-w.ch
			b.waiters.Put(w)
			return b.finish(r)
		}
		b.waiters.Put(w)
		b.stats.publishErrors.Add(1)
		return nil, b.publishError(out.Topic, seq, err)
	}
	select {
	case r := <-w.ch:
		b.waiters.Put(w)
		return b.finish(r)
	case <-ctx.Done():
		if b.reg.remove(seq) == nil {
			// Resolved while we gave up: the result is in the channel
			// or about to be.
			r := <-w.ch
			b.waiters.Put(w)
			return b.finish(r)
		}
		b.waiters.Put(w)
		return nil, b.noReply(out.Topic, seq, ctx.Err())
	}
}

func (b *Bridge) publishError(topic string, seq uint64, err error) error {
	return fmt.Errorf("%w to %q (correlation %s): %w", ErrPublish, topic, b.ids.appendID(nil, seq), err)
}

// noReply builds the error of a request that got no reply.
func (b *Bridge) noReply(topic string, seq uint64, err error) error {
	b.stats.noReply.Add(1)
	return fmt.Errorf("%w from %q (correlation %s): %w", ErrNoReply, topic, b.ids.appendID(nil, seq), err)
}

// finish turns a waiter's result into Request's return values.
func (b *Bridge) finish(r result) (*Message, error) {
	if r.err != nil {
		return nil, r.err
	}
	if re := parseReplyError(r.msg, &b.cfg.headers); re != nil {
		b.stats.remoteErrors.Add(1)
		return nil, re
	}
	b.stats.replies.Add(1)
	return r.msg, nil
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
	w, dup := b.reg.resolve(seq)
	if w == nil {
		if dup {
			b.drop(DropDuplicate, msg)
		} else {
			b.drop(DropLate, msg)
		}
		return
	}
	m := new(Message) // the caller's reply
	*m = msg
	w.deliver(result{msg: m})
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
		for _, w := range b.reg.close() {
			w.deliver(result{err: ErrClosed})
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

// InFlight returns the number of requests in flight: started, and not yet
// returned (Request) or completed (Go).
func (b *Bridge) InFlight() int { return int(b.inflight.Load()) }
