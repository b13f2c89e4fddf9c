package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	kafka "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/fetch"

	"github.com/syncbridge/syncbridge"
)

// record is one message read from a partition, with its offset.
type record struct {
	msg    syncbridge.Message
	offset int64
}

// cursor is the read position of one partition of a subscription. Only the
// reader goroutine that owns the partition touches offset.
type cursor struct {
	partition int32
	offset    int64 // next offset to fetch

	// paused, when set, says whether the partition's consumer has no room
	// for more records: the partition is left out of fetches until it has.
	paused func() bool
}

// reader reads a set of partitions of one topic: one fetch goroutine per
// leader broker, each sending one fetch request for all its partitions per
// round, and handing what it reads to deliver.
type reader struct {
	t     *Transport
	topic string
	// deliver receives the records read from cur, in offset order. It is
	// called from the fetch goroutine of cur's leader; calls for one
	// partition are sequential.
	deliver func(ctx context.Context, cur *cursor, recs []record)
	// drained, if not nil, is signalled when a paused partition may have
	// room again.
	drained <-chan struct{}
}

// run reads the partitions of curs until ctx ends. After an error it backs
// off, refreshes the metadata and resumes every partition at its cursor.
func (rd *reader) run(ctx context.Context, curs []*cursor) {
	t := rd.t
	for attempt := 0; ctx.Err() == nil; {
		progressed, err := rd.runOnce(ctx, curs)
		if ctx.Err() != nil {
			return
		}
		if progressed {
			attempt = 0
		}
		t.logf(slog.LevelWarn, "syncbridge/kafka: fetch failed, retrying", "topic", rd.topic, "attempt", attempt+1, "err", err)
		if retriable(err) || errors.Is(err, ErrUnknownTopic) {
			t.refreshMetadata()
		}
		if !t.sleep(ctx, t.backoff(attempt)) {
			return
		}
		attempt++
	}
}

// runOnce starts one fetch goroutine per leader and returns the first error
// one of them meets, once all have ended.
func (rd *reader) runOnce(ctx context.Context, curs []*cursor) (progressed bool, err error) {
	m, err := rd.t.topicMeta(ctx, rd.topic)
	if err != nil {
		return false, err
	}
	byLeader := make(map[int32][]*cursor)
	for _, c := range curs {
		leader, ok := m.leaders[c.partition]
		if !ok {
			return false, fmt.Errorf("%w: %s[%d]", ErrUnknownPartition, rd.topic, c.partition)
		}
		if leader < 0 {
			return false, fmt.Errorf("syncbridge/kafka: fetch %s[%d]: %w", rd.topic, c.partition, kafka.LeaderNotAvailable)
		}
		byLeader[leader] = append(byLeader[leader], c)
	}
	if len(byLeader) == 1 {
		for leader, cs := range byLeader {
			return rd.fetchLoop(ctx, leader, cs)
		}
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		err        error
		progressed bool
	}
	results := make(chan result, len(byLeader))
	var wg sync.WaitGroup
	for leader, cs := range byLeader {
		wg.Go(func() {
			p, err := rd.fetchLoop(fctx, leader, cs)
			results <- result{err, p}
		})
	}
	first := <-results
	cancel()
	wg.Wait()
	close(results)
	progressed = first.progressed
	for r := range results {
		progressed = progressed || r.progressed
	}
	return progressed, first.err
}

// fetchLoop fetches the partitions of curs, all led by leader, until ctx
// ends or an error calls for fresh metadata.
func (rd *reader) fetchLoop(ctx context.Context, leader int32, curs []*cursor) (progressed bool, err error) {
	t := rd.t
	conn := &brokerConn{t: t, broker: leader}
	defer conn.close()
	active := make([]*cursor, 0, len(curs))
	var recs []record
	for ctx.Err() == nil {
		active = active[:0]
		for _, c := range curs {
			if c.paused == nil || !c.paused() {
				active = append(active, c)
			}
		}
		if len(active) == 0 {
			select {
			case <-rd.drained:
			case <-ctx.Done():
			}
			continue
		}
		res, err := rd.fetch(ctx, conn, active)
		if err != nil {
			if ctx.Err() != nil {
				return progressed, nil
			}
			return progressed, fmt.Errorf("syncbridge/kafka: fetch from broker %d: %w", leader, err)
		}
		if res.ErrorCode != 0 {
			return progressed, fmt.Errorf("syncbridge/kafka: fetch from broker %d: %w", leader, kafka.Error(res.ErrorCode))
		}
		progressed = true
		for i := range res.Topics {
			rt := &res.Topics[i]
			if rt.Topic != rd.topic {
				continue
			}
			for j := range rt.Partitions {
				rp := &rt.Partitions[j]
				c := findCursor(active, rp.Partition)
				if rp.ErrorCode != 0 {
					t.stats.fetchErrors.Add(1)
					closeRecords(rp.RecordSet.Records)
					if c == nil {
						continue
					}
					kerr := kafka.Error(rp.ErrorCode)
					if kerr == kafka.OffsetOutOfRange {
						if err := rd.reset(ctx, c); err != nil {
							return progressed, err
						}
						continue
					}
					return progressed, fmt.Errorf("syncbridge/kafka: fetch %s[%d] from broker %d: %w", rd.topic, rp.Partition, leader, kerr)
				}
				if c == nil {
					closeRecords(rp.RecordSet.Records)
					continue
				}
				var next int64
				recs, next, err = readRecords(rd.topic, rp.Partition, rp.RecordSet.Records, c.offset, recs[:0])
				if err != nil {
					return progressed, fmt.Errorf("syncbridge/kafka: fetch %s[%d]: %w", rd.topic, rp.Partition, err)
				}
				if len(recs) > 0 {
					t.stats.fetched.Add(uint64(len(recs)))
					rd.deliver(ctx, c, recs)
					clear(recs)
				}
				if next > c.offset {
					c.offset = next
				}
			}
		}
	}
	return progressed, nil
}

func findCursor(curs []*cursor, p int32) *cursor {
	for _, c := range curs {
		if c.partition == p {
			return c
		}
	}
	return nil
}

// fetch sends one fetch request for the partitions of curs.
func (rd *reader) fetch(ctx context.Context, conn *brokerConn, curs []*cursor) (*fetch.Response, error) {
	t := rd.t
	parts := make([]fetch.RequestPartition, len(curs))
	for i, c := range curs {
		parts[i] = fetch.RequestPartition{
			Partition:          c.partition,
			CurrentLeaderEpoch: -1,
			FetchOffset:        c.offset,
			LogStartOffset:     -1,
			PartitionMaxBytes:  int32(t.cfg.fetchMaxBytes),
		}
	}
	req := &fetch.Request{
		ReplicaID:    -1,
		MaxWaitTime:  int32(t.cfg.fetchMaxWait / time.Millisecond),
		MinBytes:     1,
		MaxBytes:     int32(t.cfg.fetchMaxBytes),
		SessionID:    0,
		SessionEpoch: -1, // no fetch session: every request is a full one
		Topics:       []fetch.RequestTopic{{Topic: rd.topic, Partitions: parts}},
	}
	t.stats.fetchRequests.Add(1)
	r, _, err := conn.roundTrip(ctx, req)
	if err != nil {
		if ctx.Err() == nil {
			t.stats.fetchErrors.Add(1)
		}
		return nil, err
	}
	return r.(*fetch.Response), nil
}

// reset moves a cursor whose offset the broker no longer has (or never had)
// to the nearest end of the log: the start when it fell behind retention,
// the end when the log was truncated or recreated below it.
func (rd *reader) reset(ctx context.Context, c *cursor) error {
	first, err := rd.t.listOffsets(ctx, rd.topic, []int32{c.partition}, kafka.FirstOffset)
	if err != nil {
		return err
	}
	last, err := rd.t.listOffsets(ctx, rd.topic, []int32{c.partition}, kafka.LastOffset)
	if err != nil {
		return err
	}
	was := c.offset
	switch {
	case c.offset < first[c.partition]:
		c.offset = first[c.partition]
	case c.offset > last[c.partition]:
		c.offset = last[c.partition]
	}
	rd.t.logf(slog.LevelWarn, "syncbridge/kafka: offset out of range, reset", "topic", rd.topic, "partition", c.partition, "from", was, "to", c.offset)
	return nil
}

// readRecords appends the records of rs at or past offset to recs, copying
// keys and values out of kafka-go's pooled buffers, and returns the offset
// after the last record seen (control records included), or offset if
// none.
func readRecords(topic string, partition int32, rs protocol.RecordReader, offset int64, recs []record) ([]record, int64, error) {
	next := offset
	if rs == nil {
		return recs, next, nil
	}
	var batches []protocol.RecordReader
	if s, ok := rs.(*protocol.RecordStream); ok {
		batches = s.Records
	} else {
		batches = []protocol.RecordReader{rs}
	}
	for bi, b := range batches {
		_, control := b.(*protocol.ControlBatch)
		for {
			r, err := b.ReadRecord()
			if err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				for _, rest := range batches[bi+1:] {
					closeRecords(rest)
				}
				if len(recs) > 0 {
					// Deliver what was read; the next fetch starts after it.
					return recs, next, nil
				}
				return recs, next, err
			}
			if r.Offset < offset || control {
				closeBytes(r.Key)
				closeBytes(r.Value)
				if r.Offset >= next {
					next = r.Offset + 1
				}
				continue
			}
			msg := syncbridge.Message{Topic: topic, Partition: partition, Offset: r.Offset, Time: r.Time}
			msg.Key, err = readBytes(r.Key)
			if err == nil {
				msg.Value, err = readBytes(r.Value)
			} else {
				closeBytes(r.Value)
			}
			if err != nil {
				return recs, next, err
			}
			if len(r.Headers) > 0 {
				// Header values are fresh allocations of the decoder.
				msg.Headers = make([]syncbridge.Header, len(r.Headers))
				for i, h := range r.Headers {
					msg.Headers[i] = syncbridge.Header{Key: h.Key, Value: h.Value}
				}
			}
			recs = append(recs, record{msg: msg, offset: r.Offset})
			next = r.Offset + 1
		}
	}
	return recs, next, nil
}

// readBytes copies b out and releases it; nil stays nil.
func readBytes(b protocol.Bytes) ([]byte, error) {
	if b == nil {
		return nil, nil
	}
	defer b.Close()
	out := make([]byte, b.Len())
	if _, err := io.ReadFull(b, out); err != nil {
		return nil, err
	}
	return out, nil
}

func closeBytes(b protocol.Bytes) {
	if b != nil {
		_ = b.Close()
	}
}

// closeRecords releases the pooled buffers of records nobody reads.
func closeRecords(rs protocol.RecordReader) {
	if rs == nil {
		return
	}
	for {
		r, err := rs.ReadRecord()
		if err != nil {
			return
		}
		closeBytes(r.Key)
		closeBytes(r.Value)
	}
}
