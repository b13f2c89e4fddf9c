package kafka

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syncbridge/syncbridge"
)

// workerQueue is how many fetched batches a partition of a group
// subscription may hold before its handler catches up; past it the
// partition is left out of fetches.
const workerQueue = 4

// groupSub is a running group subscription: a member of the consumer
// group (membership.go), this package's reader for fetching, one
// goroutine per assigned partition for the handler, and a committer.
type groupSub struct {
	t          *Transport
	group      string
	topic      string
	h          syncbridge.AckHandler
	concurrent bool            // cfg.Concurrent: handler calls may overlap
	ctx        context.Context // ends on Close; the handler's context
	cancel     context.CancelFunc
	done       chan struct{} // closed when every goroutine has ended
	once       sync.Once
}

func (t *Transport) subscribeGroup(cfg syncbridge.SubscribeConfig, h syncbridge.AckHandler) (syncbridge.Subscription, error) {
	s := &groupSub{t: t, group: cfg.Group, topic: cfg.Topic, h: h, concurrent: cfg.Concurrent, done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(t.ctx)
	if err := t.addSub(s); err != nil {
		s.cancel()
		return nil, err
	}
	go func() {
		defer t.removeSub(s)
		defer close(s.done)
		s.run()
	}()
	return s, nil
}

// Close stops the subscription: it waits for handler calls in progress and
// for the acks of the messages handed out, commits what is processed, leaves the group (so that the other members
// take the partitions over at once) and returns once every goroutine has
// ended. With the group coordinator unreachable, the commit and the leave
// request may each take DialTimeout (5 s by default). Idempotent.
func (s *groupSub) Close() error {
	s.once.Do(s.cancel)
	<-s.done
	return nil
}

func (s *groupSub) run() {
	m := newMember(s.t, s.group, s.topic)
	defer m.close()
	defer m.leave(context.Background())
	for s.ctx.Err() == nil {
		g, err := m.join(s.ctx)
		if err != nil {
			return // closed
		}
		partitions := -1
		if meta, err := s.t.topicMeta(s.ctx, s.topic); err == nil {
			partitions = len(meta.partitions)
		}
		s.t.logf(slog.LevelDebug, "syncbridge/kafka: joined generation", "group", g.group, "generation", g.id, "member", g.memberID, "assignments", len(g.assigned))
		gctx, cancel := context.WithCancel(s.ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer cancel() // a generation that cannot go on joins again
			s.runGeneration(gctx, g)
		}()
		_ = m.heartbeats(gctx, g, partitions)
		cancel()
		<-done
	}
}

// pendingPerPartition bounds the records of one partition handed to the
// handler and not acked, and, for a Concurrent subscription, the handler
// calls in progress.
const pendingPerPartition = 256

// partWorker runs the handler for one assigned partition.
type partWorker struct {
	cur       *cursor
	batches   chan []record // fetched records waiting for the handler
	processed atomic.Int64  // offset up to which every record was acked; -1: none
	committed int64         // last offset committed; the committer's
	unacked   chan struct{} // a slot per record handed out and not acked
	calls     chan struct{} // Concurrent: a slot per handler call in progress

	mu       sync.Mutex // protects inFlight
	inFlight []flight   // records handed out and not yet below processed, in offset order
}

// flight is a record handed to the handler.
type flight struct {
	offset int64
	acked  bool
}

func (w *partWorker) dispatched(offset int64) {
	w.mu.Lock()
	w.inFlight = append(w.inFlight, flight{offset: offset})
	w.mu.Unlock()
}

// acked marks the record at offset acked. It reports whether this was its
// first ack (later ones do nothing), and whether the processed offset
// moved: only a prefix of acked records can be committed.
func (w *partWorker) acked(offset int64) (first, moved bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	i, found := slices.BinarySearchFunc(w.inFlight, offset, func(f flight, o int64) int { return cmp.Compare(f.offset, o) })
	if !found || w.inFlight[i].acked {
		return false, false // acked before (and perhaps below processed since)
	}
	w.inFlight[i].acked = true
	if i != 0 {
		return true, false // an earlier record is not acked
	}
	n := 1
	for n < len(w.inFlight) && w.inFlight[n].acked {
		n++
	}
	w.processed.Store(w.inFlight[n-1].offset + 1)
	if n == len(w.inFlight) {
		w.inFlight = w.inFlight[:0]
	} else {
		w.inFlight = append(w.inFlight[:0], w.inFlight[n:]...)
	}
	return true, true
}

// runGeneration consumes the partitions of one generation until it ends.
func (s *groupSub) runGeneration(gctx context.Context, gen *generation) {
	t := s.t
	// Reads end with the generation or the subscription.
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	stopGen := context.AfterFunc(gctx, cancel)
	defer stopGen()

	assigned := gen.assigned
	if len(assigned) == 0 {
		<-ctx.Done()
		return
	}
	// Resolve the start of partitions the group never committed.
	var unresolved []int32
	for _, a := range assigned {
		if a.offset < 0 {
			unresolved = append(unresolved, a.partition)
		}
	}
	var starts map[int32]int64
	if len(unresolved) > 0 {
		err := t.retry(ctx, func() error {
			var err error
			starts, err = t.listOffsets(ctx, s.topic, unresolved, firstOffset)
			return err
		})
		if err != nil {
			if ctx.Err() == nil {
				t.logf(slog.LevelWarn, "syncbridge/kafka: resolving start offsets", "topic", s.topic, "err", err)
			}
			return // ends the generation; the group rejoins
		}
	}

	drained := make(chan struct{}, 1)
	dirty := make(chan struct{}, 1)
	signal := func(c chan struct{}) {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	workers := make([]*partWorker, len(assigned))
	byCursor := make(map[*cursor]*partWorker, len(assigned))
	curs := make([]*cursor, len(assigned))
	for i, a := range assigned {
		off := a.offset
		if off < 0 {
			off = starts[a.partition]
		}
		w := &partWorker{
			cur:       &cursor{partition: a.partition, offset: off},
			batches:   make(chan []record, workerQueue),
			committed: off,
			unacked:   make(chan struct{}, pendingPerPartition),
		}
		if s.concurrent {
			w.calls = make(chan struct{}, pendingPerPartition)
		}
		w.processed.Store(-1)
		w.cur.paused = func() bool { return len(w.batches) == cap(w.batches) }
		workers[i], curs[i] = w, w.cur
		byCursor[w.cur] = w
	}

	// Handlers: one goroutine per partition, calling the handler in offset
	// order, the next call once the previous returned; or, for a Concurrent
	// subscription, each call in a goroutine of its own, up to
	// pendingPerPartition at once. Either way at most pendingPerPartition
	// records per partition are handed out and not acked, and the offsets
	// committed are those below the oldest record not acked. They stop
	// dispatching when the generation ends; what they did not hand out is
	// re-delivered to the partition's next owner. hwg counts the
	// dispatchers, the Concurrent calls in progress, and the records not
	// acked.
	var hwg sync.WaitGroup
	for _, w := range workers {
		hwg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case recs := <-w.batches:
					signal(drained)
					for _, r := range recs {
						if ctx.Err() != nil {
							return
						}
						select {
						case w.unacked <- struct{}{}:
						case <-ctx.Done():
							return
						}
						if w.calls != nil {
							select {
							case w.calls <- struct{}{}:
							case <-ctx.Done():
								<-w.unacked
								return
							}
						}
						off := r.offset
						w.dispatched(off)
						hwg.Add(1) // done at the ack
						ack := func() {
							first, moved := w.acked(off)
							if !first {
								return
							}
							if moved {
								signal(dirty)
							}
							<-w.unacked
							hwg.Done()
						}
						if w.calls == nil {
							s.h(s.ctx, r.msg, ack)
							continue
						}
						// A copy for the goroutine: r itself stays on the
						// stack (one allocation per record fewer on the
						// sequential path).
						msg := r.msg
						hwg.Go(func() {
							s.h(s.ctx, msg, ack)
							<-w.calls
						})
					}
				}
			}
		})
	}

	commit := func(ctx context.Context) {
		offsets := make(map[int32]int64)
		for _, w := range workers {
			if p := w.processed.Load(); p > w.committed {
				offsets[w.cur.partition] = p
			}
		}
		if len(offsets) == 0 {
			return
		}
		if err := gen.commit(ctx, s.topic, offsets); err != nil {
			t.logf(slog.LevelWarn, "syncbridge/kafka: commit failed", "group", gen.group, "topic", s.topic, "err", err)
			return
		}
		for _, w := range workers {
			if p, ok := offsets[w.cur.partition]; ok {
				w.committed = p
			}
		}
	}
	// Committer: commits once something was processed, then waits for
	// CommitInterval; what is processed meanwhile goes in the next commit.
	committerDone := make(chan struct{})
	go func() {
		defer close(committerDone)
		for {
			select {
			case <-ctx.Done():
				return
			case <-dirty:
				commit(ctx)
			}
			if t.cfg.commitInterval > 0 {
				tm := time.NewTimer(t.cfg.commitInterval)
				select {
				case <-ctx.Done():
					tm.Stop()
					return
				case <-tm.C:
				}
			}
		}
	}()

	// deliver never blocks: a partition whose worker queue is full is left
	// out of fetches. It selects on the generation's context, not the
	// fetch's: a fetch cancelled because another broker failed must still
	// hand over what it read, since its cursor moves past it.
	rd := &reader{t: t, topic: s.topic, drained: drained, deliver: func(_ context.Context, cur *cursor, recs []record) {
		w := byCursor[cur]
		batch := make([]record, len(recs))
		copy(batch, recs)
		select {
		case w.batches <- batch:
		case <-ctx.Done():
		}
	}}
	rd.run(ctx, curs)

	// The generation (or the subscription) ended: let the handlers finish
	// the calls in progress and wait for the acks of what they were handed,
	// then commit what is processed before the partitions go to another
	// member.
	hwg.Wait()
	<-committerDone
	fctx, fcancel := context.WithTimeout(context.Background(), t.cfg.dialTimeout)
	commit(fctx)
	fcancel()
}
