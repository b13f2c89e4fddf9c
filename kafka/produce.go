package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	kafka "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/produce"

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
	key          []byte // nil means no key
	value        []byte
	headers      []protocol.Header
	size         int // estimated bytes in a record batch

	ctx  context.Context
	done func(error)
	stop func() bool // unregisters the ctx callback

	state   atomic.Int32
	written atomic.Bool // an earlier produce request may have written it

	// Owned by whoever holds the pending in a queue (router or loop).
	attempt   int       // retries so far
	notBefore time.Time // the router holds it until then
	alone     bool      // send it in a batch of its own

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
// returned, while the message waits in a queue. One allocation holds key,
// value and header values.
func newPending(msg *syncbridge.Message) *pending {
	n := len(msg.Key) + len(msg.Value)
	for _, h := range msg.Headers {
		n += len(h.Value)
	}
	buf := make([]byte, 0, n)
	r := &pending{topic: msg.Topic, partition: -1, usePartition: msg.UsePartition}
	if msg.UsePartition {
		r.partition = msg.Partition
	}
	if msg.Key != nil {
		buf = append(buf, msg.Key...)
		r.key = buf[:len(msg.Key):len(msg.Key)]
	}
	if msg.Value != nil {
		start := len(buf)
		buf = append(buf, msg.Value...)
		r.value = buf[start:len(buf):len(buf)]
	}
	r.size = recordOverhead + len(msg.Key) + len(msg.Value)
	if len(msg.Headers) > 0 {
		r.headers = make([]protocol.Header, len(msg.Headers))
		for i, h := range msg.Headers {
			start := len(buf)
			buf = append(buf, h.Value...)
			r.headers[i] = protocol.Header{Key: h.Key, Value: buf[start:len(buf):len(buf)]}
			if h.Value == nil {
				r.headers[i].Value = nil
			}
			r.size += 10 + len(h.Key) + len(h.Value)
		}
	}
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
// background, on the partition first chosen, with fresh metadata, until
// ctx ends. When ctx ends first, done receives an error wrapping ctx.Err()
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
	r.stop = context.AfterFunc(ctx, r.ctxEnded)
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
		r.partition = m.partitions[int(t.spread.Add(1))%len(m.partitions)]
	}
	leader := m.leaders[r.partition]
	if leader < 0 {
		if cached {
			return false
		}
		t.router.retryLater(r, fmt.Errorf("syncbridge/kafka: publish to %s[%d]: %w", r.topic, r.partition, kafka.LeaderNotAvailable))
		return true
	}
	p, err := t.producerFor(leader)
	if err != nil || !p.enqueue(r) {
		r.finish(stQueued, r.finalErr(errClosedNotSent))
	}
	return true
}

// router routes the messages whose topic metadata was not at hand, and
// those being retried, once their backoff has passed. It looks metadata up
// on its own goroutine, so that no caller waits for it.
type router struct {
	t    *Transport
	wake chan struct{} // capacity 1: queue is not empty

	mu     sync.Mutex // protects queue, stale, closed
	queue  []*pending
	stale  []string // topics whose metadata to refresh
	closed bool
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
	select {
	case rt.wake <- struct{}{}:
	default:
	}
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
	select {
	case rt.wake <- struct{}{}:
	default:
	}
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
		waiting []*pending // backing off
		timer   = time.NewTimer(time.Hour)
		byTopic = make(map[string][]*pending)
	)
	defer timer.Stop()
	for {
		select {
		case <-rt.wake:
		case <-timer.C:
		case <-t.ctx.Done():
			rt.mu.Lock()
			rt.closed = true
			waiting = append(waiting, rt.queue...)
			rt.queue = nil
			rt.mu.Unlock()
			for _, r := range waiting {
				r.finish(stQueued, r.finalErr(errClosedNotSent))
			}
			return
		}
		rt.mu.Lock()
		waiting = append(waiting, rt.queue...)
		clear(rt.queue)
		rt.queue = rt.queue[:0]
		refresh := rt.stale
		rt.stale = nil
		rt.mu.Unlock()
		for _, topic := range refresh {
			ctx, cancel := t.requestCtx(t.ctx)
			_, _ = t.topicMeta(ctx, topic)
			cancel()
		}

		now := time.Now()
		var next time.Time
		kept := waiting[:0]
		for _, r := range waiting {
			switch {
			case r.state.Load() != stQueued: // its context ended
			case r.notBefore.After(now):
				kept = append(kept, r)
				if next.IsZero() || r.notBefore.Before(next) {
					next = r.notBefore
				}
			default:
				byTopic[r.topic] = append(byTopic[r.topic], r)
			}
		}
		clear(waiting[len(kept):])
		waiting = kept

		for topic, rs := range byTopic {
			ctx, cancel := t.requestCtx(t.ctx)
			m, err := t.topicMeta(ctx, topic)
			cancel()
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
					if next.IsZero() || r.notBefore.Before(next) {
						next = r.notBefore
					}
				default:
					// The broker itself says the topic does not exist.
					r.finish(stQueued, r.finalErr(notSent(err)))
				}
			}
			delete(byTopic, topic)
		}
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
	}
}

// producer is the produce loop of one broker. At most one produce request
// is in flight per broker: messages that arrive meanwhile wait in queue and
// leave together in the next request.
type producer struct {
	t      *Transport
	broker int32
	wake   chan struct{} // capacity 1: queue is not empty
	conn   brokerConn    // the loop's own connection

	mu     sync.Mutex // protects queue, closed
	queue  []*pending
	closed bool
}

// producerFor returns the produce loop of broker, starting it if needed.
func (t *Transport) producerFor(broker int32) (*producer, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errClosed
	}
	p := t.producers[broker]
	if p == nil {
		p = &producer{t: t, broker: broker, wake: make(chan struct{}, 1)}
		p.conn = brokerConn{t: t, broker: broker}
		t.producers[broker] = p
		t.wg.Add(1)
		go p.run()
	}
	return p, nil
}

// enqueue queues r for the next produce request; false once the loop has
// stopped.
func (p *producer) enqueue(r *pending) bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	p.queue = append(p.queue, r)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return true
}

func (p *producer) run() {
	t := p.t
	defer t.wg.Done()
	defer p.conn.close()
	var spare, rest []*pending
	for {
		select {
		case <-p.wake:
		case <-t.ctx.Done():
			p.mu.Lock()
			p.closed = true
			q := p.queue
			p.queue = nil
			p.mu.Unlock()
			for _, r := range q {
				r.finish(stQueued, r.finalErr(errClosedNotSent))
			}
			return
		}
		p.mu.Lock()
		batch := p.queue
		p.queue = spare[:0]
		p.mu.Unlock()
		rest = rest[:0]
		for _, r := range batch {
			if r.state.Load() == stQueued { // else its context ended
				rest = append(rest, r)
			}
		}
		for len(rest) > 0 {
			if t.ctx.Err() != nil {
				for _, r := range rest {
					r.finish(stQueued, r.finalErr(errClosedNotSent))
				}
				break
			}
			rest = p.sendSome(rest)
		}
		clear(batch)
		spare = batch
	}
}

// partBatch is the records of one partition in a produce request.
type partBatch struct {
	topic     string
	partition int32
	recs      []*pending
	size      int
}

// sendSome sends one produce request with as much of rest, in order, as
// fits the limits, and returns what is left for the next one. A
// partition's records keep their order: once one of them waits for the
// next request, the ones after it wait too. A record too large for its
// topic's batches on its own goes alone, so that the broker's refusal
// fails it and nothing else.
func (p *producer) sendSome(rest []*pending) []*pending {
	t := p.t
	var (
		parts   []partBatch
		left    = rest[:0:0]
		reqSize int
		full    map[partKey]bool // partitions closed for this request
	)
	find := func(r *pending) int {
		for i := range parts {
			if parts[i].partition == r.partition && parts[i].topic == r.topic {
				return i
			}
		}
		return -1
	}
	for _, r := range rest {
		k := partKey{r.topic, r.partition}
		if full[k] {
			left = append(left, r)
			continue
		}
		limit := t.batchLimit(r.topic)
		i := find(r)
		var fits bool
		switch {
		case r.alone && i >= 0:
			fits = false
		case i < 0:
			// A new batch; alone in the request, it is sent whatever its size.
			fits = reqSize == 0 || reqSize+batchOverhead+r.size <= t.cfg.maxProduceBytes
		default:
			fits = parts[i].size+r.size <= limit && reqSize+r.size <= t.cfg.maxProduceBytes
		}
		if !fits {
			if full == nil {
				full = make(map[partKey]bool)
			}
			full[k] = true
			left = append(left, r)
			continue
		}
		if !r.state.CompareAndSwap(stQueued, stSending) {
			continue // its context ended
		}
		if i < 0 {
			parts = append(parts, partBatch{topic: r.topic, partition: r.partition, size: batchOverhead})
			reqSize += batchOverhead
			i = len(parts) - 1
		}
		parts[i].recs = append(parts[i].recs, r)
		parts[i].size += r.size
		reqSize += r.size
		if parts[i].size > limit || r.alone {
			// Too large for a batch of the topic: it goes alone, so that
			// the broker's refusal fails it and nothing else.
			if full == nil {
				full = make(map[partKey]bool)
			}
			full[k] = true
		}
	}
	if len(parts) > 0 {
		p.send(parts)
	}
	return left
}

// partKey names a partition of a topic.
type partKey struct {
	topic     string
	partition int32
}

// send sends one produce request for parts and hands every message its
// verdict, or queues it for a retry.
func (p *producer) send(parts []partBatch) {
	t := p.t
	now := time.Now()
	n := 0
	for _, pb := range parts {
		n += len(pb.recs)
	}
	records := make([]protocol.Record, 0, n)
	req := &produce.Request{
		Acks:    int16(t.cfg.acks),
		Timeout: int32(t.cfg.requestTimeout / time.Millisecond),
	}
	for _, pb := range parts {
		start := len(records)
		for _, r := range pb.recs {
			records = append(records, protocol.Record{
				Time:    now,
				Key:     protocol.NewBytes(r.key),
				Value:   protocol.NewBytes(r.value),
				Headers: r.headers,
			})
		}
		rp := produce.RequestPartition{
			Partition: pb.partition,
			RecordSet: protocol.RecordSet{
				Version:    2,
				Attributes: protocol.Attributes(t.cfg.compression),
				Records:    protocol.NewRecordReader(records[start:]...),
			},
		}
		if k := len(req.Topics) - 1; k >= 0 && req.Topics[k].Topic == pb.topic {
			req.Topics[k].Partitions = append(req.Topics[k].Partitions, rp)
		} else {
			req.Topics = append(req.Topics, produce.RequestTopic{Topic: pb.topic, Partitions: []produce.RequestPartition{rp}})
		}
	}

	t.stats.produceRequests.Add(1)
	res, written, err := p.conn.roundTrip(t.ctx, req)
	if err != nil {
		t.stats.produceErrors.Add(1)
		closed := t.ctx.Err() != nil
		if closed {
			err = errClosed
		} else {
			err = fmt.Errorf("syncbridge/kafka: produce to broker %d: %w", p.broker, err)
		}
		for _, pb := range parts {
			for _, r := range pb.recs {
				if written {
					r.written.Store(true)
				}
				switch {
				case closed && !written:
					r.finish(stSending, r.finalErr(errClosedNotSent))
				case closed:
					r.finish(stSending, err)
				default:
					p.retry(r, err)
				}
			}
		}
		if !closed {
			t.refreshMetadata()
		}
		return
	}
	resp := res.(*produce.Response)
	refresh := false
	for _, pb := range parts {
		var code int16 = -2 // no answer
	find:
		for _, rt := range resp.Topics {
			if rt.Topic != pb.topic {
				continue
			}
			for _, rp := range rt.Partitions {
				if rp.Partition == pb.partition {
					code = rp.ErrorCode
					break find
				}
			}
		}
		if code == 0 {
			t.stats.produced.Add(uint64(len(pb.recs)))
			for _, r := range pb.recs {
				r.finish(stSending, nil)
			}
			continue
		}
		t.stats.produceErrors.Add(1)
		var err error
		if code == -2 {
			err = fmt.Errorf("syncbridge/kafka: produce to %s[%d]: no answer from broker %d", pb.topic, pb.partition, p.broker)
		} else {
			err = fmt.Errorf("syncbridge/kafka: produce to %s[%d]: %w", pb.topic, pb.partition, kafka.Error(code))
			if kafka.Error(code) == kafka.MessageSizeTooLarge || kafka.Error(code) == kafka.RecordListTooLarge {
				limit := t.batchLimit(pb.topic)
				if len(pb.recs) == 1 {
					err = fmt.Errorf("%w (a record of about %d bytes; the topic's max.message.bytes is %d)", err, pb.size, limit)
				} else {
					err = fmt.Errorf("%w (a batch of %d records, about %d bytes; the topic's max.message.bytes is %d)", err, len(pb.recs), pb.size, limit)
				}
				t.forgetLimit(pb.topic) // it may have changed
			}
		}
		stored := code == -2 || maybeStored(kafka.Error(code))
		retry := code == -2 || kafka.Error(code).Temporary()
		if tooLarge := kafka.Error(code) == kafka.MessageSizeTooLarge || kafka.Error(code) == kafka.RecordListTooLarge; tooLarge && len(pb.recs) > 1 {
			// The estimate fell short of the broker's measure: every record
			// goes again, alone, so that only one too large alone fails.
			for _, r := range pb.recs {
				r.alone = true
				if r.state.CompareAndSwap(stSending, stQueued) {
					t.router.add(r)
				}
			}
			continue
		}
		if retry {
			refresh = true
		}
		for _, r := range pb.recs {
			if stored {
				r.written.Store(true)
			}
			switch {
			case retry:
				p.retry(r, err)
			case stored:
				r.finish(stSending, err)
			default:
				r.finish(stSending, r.finalErr(notSent(err)))
			}
		}
	}
	if refresh {
		t.refreshMetadata()
	}
}

// retry hands r, which was in a request that failed with a retriable
// error, back to the router for another attempt after a backoff.
func (p *producer) retry(r *pending, err error) {
	r.setLastErr(err)
	r.notBefore = time.Now().Add(p.t.backoff(r.attempt))
	r.attempt++
	if r.state.CompareAndSwap(stSending, stQueued) { // else its context ended
		p.t.router.add(r)
	}
}

// maybeStored reports whether a produce error code leaves open that the
// broker stored the records: an acknowledgement that timed out, records
// appended on the leader but short of replicas, or an error the broker
// does not explain. Every other code refuses the batch before it is
// appended.
func maybeStored(code kafka.Error) bool {
	switch code {
	case kafka.RequestTimedOut, kafka.NotEnoughReplicasAfterAppend, kafka.Unknown,
		kafka.NetworkException, kafka.KafkaStorageError, kafka.DuplicateSequenceNumber:
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
