package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	kafka "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/produce"

	"github.com/syncbridge/syncbridge"
)

// pending is one message on its way to a broker. Publish owns it; a produce
// loop holds it between enqueue and the send on done.
type pending struct {
	topic     string
	partition int32
	key       []byte // nil means no key
	value     []byte
	headers   []protocol.Header
	size      int        // estimated bytes on the wire
	done      chan error // capacity 1: the produce loop's verdict
}

// recordOverhead estimates what a record costs on the wire beyond its key,
// value and headers (varints, attributes, deltas).
const recordOverhead = 24

// newPending copies msg: Publish may return on its context's end while the
// produce loop still encodes the message, and the caller may then reuse its
// slices. One allocation holds key, value and header values.
func newPending(msg *syncbridge.Message) *pending {
	n := len(msg.Key) + len(msg.Value)
	for _, h := range msg.Headers {
		n += len(h.Value)
	}
	buf := make([]byte, 0, n)
	p := &pending{topic: msg.Topic, done: make(chan error, 1)}
	if msg.Key != nil {
		buf = append(buf, msg.Key...)
		p.key = buf[:len(msg.Key):len(msg.Key)]
	}
	if msg.Value != nil {
		start := len(buf)
		buf = append(buf, msg.Value...)
		p.value = buf[start:len(buf):len(buf)]
	}
	p.size = recordOverhead + len(msg.Key) + len(msg.Value)
	if len(msg.Headers) > 0 {
		p.headers = make([]protocol.Header, len(msg.Headers))
		for i, h := range msg.Headers {
			start := len(buf)
			buf = append(buf, h.Value...)
			p.headers[i] = protocol.Header{Key: h.Key, Value: buf[start:len(buf):len(buf)]}
			if h.Value == nil {
				p.headers[i].Value = nil
			}
			p.size += 8 + len(h.Key) + len(h.Value)
		}
	}
	return p
}

// Publish writes msg to msg.Topic and returns once the broker acknowledged
// it (from every in-sync replica under the default RequireAll). The
// partition is msg.Partition with msg.UsePartition; else it is chosen by
// the murmur2 hash of msg.Key, as the Java client's default partitioner
// does, so the same key always lands on the same partition; keyless
// messages go round robin. Headers are written as Kafka headers, in order.
//
// Retriable errors (leader moved or unavailable, network errors) are
// retried with fresh metadata until ctx ends. Publish returns by the time
// ctx ends, with an error wrapping ctx.Err(); the message may still have
// been written then. msg is copied: the caller may reuse its slices once
// Publish returns. Safe for concurrent use.
func (t *Transport) Publish(ctx context.Context, msg syncbridge.Message) error {
	if msg.Topic == "" {
		return errors.New("syncbridge/kafka: publish: message without a topic")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("syncbridge/kafka: publish to %q: %w (%w)", msg.Topic, err, syncbridge.ErrNotSent)
	}
	if t.ctx.Err() != nil {
		return errClosedNotSent
	}
	r := newPending(&msg)
	var last error
	for attempt := 0; ; attempt++ {
		err := t.publishOnce(ctx, &msg, r)
		if err == nil {
			return nil
		}
		if cerr := ctx.Err(); cerr != nil {
			if errors.Is(err, cerr) {
				if last == nil {
					return fmt.Errorf("syncbridge/kafka: publish to %q: %w", msg.Topic, err)
				}
				err = last
			}
			return fmt.Errorf("syncbridge/kafka: publish to %q: %w (last error: %w)", msg.Topic, cerr, err)
		}
		if !retriable(err) {
			return err
		}
		last = err
		t.logf(slog.LevelDebug, "syncbridge/kafka: publish retry", "topic", msg.Topic, "attempt", attempt+1, "err", err)
		t.refreshMetadata()
		if !t.sleep(ctx, t.backoff(attempt)) {
			if t.ctx.Err() != nil && ctx.Err() == nil {
				return errClosed
			}
			return fmt.Errorf("syncbridge/kafka: publish to %q: %w (last error: %w)", msg.Topic, ctx.Err(), last)
		}
	}
}

// publishOnce routes r to its partition's leader and waits for the verdict.
func (t *Transport) publishOnce(ctx context.Context, msg *syncbridge.Message, r *pending) error {
	m, err := t.topicMeta(ctx, msg.Topic)
	if err != nil {
		return err
	}
	switch {
	case msg.UsePartition:
		if !m.has(msg.Partition) {
			return fmt.Errorf("%w: %s[%d] (the topic has %d)", ErrUnknownPartition, msg.Topic, msg.Partition, len(m.partitions))
		}
		r.partition = msg.Partition
	case msg.Key != nil:
		r.partition = m.partitions[int(murmur2(msg.Key)&0x7fffffff)%len(m.partitions)]
	default:
		r.partition = m.partitions[int(t.spread.Add(1))%len(m.partitions)]
	}
	leader := m.leaders[r.partition]
	if leader < 0 {
		return fmt.Errorf("syncbridge/kafka: publish to %s[%d]: %w", msg.Topic, r.partition, kafka.LeaderNotAvailable)
	}
	p, err := t.producerFor(leader)
	if err != nil {
		return err
	}
	p.enqueue(r)
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-t.ctx.Done():
		return errClosed
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

	mu    sync.Mutex // protects queue
	queue []*pending
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

func (p *producer) enqueue(r *pending) {
	p.mu.Lock()
	p.queue = append(p.queue, r)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *producer) run() {
	defer p.t.wg.Done()
	defer p.conn.close()
	var spare []*pending
	for {
		select {
		case <-p.wake:
		case <-p.t.ctx.Done():
			p.mu.Lock()
			q := p.queue
			p.queue = nil
			p.mu.Unlock()
			for _, r := range q {
				r.done <- errClosed
			}
			return
		}
		p.mu.Lock()
		batch := p.queue
		p.queue = spare[:0]
		p.mu.Unlock()
		for rest := batch; len(rest) > 0; {
			n, size := 1, rest[0].size
			for n < len(rest) && size+rest[n].size <= p.t.cfg.maxProduceBytes {
				size += rest[n].size
				n++
			}
			p.send(rest[:n])
			rest = rest[n:]
		}
		clear(batch)
		spare = batch
	}
}

// partBatch is the records of one partition in a produce request.
type partBatch struct {
	partition int32
	recs      []*pending
}

type topicBatch struct {
	topic string
	parts []partBatch
}

// send sends one produce request for batch and hands every message its
// verdict.
func (p *producer) send(batch []*pending) {
	var topics []topicBatch
	for _, r := range batch {
		ti := -1
		for i := range topics {
			if topics[i].topic == r.topic {
				ti = i
				break
			}
		}
		if ti < 0 {
			topics = append(topics, topicBatch{topic: r.topic})
			ti = len(topics) - 1
		}
		tb := &topics[ti]
		pi := -1
		for i := range tb.parts {
			if tb.parts[i].partition == r.partition {
				pi = i
				break
			}
		}
		if pi < 0 {
			tb.parts = append(tb.parts, partBatch{partition: r.partition})
			pi = len(tb.parts) - 1
		}
		tb.parts[pi].recs = append(tb.parts[pi].recs, r)
	}

	now := time.Now()
	req := &produce.Request{
		Acks:    int16(p.t.cfg.acks),
		Timeout: int32(p.t.cfg.requestTimeout / time.Millisecond),
		Topics:  make([]produce.RequestTopic, len(topics)),
	}
	records := make([]protocol.Record, len(batch))
	ri := 0
	for i, tb := range topics {
		rt := &req.Topics[i]
		rt.Topic = tb.topic
		rt.Partitions = make([]produce.RequestPartition, len(tb.parts))
		for j, pb := range tb.parts {
			start := ri
			for _, r := range pb.recs {
				records[ri] = protocol.Record{
					Time:    now,
					Key:     protocol.NewBytes(r.key),
					Value:   protocol.NewBytes(r.value),
					Headers: r.headers,
				}
				ri++
			}
			rt.Partitions[j] = produce.RequestPartition{
				Partition: pb.partition,
				RecordSet: protocol.RecordSet{
					Version:    2,
					Attributes: protocol.Attributes(p.t.cfg.compression),
					Records:    protocol.NewRecordReader(records[start:ri]...),
				},
			}
		}
	}

	p.t.stats.produceRequests.Add(1)
	res, err := p.conn.roundTrip(p.t.ctx, req)
	if err != nil {
		p.t.stats.produceErrors.Add(1)
		if p.t.ctx.Err() != nil {
			err = errClosed
		} else {
			err = fmt.Errorf("syncbridge/kafka: produce to broker %d: %w", p.broker, err)
		}
		for _, r := range batch {
			r.done <- err
		}
		return
	}
	resp := res.(*produce.Response)
	for _, tb := range topics {
		for _, pb := range tb.parts {
			err := fmt.Errorf("syncbridge/kafka: produce to %s[%d]: no answer from broker %d", tb.topic, pb.partition, p.broker)
		find:
			for _, rt := range resp.Topics {
				if rt.Topic != tb.topic {
					continue
				}
				for _, rp := range rt.Partitions {
					if rp.Partition == pb.partition {
						err = nil
						if rp.ErrorCode != 0 {
							p.t.stats.produceErrors.Add(1)
							err = fmt.Errorf("syncbridge/kafka: produce to %s[%d]: %w", tb.topic, pb.partition, kafka.Error(rp.ErrorCode))
						}
						break find
					}
				}
			}
			if err == nil {
				p.t.stats.produced.Add(uint64(len(pb.recs)))
			}
			for _, r := range pb.recs {
				r.done <- err
			}
		}
	}
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
