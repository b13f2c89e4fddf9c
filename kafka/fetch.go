package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

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
	fails     int   // times handed back by a failing leader since its last fetch
	// failed is the leader that last handed the partition back, and
	// retryAt when the partition may go to it again; a different leader
	// gets it at once. Set by the fetch goroutine that hands it back, read
	// by the supervisor.
	failed  int32
	retryAt time.Time

	// paused, when set, says whether the partition's consumer has no room
	// for more records: the partition is left out of fetches until it has.
	paused func() bool
}

// reader reads a set of partitions of one topic: one fetch goroutine per
// leader broker, each sending one fetch request for all its partitions per
// round, and handing what it reads to deliver. A supervisor hands the
// partitions to the fetch goroutines of their leaders, and takes back
// those whose leader failed or moved, to hand them to their new leaders
// once the metadata says who they are: one broker's failure never stalls
// the fetches from the others.
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
	// all says the reader reads every partition of the topic: partitions
	// added to the topic are read too, from their start, once the metadata
	// (refreshed every MetadataMaxAge) shows them.
	all bool
}

// fetcher is the fetch goroutine of one leader and the partitions it
// reads.
type fetcher struct {
	leader int32
	mu     sync.Mutex // protects curs, stopped
	curs   []*cursor
	stop   bool // the goroutine is ending: it takes no more partitions
}

// add gives c to the fetcher; false if it is ending.
func (f *fetcher) add(c *cursor) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stop {
		return false
	}
	f.curs = append(f.curs, c)
	return true
}

// run reads the partitions of curs until ctx ends.
func (rd *reader) run(ctx context.Context, curs []*cursor) {
	t := rd.t
	var (
		wg       sync.WaitGroup
		fetchers = make(map[int32]*fetcher)
		orphans  = make(chan []*cursor, 16)
		pending  = slices.Clone(curs)
		known    = make(map[int32]bool, len(curs))
		fails    int // failed metadata lookups in a row
	)
	defer wg.Wait()
	for _, c := range curs {
		known[c.partition] = true
	}
	var tick <-chan time.Time
	if rd.all {
		tk := time.NewTicker(t.cfg.metadataMaxAge)
		defer tk.Stop()
		tick = tk.C
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case o := <-orphans:
			pending = append(pending, o...)
			now := time.Now()
			for _, c := range o {
				c.fails++
				c.retryAt = now.Add(t.backoff(c.fails - 1))
			}
			t.refreshMetadata()
			// Their leader just failed: they go back to it after a backoff,
			// and to a new leader as soon as the metadata names one.
			timer.Reset(rd.nextLook(pending))
			continue
		case <-tick:
			added, err := rd.newPartitions(ctx, known)
			if err != nil {
				t.logf(slog.LevelWarn, "syncbridge/kafka: looking for new partitions", "topic", rd.topic, "err", err)
			}
			if len(added) == 0 {
				continue
			}
			pending = append(pending, added...)
		case <-timer.C:
		}
		if len(pending) == 0 {
			continue
		}
		m, err := t.topicMeta(ctx, rd.topic)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			fails++
			t.logf(slog.LevelWarn, "syncbridge/kafka: fetch metadata, retrying", "topic", rd.topic, "err", err)
			if retriable(err) || errors.Is(err, ErrUnknownTopic) {
				t.refreshMetadata()
			}
			timer.Reset(t.backoff(fails - 1))
			continue
		}
		still := pending[:0]
		now := time.Now()
		for _, c := range pending {
			leader, ok := m.leaders[c.partition]
			switch {
			case !ok || leader < 0:
				// No leader for it yet.
				if !now.Before(c.retryAt) {
					c.fails++
					c.retryAt = now.Add(t.backoff(c.fails - 1))
				}
				still = append(still, c)
				continue
			case leader == c.failed && now.Before(c.retryAt):
				// The leader that just failed it: after the backoff.
				still = append(still, c)
				continue
			}
			if c.failed >= 0 && leader != c.failed {
				// A new leader: its backoff starts afresh, should it
				// refuse the partition too (it may not have applied its
				// leadership yet).
				c.fails = 0
			}
			c.failed = -1
			if f := fetchers[leader]; f != nil && f.add(c) {
				continue
			}
			f := &fetcher{leader: leader, curs: []*cursor{c}}
			fetchers[leader] = f
			wg.Go(func() { rd.fetchLoop(ctx, f, orphans) })
		}
		pending = still
		fails = 0
		if len(pending) > 0 {
			t.refreshTopic(rd.topic)
			timer.Reset(rd.nextLook(pending))
		}
	}
}

// nextLook returns when the supervisor looks at the metadata again for
// the partitions of pending, which wait for a leader: every leaderPoll,
// so that a partition goes to its new leader as soon as the metadata names
// one, and no later than the first backoff's end.
func (rd *reader) nextLook(pending []*cursor) time.Duration {
	d := rd.t.leaderPoll()
	now := time.Now()
	for _, c := range pending {
		d = min(d, max(c.retryAt.Sub(now), 0))
	}
	return d
}

// newPartitions returns cursors for the partitions of the topic not in
// known, at their first offset, and adds them to known.
func (rd *reader) newPartitions(ctx context.Context, known map[int32]bool) ([]*cursor, error) {
	m, err := rd.t.topicMeta(ctx, rd.topic)
	if err != nil {
		return nil, err
	}
	var add []int32
	for _, p := range m.partitions {
		if !known[p] {
			add = append(add, p)
		}
	}
	if len(add) == 0 {
		return nil, nil
	}
	// Everything in a partition added after the subscription started was
	// published after it started: read it from its start.
	first, err := rd.t.listOffsets(ctx, rd.topic, add, firstOffset)
	if err != nil {
		return nil, err
	}
	curs := make([]*cursor, len(add))
	for i, p := range add {
		known[p] = true
		curs[i] = &cursor{partition: p, offset: first[p]}
	}
	rd.t.logf(slog.LevelInfo, "syncbridge/kafka: reading new partitions", "topic", rd.topic, "partitions", add)
	return curs, nil
}

// fetchLoop fetches the partitions of f from its leader until ctx ends.
// A partition the leader no longer leads (or knows) goes back to the
// supervisor through orphans; after an error of the whole request, every
// partition goes back and the loop ends.
func (rd *reader) fetchLoop(ctx context.Context, f *fetcher, orphans chan<- []*cursor) {
	t := rd.t
	conn := &brokerConn{t: t, broker: f.leader}
	defer conn.close()
	// giveUp hands partitions back to the supervisor.
	giveUp := func(cs []*cursor) {
		if len(cs) == 0 {
			return
		}
		for _, c := range cs {
			c.failed = f.leader
		}
		select {
		case orphans <- cs:
		case <-ctx.Done():
		}
	}
	// end stops the loop, handing every partition back.
	end := func(err error) {
		f.mu.Lock()
		f.stop = true
		cs := f.curs
		f.curs = nil
		f.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			t.logf(slog.LevelWarn, "syncbridge/kafka: fetch failed; its partitions go to their leaders", "topic", rd.topic, "broker", f.leader, "partitions", len(cs), "err", err)
		}
		if ctx.Err() == nil {
			giveUp(cs)
		}
	}
	var (
		active []*cursor
		recs   []record
		gone   []*cursor
		fr     = &rawFetch{clientID: t.cfg.clientID}
		dec    decoder
	)
	for ctx.Err() == nil {
		f.mu.Lock()
		active = active[:0]
		n := len(f.curs)
		for _, c := range f.curs {
			if c.paused == nil || !c.paused() {
				active = append(active, c)
			}
		}
		f.mu.Unlock()
		if n == 0 {
			end(nil)
			return
		}
		if len(active) == 0 {
			tm := time.NewTimer(t.cfg.fetchMaxWait)
			select {
			case <-rd.drained:
			case <-tm.C:
			case <-ctx.Done():
			}
			tm.Stop()
			continue
		}
		res, err := rd.fetch(ctx, conn, fr, active)
		if err != nil {
			if ctx.Err() != nil {
				end(nil)
				return
			}
			end(fmt.Errorf("syncbridge/kafka: fetch from broker %d: %w", f.leader, err))
			return
		}
		if res.errorCode != 0 {
			end(fmt.Errorf("syncbridge/kafka: fetch from broker %d: %w", f.leader, Error(res.errorCode)))
			return
		}
		gone = gone[:0]
		dec.frame = res.frameSize
		for j := range res.parts {
			rp := &res.parts[j]
			if string(rp.topic) != rd.topic {
				continue
			}
			c := findCursor(active, rp.partition)
			if rp.errorCode != 0 {
				t.stats.fetchErrors.Add(1)
				if c == nil {
					continue
				}
				kerr := Error(rp.errorCode)
				if kerr == errOffsetOutOfRange {
					if err := rd.reset(ctx, c); err != nil {
						t.logf(slog.LevelWarn, "syncbridge/kafka: offset reset failed", "topic", rd.topic, "partition", c.partition, "err", err)
						gone = append(gone, c)
					}
					continue
				}
				// Not the leader any more, unknown partition, and the
				// like: its new leader reads it.
				t.logf(slog.LevelInfo, "syncbridge/kafka: partition moves", "topic", rd.topic, "partition", c.partition, "broker", f.leader, "err", kerr)
				gone = append(gone, c)
				continue
			}
			if c == nil {
				continue
			}
			c.fails = 0
			var next int64
			recs, next, err = dec.decodeRecords(rd.topic, rp.partition, rp.records, c.offset, recs[:0])
			if err != nil {
				t.logf(slog.LevelWarn, "syncbridge/kafka: bad records", "topic", rd.topic, "partition", c.partition, "err", err)
				gone = append(gone, c)
				continue
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
		if len(gone) > 0 {
			f.mu.Lock()
			f.curs = slices.DeleteFunc(f.curs, func(c *cursor) bool { return slices.Contains(gone, c) })
			f.mu.Unlock()
			giveUp(slices.Clone(gone))
		}
	}
	end(nil)
}

func findCursor(curs []*cursor, p int32) *cursor {
	for _, c := range curs {
		if c.partition == p {
			return c
		}
	}
	return nil
}

// fetch sends one fetch request for the partitions of curs, with fr (the
// fetch loop's, reused), and returns its response.
func (rd *reader) fetch(ctx context.Context, conn *brokerConn, fr *rawFetch, curs []*cursor) (*fetchResponse, error) {
	t := rd.t
	topics := fr.req.Topics
	if len(topics) == 0 {
		topics = make([]fetch.RequestTopic, 1)
	}
	parts := topics[0].Partitions[:0]
	for _, c := range curs {
		parts = append(parts, fetch.RequestPartition{
			Partition:          c.partition,
			CurrentLeaderEpoch: -1,
			FetchOffset:        c.offset,
			LogStartOffset:     -1,
			PartitionMaxBytes:  int32(t.cfg.fetchMaxBytes),
		})
	}
	topics[0] = fetch.RequestTopic{Topic: rd.topic, Partitions: parts}
	fr.req = fetch.Request{
		ReplicaID:    -1,
		MaxWaitTime:  int32(t.cfg.fetchMaxWait / time.Millisecond),
		MinBytes:     1,
		MaxBytes:     int32(t.cfg.fetchMaxBytes),
		SessionID:    0,
		SessionEpoch: -1, // no fetch session: every request is a full one
		Topics:       topics,
	}
	t.stats.fetchRequests.Add(1)
	r, _, err := conn.roundTrip(ctx, fr)
	if err != nil {
		if ctx.Err() == nil {
			t.stats.fetchErrors.Add(1)
		}
		return nil, err
	}
	return r.(*fetchResponse), nil
}

// reset moves a cursor whose offset the broker no longer has (or never had)
// to the nearest end of the log: the start when it fell behind retention,
// the end when the log was truncated or recreated below it.
func (rd *reader) reset(ctx context.Context, c *cursor) error {
	first, err := rd.t.listOffsets(ctx, rd.topic, []int32{c.partition}, firstOffset)
	if err != nil {
		return err
	}
	last, err := rd.t.listOffsets(ctx, rd.topic, []int32{c.partition}, lastOffset)
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
			next = max(next, r.Offset+1) // never back, should offsets go back (malformed)
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
