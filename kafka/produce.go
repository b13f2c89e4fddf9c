package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syncbridge/syncbridge"
)

// The life of a published message: PublishAsync copies it into a pending,
// picks its partition and hands it to the produce loop of the partition's
// leader (or, when the topic's metadata is not at hand, to the router,
// which looks it up without holding the caller up). The produce loop sends
// it in the next produce request and calls done with the broker's verdict.
// After a retriable error the pending goes back to the router, which hands
// it, after a backoff, to the loop of the partition's current leader: the
// partition chosen first is kept.
//
// A pending's state says who may call done, and guards that it is called
// exactly once:
//
//	queued  -> sending  the produce loop put it in a request (CAS)
//	sending -> queued   the request failed with a retriable error (CAS)
//	queued  -> done     its ctx ended (done: not sent, unless an earlier
//	                    request may have written it), or a final error
//	sending -> done     the verdict arrived, or its ctx ended (done: maybe
//	                    sent)
const (
	stQueued int32 = iota
	stSending
	stDone
)

// pending is one message on its way to a broker.
type pending struct {
	topic        string
	partition    int32 // -1 until routed; kept across retries
	usePartition bool
	key          []byte // nil means no key; aliases tail
	// tail is the record's key, value and headers as a record batch (v2)
	// holds them, encoded once by newPending: appendRecord adds what
	// depends on the batch (length, attributes, deltas).
	tail []byte
	size int // estimated bytes in a record batch

	ctx  context.Context
	done func(error)
	stop func() bool // unregisters the ctx callback

	state   atomic.Int32
	written atomic.Bool // an earlier produce request may have written it

	// Owned by whoever holds the pending in a queue (router or loop).
	attempt   int       // retries so far
	notBefore time.Time // the router holds it until then
	// failed is the broker whose failure made it wait for a retry, -1 if
	// none: the router hands it to a new leader at once, without waiting
	// for notBefore.
	failed int32
	alone  bool // send it in a batch of its own

	lastErr atomic.Pointer[error] // the last retriable error; read by ctxEnded
}

// setLastErr records the error that made r wait for a retry.
func (r *pending) setLastErr(err error) { r.lastErr.Store(&err) }

// recordOverhead bounds what a record costs in a batch beyond its key,
// value and header bytes (length, attributes, deltas, lengths as varints).
const recordOverhead = 24

// batchOverhead is the size of a record batch's header (v2).
const batchOverhead = 61

// newPending copies msg: the caller may reuse its slices once PublishAsync
// returned, while the message waits in a queue. The copy is the record's
// encoding (key, value and headers, see appendRecord), in one allocation.
func newPending(msg *syncbridge.Message) *pending {
	n := bytesLen(msg.Key) + bytesLen(msg.Value) + varintLen(int64(len(msg.Headers)))
	r := &pending{topic: msg.Topic, partition: -1, usePartition: msg.UsePartition, failed: -1}
	if msg.UsePartition {
		r.partition = msg.Partition
	}
	r.size = recordOverhead + len(msg.Key) + len(msg.Value)
	for _, h := range msg.Headers {
		n += varintLen(int64(len(h.Key))) + len(h.Key) + bytesLen(h.Value)
		r.size += 10 + len(h.Key) + len(h.Value)
	}
	buf := make([]byte, 0, n)
	buf = appendVarBytes(buf, msg.Key)
	if msg.Key != nil {
		r.key = buf[len(buf)-len(msg.Key) : len(buf) : len(buf)]
	}
	buf = appendVarBytes(buf, msg.Value)
	buf = binary.AppendVarint(buf, int64(len(msg.Headers)))
	for _, h := range msg.Headers {
		buf = binary.AppendVarint(buf, int64(len(h.Key)))
		buf = append(buf, h.Key...)
		buf = appendVarBytes(buf, h.Value)
	}
	r.tail = buf
	return r
}

// notSentError marks an error after which the message was certainly not
// written: it wraps syncbridge.ErrNotSent besides its cause.
type notSentError struct{ err error }

func (e *notSentError) Error() string   { return e.err.Error() + " (not sent)" }
func (e *notSentError) Unwrap() []error { return []error{e.err, syncbridge.ErrNotSent} }

func notSent(err error) error { return &notSentError{err} }

// finalErr is the error done receives for err, the last word on r: it
// says "not sent" only if err does and no earlier request of r may have
// written it.
func (r *pending) finalErr(err error) error {
	if r.written.Load() {
		var ns *notSentError
		if errors.As(err, &ns) {
			return fmt.Errorf("%w (an earlier attempt may have written it)", ns.err)
		}
	}
	return err
}

// ctxEnded is called once r's context ended: a queued message is dropped
// and never sent; one in a request in flight may have been written.
func (r *pending) ctxEnded() {
	cerr := r.ctx.Err()
	var last error
	if p := r.lastErr.Load(); p != nil {
		last = *p
	}
	for {
		switch r.state.Load() {
		case stQueued:
			if !r.state.CompareAndSwap(stQueued, stDone) {
				continue
			}
			var err error
			if last != nil && !r.written.Load() {
				err = notSent(fmt.Errorf("syncbridge/kafka: publish to %q: %w (last error: %w)", r.topic, cerr, last))
			} else if r.written.Load() {
				err = fmt.Errorf("syncbridge/kafka: publish to %q: %w (an earlier attempt may have written it)", r.topic, cerr)
			} else {
				err = notSent(fmt.Errorf("syncbridge/kafka: publish to %q: %w", r.topic, cerr))
			}
			r.done(err)
			return
		case stSending:
			if !r.state.CompareAndSwap(stSending, stDone) {
				continue
			}
			r.done(fmt.Errorf("syncbridge/kafka: publish to %q: %w (the produce request was in flight: it may have been written)", r.topic, cerr))
			return
		default:
			return
		}
	}
}

// finish ends a message in state from (stQueued or stSending) with err; it
// reports false if its context's end got there first.
func (r *pending) finish(from int32, err error) bool {
	if !r.state.CompareAndSwap(from, stDone) {
		return false
	}
	r.stop()
	r.done(err)
	return true
}

// Publish writes msg to msg.Topic and returns once the broker acknowledged
// it (from every in-sync replica under the default RequireAll). It is
// PublishAsync plus a wait for done; see PublishAsync for routing, retries
// and errors. Safe for concurrent use.
func (t *Transport) Publish(ctx context.Context, msg syncbridge.Message) error {
	ch := make(chan error, 1)
	t.PublishAsync(ctx, msg, func(err error) { ch <- err })
	return <-ch
}

// PublishAsync hands msg to the produce loop of its partition's leader and
// returns at once, without network I/O: done is called, exactly once and
// from another goroutine (or from PublishAsync itself for a message it
// refuses), with the outcome. The partition is msg.Partition with
// msg.UsePartition; else it is chosen by the murmur2 hash of msg.Key, as
// the Java client's default partitioner does, so the same key always lands
// on the same partition; keyless messages go round robin. Headers are
// written as Kafka headers, in order. msg is copied: the caller may reuse
// its slices once PublishAsync returns.
//
// done receives nil once the broker acknowledged the message. Retriable
// errors (leader moved or unavailable, network errors) are retried in the
// background with fresh metadata until ctx ends, on the partition first
// chosen: only a keyless message that certainly was not written may move to
// a partition whose leader answers. Under RequireAll the producer is
// idempotent: a retry never writes a message twice. When ctx ends first, done receives an error wrapping ctx.Err()
// at once: if the message was still queued it is dropped, never sent, and
// the error wraps syncbridge.ErrNotSent; if a produce request carrying it
// was in flight, it may have been written. Errors that say the broker did
// not store the message (message too large, unknown topic or partition,
// authorization) wrap syncbridge.ErrNotSent, unless an earlier attempt may
// have written it; so do errors after Close for messages not yet sent.
// done must be fast and must not block: it runs on the produce loop.
// Safe for concurrent use.
func (t *Transport) PublishAsync(ctx context.Context, msg syncbridge.Message, done func(error)) {
	switch {
	case msg.Topic == "":
		done(notSent(errors.New("syncbridge/kafka: publish: message without a topic")))
		return
	case msg.UsePartition && msg.Partition < 0:
		done(notSent(fmt.Errorf("%w: %s[%d]", ErrUnknownPartition, msg.Topic, msg.Partition)))
		return
	case ctx.Err() != nil:
		done(notSent(fmt.Errorf("syncbridge/kafka: publish to %q: %w", msg.Topic, ctx.Err())))
		return
	case t.ctx.Err() != nil:
		done(errClosedNotSent)
		return
	}
	r := newPending(&msg)
	r.ctx, r.done = ctx, done
	r.stop = afterFunc(ctx, r.ctxEnded)
	if m := t.cachedMeta(r.topic); m != nil && t.dispatch(r, m, true) {
		return
	}
	t.router.add(r)
}

// dispatch routes a queued message with the topic's metadata m: it picks
// its partition if it has none and hands it to the leader's produce loop.
// With cached metadata it only reports false when m cannot route it (the
// router then looks again with fresh metadata); otherwise it ends r with
// an error when m shows it cannot be sent.
func (t *Transport) dispatch(r *pending, m *topicMeta, cached bool) bool {
	switch {
	case r.partition >= 0:
		if !m.has(r.partition) {
			if cached {
				return false
			}
			r.finish(stQueued, r.finalErr(notSent(fmt.Errorf("%w: %s[%d] (the topic has %d)", ErrUnknownPartition, r.topic, r.partition, len(m.partitions)))))
			return true
		}
	case r.key != nil:
		r.partition = m.partitions[int(murmur2(r.key)&0x7fffffff)%len(m.partitions)]
	default:
		// Round robin, past partitions whose leader just failed.
		n := len(m.partitions)
		start := int(t.spread.Add(1))
		r.partition = m.partitions[start%n]
		for i := range n {
			p := m.partitions[(start+i)%n]
			if l := m.leaders[p]; l >= 0 && !t.isDown(l) {
				r.partition = p
				break
			}
		}
	}
	leader := m.leaders[r.partition]
	if r.failed >= 0 && leader >= 0 && leader != r.failed {
		// A new leader: the backoff starts afresh, should it refuse the
		// message too (it may not have applied its leadership yet).
		r.attempt, r.failed = 0, -1
	}
	if leader < 0 {
		if cached {
			return false
		}
		t.router.retryLater(r, fmt.Errorf("syncbridge/kafka: publish to %s[%d]: %w", r.topic, r.partition, LeaderNotAvailable))
		return true
	}
	p, err := t.producerFor(leader)
	if err != nil || !p.enqueue(r) {
		r.finish(stQueued, r.finalErr(errClosedNotSent))
	}
	return true
}

// router routes the messages whose topic metadata was not at hand, and
// the messages and batches being retried, once their backoff has passed.
// It looks metadata up on its own goroutine, so that no caller waits for
// it.
type router struct {
	t    *Transport
	wake chan struct{} // capacity 1: queue is not empty

	mu      sync.Mutex // protects queue, batches, stale, closed
	queue   []*pending
	batches []*batch
	stale   []string // topics whose metadata to refresh
	closed  bool
}

func (rt *router) signal() {
	select {
	case rt.wake <- struct{}{}:
	default:
	}
}

// refresh asks for topic's metadata to be refreshed in the background.
func (rt *router) refresh(topic string) {
	rt.mu.Lock()
	if rt.closed {
		rt.mu.Unlock()
		return
	}
	rt.stale = append(rt.stale, topic)
	rt.mu.Unlock()
	rt.signal()
}

// add queues r for routing, or ends it if the Transport is closed.
func (rt *router) add(r *pending) {
	rt.mu.Lock()
	if rt.closed {
		rt.mu.Unlock()
		r.finish(stQueued, r.finalErr(errClosedNotSent))
		return
	}
	rt.queue = append(rt.queue, r)
	rt.mu.Unlock()
	rt.signal()
}

// addBatch queues b for sending again to its partition's leader, or ends
// it if the Transport is closed.
func (rt *router) addBatch(b *batch) {
	rt.mu.Lock()
	if rt.closed {
		rt.mu.Unlock()
		b.fail(rt.t, errClosed)
		return
	}
	rt.batches = append(rt.batches, b)
	rt.mu.Unlock()
	rt.signal()
}

// retryLater queues r again after a backoff, err being why.
func (rt *router) retryLater(r *pending, err error) {
	r.setLastErr(err)
	r.notBefore = time.Now().Add(rt.t.backoff(r.attempt))
	r.attempt++
	rt.add(r)
}

func (rt *router) run() {
	t := rt.t
	defer t.wg.Done()
	var (
		waiting  []*pending // backing off
		wbatches []*batch   // backing off
		timer    = time.NewTimer(time.Hour)
		next     time.Time
	)
	defer timer.Stop()
	later := func(at time.Time) {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	for {
		select {
		case <-rt.wake:
		case <-timer.C:
		case <-t.ctx.Done():
			rt.mu.Lock()
			rt.closed = true
			waiting = append(waiting, rt.queue...)
			wbatches = append(wbatches, rt.batches...)
			rt.queue, rt.batches = nil, nil
			rt.mu.Unlock()
			for _, r := range waiting {
				r.finish(stQueued, r.finalErr(errClosedNotSent))
			}
			for _, b := range wbatches {
				b.fail(t, errClosed)
			}
			return
		}
		rt.mu.Lock()
		waiting = append(waiting, rt.queue...)
		wbatches = append(wbatches, rt.batches...)
		clear(rt.queue)
		clear(rt.batches)
		rt.queue, rt.batches = rt.queue[:0], rt.batches[:0]
		refresh := rt.stale
		rt.stale = nil
		rt.mu.Unlock()
		for _, topic := range refresh {
			ctx, cancel := t.requestCtx(t.ctx)
			_, _ = t.topicMeta(ctx, topic)
			cancel()
		}

		now := time.Now()
		next = time.Time{}
		// Messages and batches whose leader failed wait out their backoff
		// only while the metadata names that leader: it is looked up every
		// leaderPoll, and they go to a new leader as soon as one is named.
		fresh := rt.watch(waiting, wbatches, now)
		moved := func(topic string, partition, failed int32) bool {
			m := fresh[topic]
			if m == nil || failed < 0 {
				return false
			}
			l, ok := m.leaders[partition]
			return ok && l >= 0 && l != failed
		}
		poll := func(failed int32) {
			if failed >= 0 {
				later(now.Add(t.leaderPoll()))
			}
		}
		byTopic := make(map[string][]*pending)
		bbyTopic := make(map[string][]*batch)
		kept := waiting[:0]
		for _, r := range waiting {
			switch {
			case r.state.Load() != stQueued: // its context ended
			case r.notBefore.After(now) && !moved(r.topic, r.partition, r.failed):
				kept = append(kept, r)
				later(r.notBefore)
				poll(r.failed)
			default:
				byTopic[r.topic] = append(byTopic[r.topic], r)
			}
		}
		clear(waiting[len(kept):])
		waiting = kept
		bkept := wbatches[:0]
		for _, b := range wbatches {
			if b.notBefore.After(now) && !moved(b.topic, b.partition, b.failed) {
				bkept = append(bkept, b)
				later(b.notBefore)
				poll(b.failed)
			} else {
				bbyTopic[b.topic] = append(bbyTopic[b.topic], b)
				if _, ok := byTopic[b.topic]; !ok {
					byTopic[b.topic] = nil
				}
			}
		}
		clear(wbatches[len(bkept):])
		wbatches = bkept

		for topic, rs := range byTopic {
			ctx, cancel := t.requestCtx(t.ctx)
			m, err := t.topicMeta(ctx, topic)
			cancel()
			// Batches first: records of their partitions wait for them.
			for _, b := range bbyTopic[topic] {
				switch {
				case err == nil:
					if !t.dispatchBatch(b, m) {
						b.notBefore = time.Now().Add(t.backoff(b.attempt))
						b.attempt++
						wbatches = append(wbatches, b)
						later(b.notBefore)
					}
				case t.ctx.Err() != nil:
					b.fail(t, errClosed)
				case retriable(err):
					b.notBefore = time.Now().Add(t.backoff(b.attempt))
					b.attempt++
					wbatches = append(wbatches, b)
					later(b.notBefore)
				default:
					b.fail(t, err)
				}
			}
			for _, r := range rs {
				switch {
				case err == nil:
					t.dispatch(r, m, false)
				case t.ctx.Err() != nil:
					r.finish(stQueued, r.finalErr(errClosedNotSent))
				case retriable(err):
					r.setLastErr(err)
					r.notBefore = time.Now().Add(t.backoff(r.attempt))
					r.attempt++
					waiting = append(waiting, r)
					later(r.notBefore)
				default:
					// The broker itself says the topic does not exist.
					r.finish(stQueued, r.finalErr(notSent(err)))
				}
			}
		}
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
	}
}

// watch returns fresh metadata of the topics with messages or batches
// waiting for a retry after their leader failed.
func (rt *router) watch(waiting []*pending, batches []*batch, now time.Time) map[string]*topicMeta {
	t := rt.t
	var topics []string
	for _, r := range waiting {
		if r.failed >= 0 && r.notBefore.After(now) && r.state.Load() == stQueued && !slices.Contains(topics, r.topic) {
			topics = append(topics, r.topic)
		}
	}
	for _, b := range batches {
		if b.failed >= 0 && b.notBefore.After(now) && !slices.Contains(topics, b.topic) {
			topics = append(topics, b.topic)
		}
	}
	if len(topics) == 0 {
		return nil
	}
	fresh := make(map[string]*topicMeta, len(topics))
	for _, topic := range topics {
		// Metadata younger than RetryBackoff is kept.
		t.refreshTopic(topic)
		ctx, cancel := t.requestCtx(t.ctx)
		if m, err := t.topicMeta(ctx, topic); err == nil {
			fresh[topic] = m
		}
		cancel()
	}
	return fresh
}

// dispatchBatch hands b to the produce loop of its partition's leader; it
// reports false when the partition has no leader now.
func (t *Transport) dispatchBatch(b *batch, m *topicMeta) bool {
	leader, ok := m.leaders[b.partition]
	if !ok || leader < 0 {
		return false
	}
	if b.failed >= 0 && leader != b.failed {
		// A new leader: the backoff starts afresh.
		b.attempt, b.failed = 0, -1
	}
	p, err := t.producerFor(leader)
	if err != nil || !p.enqueueBatch(b) {
		b.fail(t, errClosed)
	}
	return true
}

// maybeStored reports whether a produce error code leaves open that the
// broker stored the records: an acknowledgement that timed out, records
// appended on the leader but short of replicas, or an error the broker
// does not explain. So does NOT_LEADER_OR_FOLLOWER: a leader that
// appended a batch and was waiting for its replicas (acks=all) answers it
// when its leadership moves, and the new leader may well have the records
// (TestNotLeaderAfterAppend). Every other code refuses the batch before it
// is appended.
func maybeStored(code Error) bool {
	switch code {
	case RequestTimedOut, errNotEnoughReplicasAfterAppend, UnknownServerError,
		errNetworkException, errKafkaStorageError, errDuplicateSequenceNumber,
		NotLeaderOrFollower:
		return true
	}
	return false
}

// murmur2 is the hash of Kafka's Java default partitioner (and of
// kafka-go's Murmur2Balancer): partition = (murmur2(key) & 0x7fffffff) %
// partitions, so that Go and Java producers agree on a key's partition.
func murmur2(data []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	length := len(data)
	h := seed ^ uint32(length)
	for i := 0; i+4 <= length; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := data[length&^3:]
	switch len(tail) {
	case 3:
		h ^= uint32(tail[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(tail[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(tail[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

// afterFuncer is a context that runs a function when it ends without a
// goroutine of its own, as syncbridge's own contexts (a Call's, a
// Responder's reply's) do: context.AfterFunc uses it too, but allocates
// a context and two closures around it.
type afterFuncer interface {
	AfterFunc(func()) func() bool
}

// afterFunc is context.AfterFunc, calling ctx's AfterFunc directly when it
// has one.
func afterFunc(ctx context.Context, f func()) (stop func() bool) {
	if a, ok := ctx.(afterFuncer); ok {
		return a.AfterFunc(f)
	}
	return context.AfterFunc(ctx, f)
}
