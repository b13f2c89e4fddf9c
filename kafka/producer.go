package kafka

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/initproducerid"
	"github.com/segmentio/kafka-go/protocol/produce"
	"github.com/segmentio/kafka-go/protocol/rawproduce"
)

// The produce loops and the idempotent producer.
//
// Under RequireAll the Transport is an idempotent producer: it gets a
// producer ID from the cluster (InitProducerID) and numbers the records of
// each partition; the broker writes a batch whose numbers it has already
// seen only once. For that, a batch that may have been written is only
// ever sent again as it is (same records, same numbers), and a partition
// has at most one batch in progress: its other records wait until that
// batch is acknowledged or has failed. Retries therefore never write a
// record twice, and keep the order of a partition's records.

// batch is the records of one partition that leave in one record batch.
type batch struct {
	topic     string
	partition int32
	recs      []*pending
	size      int // estimated bytes, batchOverhead included
	alone     bool

	// Set when sequenced; kept across retries once written.
	pid       int64 // producer ID; -1 without idempotence
	epoch     int16
	baseSeq   int32
	pidGen    uint64 // the producer ID generation pid belongs to
	sequenced bool

	written   bool  // an attempt may have stored it: resend only as it is
	ts        int64 // the records' timestamp in ms, fixed at the first send
	attempt   int
	notBefore time.Time
	failed    int32 // the broker whose failure made it wait for a retry, -1 if none
}

// partSeq is a partition's producer state.
type partSeq struct {
	next int32      // next sequence number
	busy *batch     // the batch in progress, nil when none
	held []*pending // records waiting for busy to end
}

// Producer ID states.
const (
	pidUnknown  = iota // not asked for yet (or reset)
	pidOK              // pid and epoch are valid
	pidDisabled        // no idempotence: acks=1, or the cluster refused
)

// idempotence is the Transport's producer ID and per-partition sequences.
type idempotence struct {
	initMu sync.Mutex // held during InitProducerID

	mu    sync.Mutex // protects the fields below
	state int
	pid   int64
	epoch int16
	gen   uint64 // bumped whenever pid changes
	seqs  map[partKey]*partSeq
}

// partKey names a partition of a topic.
type partKey struct {
	topic     string
	partition int32
}

// ensurePID gets a producer ID unless there is one, or idempotence is off.
func (t *Transport) ensurePID(ctx context.Context) error {
	id := &t.idem
	id.mu.Lock()
	state := id.state
	id.mu.Unlock()
	if state != pidUnknown {
		return nil
	}
	id.initMu.Lock()
	defer id.initMu.Unlock()
	id.mu.Lock()
	state = id.state
	id.mu.Unlock()
	if state != pidUnknown {
		return nil
	}
	r, err := t.ctlAny(ctx, &initproducerid.Request{TransactionTimeoutMs: -1, ProducerID: -1, ProducerEpoch: -1})
	if err != nil {
		return fmt.Errorf("syncbridge/kafka: init producer ID: %w", err)
	}
	res := r.(*initproducerid.Response)
	if res.ErrorCode != 0 {
		kerr := Error(res.ErrorCode)
		if kerr.Retriable() {
			return fmt.Errorf("syncbridge/kafka: init producer ID: %w", kerr)
		}
		t.logf(slog.LevelWarn, "syncbridge/kafka: the cluster refused a producer ID: publishing without idempotence (a retry may write a message twice)", "err", kerr)
		id.mu.Lock()
		id.state = pidDisabled
		id.mu.Unlock()
		return nil
	}
	id.mu.Lock()
	id.state, id.pid, id.epoch = pidOK, res.ProducerID, res.ProducerEpoch
	id.gen++
	id.mu.Unlock()
	t.logf(slog.LevelDebug, "syncbridge/kafka: producer ID", "id", res.ProducerID, "epoch", res.ProducerEpoch)
	return nil
}

// resetPID drops producer ID gen after the broker said it lost track of it
// (or of its sequences): the next batch asks for a new one, and sequences
// start again at 0.
func (t *Transport) resetPID(gen uint64) {
	id := &t.idem
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.gen != gen || id.state != pidOK {
		return
	}
	id.state = pidUnknown
	for _, ps := range id.seqs {
		ps.next = 0
	}
}

// partSeqLocked returns the state of partition k. t.idem.mu must be held.
func (t *Transport) partSeqLocked(k partKey) *partSeq {
	ps := t.idem.seqs[k]
	if ps == nil {
		if t.idem.seqs == nil {
			t.idem.seqs = make(map[partKey]*partSeq)
		}
		ps = new(partSeq)
		t.idem.seqs[k] = ps
	}
	return ps
}

// sequence gives b its producer ID and sequence numbers, unless it has
// them from the current producer ID. t.idem.mu must be held.
func (t *Transport) sequenceLocked(b *batch) {
	id := &t.idem
	// A batch an attempt may have written keeps its producer ID and
	// numbers even after a new producer ID was taken: only under them can
	// the broker recognise a copy it already stored.
	if b.sequenced && (b.pid < 0 || b.pidGen == id.gen || b.written) {
		return
	}
	b.sequenced = true
	if id.state != pidOK {
		b.pid, b.epoch, b.baseSeq = -1, -1, -1
		return
	}
	ps := t.partSeqLocked(partKey{b.topic, b.partition})
	b.pid, b.epoch, b.pidGen = id.pid, id.epoch, id.gen
	b.baseSeq = ps.next
	ps.next = int32((int64(ps.next) + int64(len(b.recs))) % (1 << 31))
}

// endBatch ends b's hold on its partition and returns the records that
// waited for it. undo gives its sequence numbers back: it was certainly not
// written.
func (t *Transport) endBatch(b *batch, undo bool) []*pending {
	id := &t.idem
	id.mu.Lock()
	defer id.mu.Unlock()
	ps := id.seqs[partKey{b.topic, b.partition}]
	if ps == nil || ps.busy != b {
		return nil
	}
	if undo && b.sequenced && b.pid >= 0 && b.pidGen == id.gen && id.state == pidOK {
		ps.next = b.baseSeq
	}
	ps.busy = nil
	held := ps.held
	ps.held = nil
	return held
}

// release hands records that waited for a batch back to the router.
func (t *Transport) release(held []*pending) {
	for _, r := range held {
		if r.state.Load() == stQueued {
			t.router.add(r)
		}
	}
}

// fail ends every record of b, which is queued (not in a request), with
// err, and releases its partition. A batch that may have been written
// leaves the partition's sequence numbers in doubt: the producer ID is
// dropped.
func (b *batch) fail(t *Transport, err error) {
	for _, r := range b.recs {
		if b.written {
			r.finish(stQueued, err)
		} else {
			r.finish(stQueued, r.finalErr(notSent(err)))
		}
	}
	if b.written {
		t.resetPID(b.pidGen)
	}
	t.release(t.endBatch(b, !b.written))
}

// producer is the produce loop of one broker. At most one produce request
// is in flight per broker: messages that arrive meanwhile wait in queue and
// leave together in the next request.
type producer struct {
	t      *Transport
	broker int32
	wake   chan struct{} // capacity 1: queue is not empty
	conn   brokerConn    // the loop's own connection
	enc    []byte        // the loop's encoding buffer, reused by send

	mu      sync.Mutex // protects queue, batches, closed
	queue   []*pending
	batches []*batch // batches being retried
	closed  bool
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

func (p *producer) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
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
	p.signal()
	return true
}

// enqueueBatch queues a batch being retried; false once the loop has
// stopped.
func (p *producer) enqueueBatch(b *batch) bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	p.batches = append(p.batches, b)
	p.mu.Unlock()
	p.signal()
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
			q, bs := p.queue, p.batches
			p.queue, p.batches = nil, nil
			p.mu.Unlock()
			for _, r := range q {
				r.finish(stQueued, r.finalErr(errClosedNotSent))
			}
			for _, b := range bs {
				b.fail(t, errClosed)
			}
			return
		}
		p.mu.Lock()
		queue, bs := p.queue, p.batches
		p.queue, p.batches = spare[:0], nil
		p.mu.Unlock()
		rest = rest[:0]
		for _, r := range queue {
			if r.state.Load() == stQueued { // else its context ended
				rest = append(rest, r)
			}
		}
		for len(rest) > 0 || len(bs) > 0 {
			if t.ctx.Err() != nil {
				for _, r := range rest {
					r.finish(stQueued, r.finalErr(errClosedNotSent))
				}
				for _, b := range bs {
					b.fail(t, errClosed)
				}
				break
			}
			if t.cfg.acks == RequireAll {
				if err := t.ensurePID(t.ctx); err != nil {
					// Nothing was sent: everything waits for a retry.
					t.logf(slog.LevelWarn, "syncbridge/kafka: produce retry", "broker", p.broker, "err", err)
					for _, r := range rest {
						t.router.retryLater(r, err)
					}
					for _, b := range bs {
						p.retryBatch(b)
					}
					break
				}
			}
			rest, bs = p.sendSome(rest, bs)
		}
		clear(queue)
		spare = queue
	}
}

// sendSome sends one produce request: the batches being retried first, as
// they are, then as much of rest, in order, as fits the limits. It returns
// what is left for the next request. A partition's records keep their
// order: once one of them waits for the next request, the ones after it
// wait too; records of a partition with a batch in progress elsewhere wait
// for it to end. A record too large for its topic's batches goes alone, so
// that the broker's refusal fails it and nothing else.
func (p *producer) sendSome(rest []*pending, bs []*batch) ([]*pending, []*batch) {
	t := p.t
	var (
		parts   []*batch
		leftB   []*batch
		left    = rest[:0:0]
		reqSize int
		full    map[partKey]bool // partitions closed for this request
	)
	find := func(topic string, partition int32) int {
		for i, b := range parts {
			if b.partition == partition && b.topic == topic {
				return i
			}
		}
		return -1
	}
	closePart := func(k partKey) {
		if full == nil {
			full = make(map[partKey]bool)
		}
		full[k] = true
	}
	for _, b := range bs {
		if (reqSize > 0 && reqSize+b.size > t.cfg.maxProduceBytes) || find(b.topic, b.partition) >= 0 {
			leftB = append(leftB, b)
			continue
		}
		parts = append(parts, b)
		reqSize += b.size
		closePart(partKey{b.topic, b.partition})
		for _, r := range b.recs {
			// A record whose context ended is sent with its batch all the
			// same (the batch may have been written as it is); its done
			// was called already.
			r.state.CompareAndSwap(stQueued, stSending)
		}
	}

	id := &t.idem
	id.mu.Lock()
	for _, r := range rest {
		k := partKey{r.topic, r.partition}
		if full[k] {
			left = append(left, r)
			continue
		}
		limit := t.batchLimit(r.topic)
		i := find(r.topic, r.partition)
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
			closePart(k)
			left = append(left, r)
			continue
		}
		var ps *partSeq
		if i < 0 {
			ps = t.partSeqLocked(k)
			if ps.busy != nil {
				// A batch of the partition is in progress (being retried,
				// or at another broker): r waits for it.
				ps.held = append(ps.held, r)
				closePart(k)
				continue
			}
		}
		if !r.state.CompareAndSwap(stQueued, stSending) {
			continue // its context ended
		}
		if i < 0 {
			b := &batch{topic: r.topic, partition: r.partition, size: batchOverhead, failed: -1}
			ps.busy = b
			parts = append(parts, b)
			reqSize += batchOverhead
			i = len(parts) - 1
		}
		b := parts[i]
		b.recs = append(b.recs, r)
		b.size += r.size
		reqSize += r.size
		if b.size > limit || r.alone {
			b.alone = true
			closePart(k)
		}
	}
	for _, b := range parts {
		t.sequenceLocked(b)
	}
	id.mu.Unlock()
	if len(parts) > 0 {
		p.send(parts)
	}
	return left, leftB
}

// maxKeptEncoding bounds the encoding buffer a produce loop keeps between
// requests.
const maxKeptEncoding = 1 << 20

// send sends one produce request for parts and hands every batch its
// verdict.
func (p *producer) send(parts []*batch) {
	t := p.t
	now := time.Now().UnixMilli()
	req := &rawproduce.Request{
		Acks:    int16(t.cfg.acks),
		Timeout: int32(t.cfg.requestTimeout / time.Millisecond),
	}
	// The batches are encoded into the loop's buffer, free again once the
	// request is written (a retry encodes its batch again).
	buf := p.enc[:0]
	defer func() {
		if cap(buf) <= maxKeptEncoding {
			p.enc = buf[:0]
		}
	}()
	for _, b := range parts {
		if b.ts == 0 {
			b.ts = now
		}
		start := len(buf)
		var err error
		buf, err = appendBatch(buf, b, t.cfg.compression)
		enc := buf[start:]
		if err != nil {
			// Only a compressor can fail here: nothing was sent.
			err = fmt.Errorf("syncbridge/kafka: encode batch for %s[%d]: %w", b.topic, b.partition, err)
			for _, r := range b.recs {
				r.finish(stSending, r.finalErr(notSent(err)))
			}
			t.release(t.endBatch(b, true))
			continue
		}
		rp := rawproduce.RequestPartition{Partition: b.partition, RecordSet: protocol.RawRecordSet{Reader: bytes.NewReader(enc)}}
		if k := len(req.Topics) - 1; k >= 0 && req.Topics[k].Topic == b.topic {
			req.Topics[k].Partitions = append(req.Topics[k].Partitions, rp)
		} else {
			req.Topics = append(req.Topics, rawproduce.RequestTopic{Topic: b.topic, Partitions: []rawproduce.RequestPartition{rp}})
		}
	}
	if len(req.Topics) == 0 {
		return
	}

	t.stats.produceRequests.Add(1)
	sent := time.Now()
	res, written, err := p.conn.roundTrip(t.ctx, req)
	if d := time.Since(sent); d > time.Second {
		t.logf(slog.LevelDebug, "syncbridge/kafka: slow produce request", "broker", p.broker, "took", d, "batches", len(parts), "err", err)
	}
	if err != nil {
		t.stats.produceErrors.Add(1)
		t.logf(slog.LevelDebug, "syncbridge/kafka: produce request failed", "broker", p.broker, "batches", len(parts), "written", written, "err", err)
		closed := t.ctx.Err() != nil
		if closed {
			err = errClosed
		} else {
			err = fmt.Errorf("syncbridge/kafka: produce to broker %d: %w", p.broker, err)
			t.markDown(p.broker)
			t.refreshMetadata()
		}
		for _, b := range parts {
			if written {
				b.setWritten()
			}
			switch {
			case closed:
				b.end(t, err, false)
			default:
				p.retry(b, err)
			}
		}
		return
	}
	t.markUp(p.broker)
	resp := res.(*produce.Response)
	refresh := false
	for _, b := range parts {
		var code int16 = -2 // no answer
	find:
		for _, rt := range resp.Topics {
			if rt.Topic != b.topic {
				continue
			}
			for _, rp := range rt.Partitions {
				if rp.Partition == b.partition {
					code = rp.ErrorCode
					break find
				}
			}
		}
		kerr := Error(code)
		if t.log != nil && (code == 0 || kerr == errDuplicateSequenceNumber) {
			t.logf(slog.LevelDebug-4, "syncbridge/kafka: produced", "broker", p.broker, "topic", b.topic, "partition", b.partition, "code", code, "records", len(b.recs), "pid", b.pid, "seq", b.baseSeq, "offset", baseOffsetOf(resp, b), "attempt", b.attempt, "written", b.written)
		}
		if code == 0 || kerr == errDuplicateSequenceNumber {
			t.stats.produced.Add(uint64(len(b.recs)))
			for _, r := range b.recs {
				r.finish(stSending, nil)
			}
			t.release(t.endBatch(b, false))
			continue
		}
		t.stats.produceErrors.Add(1)
		t.logf(slog.LevelDebug, "syncbridge/kafka: produce error", "broker", p.broker, "topic", b.topic, "partition", b.partition, "code", code, "records", len(b.recs), "pid", b.pid, "seq", b.baseSeq, "attempt", b.attempt, "written", b.written)
		var err error
		if code == -2 {
			err = fmt.Errorf("syncbridge/kafka: produce to %s[%d]: no answer from broker %d", b.topic, b.partition, p.broker)
		} else {
			err = fmt.Errorf("syncbridge/kafka: produce to %s[%d]: %w", b.topic, b.partition, kerr)
		}
		tooLarge := kerr == MessageTooLarge || kerr == RecordListTooLarge
		if tooLarge {
			limit := t.batchLimit(b.topic)
			if len(b.recs) == 1 {
				err = fmt.Errorf("%w (a record of about %d bytes; the topic's max.message.bytes is %d)", err, b.size, limit)
			} else {
				err = fmt.Errorf("%w (a batch of %d records, about %d bytes; the topic's max.message.bytes is %d)", err, len(b.recs), b.size, limit)
			}
			t.forgetLimit(b.topic) // it may have changed
		}
		switch {
		case tooLarge && len(b.recs) > 1 && !b.written:
			// The estimate fell short of the broker's measure: every record
			// goes again, alone, so that only one too large alone fails.
			for _, r := range b.recs {
				r.alone = true
			}
			p.dissolve(b, err, true)
		case code == -2 || maybeStored(kerr):
			b.setWritten()
			refresh = refresh || kerr.Retriable()
			if code == -2 || kerr.Retriable() {
				p.retry(b, err)
			} else {
				b.end(t, err, false)
			}
		case kerr == errUnknownProducerID || kerr == errOutOfOrderSequenceNumber ||
			kerr == errInvalidProducerEpoch || kerr == errProducerFenced || kerr == errInvalidProducerIDMapping:
			// The broker lost track of the producer ID or of its numbers:
			// a new producer ID. A batch certainly not written goes again
			// under it; one that an earlier attempt may have written ends
			// here, as maybe written: under a new producer ID the broker
			// could not tell it from the copy it may have.
			t.logf(slog.LevelWarn, "syncbridge/kafka: producer ID reset", "topic", b.topic, "partition", b.partition, "written", b.written, "err", kerr)
			t.resetPID(b.pidGen)
			if b.written {
				b.end(t, fmt.Errorf("%w (an earlier attempt may have written it: sent under a new producer ID, it could be written twice)", err), false)
			} else {
				p.retry(b, err)
			}
		case kerr.Retriable():
			refresh = true
			p.retry(b, err)
		default:
			b.end(t, err, true)
		}
	}
	if refresh {
		t.refreshMetadata()
	}
}

// markDown records that broker just failed a produce request: keyless
// messages go to partitions led by other brokers for MetadataMaxAge, or
// until it answers again.
func (t *Transport) markDown(broker int32) {
	t.downMu.Lock()
	if t.down == nil {
		t.down = make(map[int32]time.Time)
	}
	if _, ok := t.down[broker]; !ok {
		t.downN.Add(1)
	}
	t.down[broker] = time.Now().Add(t.cfg.metadataMaxAge)
	t.downMu.Unlock()
}

// markUp records that broker answered a produce request.
func (t *Transport) markUp(broker int32) {
	if t.downN.Load() == 0 {
		return
	}
	t.downMu.Lock()
	if _, ok := t.down[broker]; ok {
		delete(t.down, broker)
		t.downN.Add(-1)
	}
	t.downMu.Unlock()
}

// isDown reports whether broker failed a produce request lately.
func (t *Transport) isDown(broker int32) bool {
	if t.downN.Load() == 0 {
		return false
	}
	t.downMu.Lock()
	defer t.downMu.Unlock()
	until, ok := t.down[broker]
	return ok && time.Now().Before(until)
}

// setWritten records that an attempt may have stored b.
func (b *batch) setWritten() {
	b.written = true
	for _, r := range b.recs {
		r.written.Store(true)
	}
}

// end ends b, in a request that failed for good, with err: not sent if
// refused (notStored) and never written before.
func (b *batch) end(t *Transport, err error, refused bool) {
	for _, r := range b.recs {
		if refused {
			r.finish(stSending, r.finalErr(notSent(err)))
		} else {
			r.finish(stSending, err)
		}
	}
	if b.written {
		// Its sequence numbers may or may not be used up at the broker.
		t.resetPID(b.pidGen)
	}
	t.release(t.endBatch(b, !b.written))
}

// retry sends b again after a backoff: as it is if it may have been
// written, else its records are batched anew.
func (p *producer) retry(b *batch, err error) {
	b.failed = p.broker
	for _, r := range b.recs {
		r.failed = p.broker
	}
	if b.written {
		for _, r := range b.recs {
			r.setLastErr(err)
			r.state.CompareAndSwap(stSending, stQueued)
		}
		p.retryBatch(b)
		return
	}
	p.dissolve(b, err, false)
}

// retryBatch queues b at the router, after a backoff.
func (p *producer) retryBatch(b *batch) {
	b.notBefore = time.Now().Add(p.t.backoff(b.attempt))
	b.attempt++
	p.t.router.addBatch(b)
}

// dissolve sends b's records (certainly not written) back to the router,
// to be batched anew: at once with now, else after a backoff. The records
// that waited for b follow them.
func (p *producer) dissolve(b *batch, err error, now bool) {
	t := p.t
	var requeued []*pending
	for _, r := range b.recs {
		if r.key == nil && !r.usePartition && !r.written.Load() {
			// Certainly not written, and no key: it may go to another
			// partition, one whose leader answers.
			r.partition = -1
		}
		if r.state.CompareAndSwap(stSending, stQueued) { // else its context ended
			requeued = append(requeued, r)
		}
	}
	held := t.endBatch(b, true)
	for _, r := range append(requeued, held...) {
		if r.state.Load() != stQueued {
			continue
		}
		if now {
			t.router.add(r)
		} else {
			t.router.retryLater(r, err)
		}
	}
}

// baseOffsetOf returns the offset the broker gave b's first record.
func baseOffsetOf(resp *produce.Response, b *batch) int64 {
	for _, rt := range resp.Topics {
		if rt.Topic != b.topic {
			continue
		}
		for _, rp := range rt.Partitions {
			if rp.Partition == b.partition {
				return rp.BaseOffset
			}
		}
	}
	return -1
}
