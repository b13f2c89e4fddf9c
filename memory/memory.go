// Package memory is an in-process syncbridge.Transport: the embedded
// default, with nothing to install. Its zero value is ready to use.
//
// Topics are created on first use, each with the same number of
// partitions. A message goes to the partition its Key hashes to (FNV-1a),
// to Partition when UsePartition is set, and keyless messages are spread
// round-robin. Broadcast subscriptions receive every message published after
// they subscribed, in publish order. A consumer group delivers each message
// to one of its subscriptions: each partition is served by one member at a
// time, in order, so messages with the same key are handled in order;
// but a Concurrent member runs each call in a goroutine of its own (up to
// 64 at once), so that its calls overlap, even for one key. Keyless
// messages have no order to keep: a group queues them in one queue that
// every partition's worker takes from, so that none waits behind a busy
// handler call while a partition is free, and hands each to the member its
// partition is assigned to.
//
// Queues are bounded: Publish blocks while a subscription's queue is full,
// until ctx ends. A group without members keeps its messages queued until
// one joins (or the queue fills).
//
// For tests, SetFaults injects faults (drop, duplicate, hold for later
// release: delay and reorder) into what is published.
package memory

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syncbridge/syncbridge"
)

// ErrClosed is returned by Publish and Subscribe after Close. It wraps
// syncbridge.ErrClosed, as every transport's does.
var ErrClosed = fmt.Errorf("syncbridge/memory: transport closed: %w", syncbridge.ErrClosed)

// errNotSentClosed is Publish's error after Close: nothing was queued.
var errNotSentClosed = fmt.Errorf("%w (%w)", ErrClosed, syncbridge.ErrNotSent)

// Defaults for the zero Transport.
const (
	DefaultPartitions = 8
	DefaultQueueSize  = 1024
)

// Transport is an in-process transport. The zero value is ready to use;
// set the exported fields, if at all, before its first use. A Transport is
// safe for concurrent use.
type Transport struct {
	// Partitions is the number of partitions of every topic. Zero means
	// DefaultPartitions. It also bounds how many messages a consumer group
	// handles at once, but for Concurrent members.
	Partitions int
	// QueueSize is the capacity of each subscription's queue, and of each
	// consumer group's queues: one per partition (made when the first
	// message for it comes), and one for keyless messages. Zero means
	// DefaultQueueSize.
	QueueSize int

	once   sync.Once
	faults atomic.Pointer[FaultFunc]
	done   chan struct{} // closed by Close

	mu     sync.Mutex // protects topics, closed, held and wg.Add
	topics map[string]*topic
	// byName is a copy of topics, replaced (never changed), so that
	// Publish finds a topic without a lock: a plain map behind an atomic
	// load costs less than a sync.Map lookup. It is copied again when
	// topics has doubled since; the topics made meanwhile are in more.
	byName atomic.Pointer[map[string]*topic]
	more   sync.Map // topic name to *topic: those not in byName yet
	closed bool
	held   []held
	wg     sync.WaitGroup // every goroutine of the transport
}

type held struct {
	msg     syncbridge.Message
	keyless bool
}

func (t *Transport) init() {
	t.once.Do(func() {
		if t.Partitions <= 0 {
			t.Partitions = DefaultPartitions
		}
		if t.QueueSize <= 0 {
			t.QueueSize = DefaultQueueSize
		}
		t.done = make(chan struct{})
		t.topics = make(map[string]*topic)
	})
}

// topic holds a topic's subscriptions.
type topic struct {
	name    string
	rr      atomic.Uint32  // round-robin partition for keyless messages
	offsets []atomic.Int64 // next offset of each partition

	mu     sync.Mutex               // protects changes to subs and groups
	subs   atomic.Pointer[[]*bsub]  // read without mu
	groups atomic.Pointer[[]*group] // read without mu
}

// lookup returns the topic named name, or nil if there is none yet.
func (t *Transport) lookup(name string) *topic {
	if m := t.byName.Load(); m != nil {
		if tp := (*m)[name]; tp != nil {
			return tp
		}
	}
	if tp, ok := t.more.Load(name); ok {
		return tp.(*topic)
	}
	return nil
}

func (t *Transport) topic(name string) (*topic, error) {
	if t.isClosed() {
		return nil, ErrClosed
	}
	if tp := t.lookup(name); tp != nil { // the common case, without a lock
		return tp, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	tp := t.topics[name]
	if tp == nil {
		tp = &topic{name: name, offsets: make([]atomic.Int64, t.Partitions)}
		tp.subs.Store(new([]*bsub))
		tp.groups.Store(new([]*group))
		t.topics[name] = tp
		if m := t.byName.Load(); m == nil || len(t.topics) <= 64 || len(t.topics) >= 2*len(*m) {
			m := maps.Clone(t.topics)
			t.byName.Store(&m)
		} else {
			t.more.Store(name, tp)
		}
	}
	return tp, nil
}

// partition picks msg's partition.
func (t *Transport) partition(tp *topic, msg *syncbridge.Message) (int32, error) {
	n := int32(t.Partitions)
	switch {
	case msg.UsePartition:
		if msg.Partition < 0 || msg.Partition >= n {
			return 0, fmt.Errorf("syncbridge/memory: partition %d of topic %q out of range [0,%d)", msg.Partition, tp.name, n)
		}
		return msg.Partition, nil
	case msg.Key != nil:
		h := fnv.New32a()
		h.Write(msg.Key)
		return int32(h.Sum32() % uint32(n)), nil
	default:
		return int32(tp.rr.Add(1) % uint32(n)), nil
	}
}

// Publish delivers msg to every broadcast subscription of msg.Topic and to
// one member of each consumer group of it, stamping it with its partition's
// next offset and the time. It returns once msg is queued everywhere, or
// when ctx ends: the error then wraps syncbridge.ErrNotSent if msg was
// queued nowhere yet (it never will be), and only ctx's error if some
// subscriptions have it. Errors that refuse msg (closed, no topic,
// partition out of range) wrap syncbridge.ErrNotSent.
func (t *Transport) Publish(ctx context.Context, msg syncbridge.Message) error {
	t.init()
	if msg.Topic == "" {
		return fmt.Errorf("syncbridge/memory: publish: empty topic: %w", syncbridge.ErrNotSent)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("syncbridge/memory: publish to %q: %w (%w)", msg.Topic, err, syncbridge.ErrNotSent)
	}
	tp, err := t.topic(msg.Topic)
	if err != nil {
		return errNotSentClosed
	}
	p, err := t.partition(tp, &msg)
	if err != nil {
		return fmt.Errorf("%w (%w)", err, syncbridge.ErrNotSent)
	}
	keyless := !msg.UsePartition && msg.Key == nil
	msg.Partition, msg.UsePartition = p, false
	msg.Offset = tp.offsets[p].Add(1) - 1
	msg.Time = time.Now()
	copies := 1
	if f := t.faults.Load(); f != nil {
		m := msg // declared here, so that only faulty runs pay for its escape
		fault := (*f)(&m)
		msg = m
		switch fault {
		case Drop:
			return nil
		case Duplicate:
			copies = 2
		case Hold:
			t.mu.Lock()
			defer t.mu.Unlock()
			if t.closed {
				return errNotSentClosed
			}
			t.held = append(t.held, held{msg: msg, keyless: keyless})
			return nil
		}
	}
	for i := range copies {
		queued, err := t.deliver(ctx, tp, msg, keyless)
		if err != nil {
			if queued == 0 && i == 0 {
				if errors.Is(err, syncbridge.ErrClosed) {
					return errNotSentClosed
				}
				return fmt.Errorf("syncbridge/memory: publish to %q: %w (%w)", msg.Topic, err, syncbridge.ErrNotSent)
			}
			return fmt.Errorf("syncbridge/memory: publish to %q: %w (queued for %d subscriptions)", msg.Topic, err, queued)
		}
	}
	return nil
}

// deliver queues msg for every subscription of tp, and returns for how
// many it did. A consumer group queues a keyless message where any of its
// partition workers can take it, and wakes one if none would (see group).
func (t *Transport) deliver(ctx context.Context, tp *topic, msg syncbridge.Message, keyless bool) (queued int, err error) {
	for _, s := range *tp.subs.Load() {
		if s.parts != nil && !slices.Contains(s.parts, msg.Partition) {
			continue
		}
		if s.q == nil { // a concurrent subscription: call it from here
			s.inline(msg)
			queued++
			continue
		}
		select {
		case s.q <- msg: // room in the queue: the common case
			queued++
			continue
		default:
		}
		select {
		case s.q <- msg:
			queued++
		case <-s.done:
		case <-t.done:
			return queued, ErrClosed
		case <-ctx.Done():
			return queued, ctx.Err()
		}
	}
	for _, g := range *tp.groups.Load() {
		q := g.keyless
		if !keyless {
			q = g.queue(msg.Partition)
		}
		select {
		case q <- msg:
		default:
			select {
			case q <- msg:
			case <-t.done:
				return queued, ErrClosed
			case <-ctx.Done():
				return queued, ctx.Err()
			}
		}
		queued++
		if keyless {
			g.kick()
		}
	}
	return queued, nil
}

// HasResponders reports whether a consumer group of topic has a member:
// the memory transport always knows (syncbridge.ResponderChecker).
func (t *Transport) HasResponders(name string) (has, known bool) {
	tp := t.lookup(name)
	if tp == nil {
		return false, true
	}
	for _, g := range *tp.groups.Load() {
		if len(*g.members.Load()) > 0 {
			return true, true
		}
	}
	return false, true
}

// Subscribe subscribes h to cfg.Topic: see the package documentation.
// The subscription is positioned when Subscribe returns.
func (t *Transport) Subscribe(ctx context.Context, cfg syncbridge.SubscribeConfig, h syncbridge.Handler) (syncbridge.Subscription, error) {
	if h == nil {
		return nil, errors.New("syncbridge/memory: subscribe: empty topic or nil handler")
	}
	return t.subscribe(ctx, cfg, h, nil)
}

// subscribe is Subscribe with h, or SubscribeAck with ah (ack.go).
func (t *Transport) subscribe(ctx context.Context, cfg syncbridge.SubscribeConfig, h syncbridge.Handler, ah syncbridge.AckHandler) (syncbridge.Subscription, error) {
	t.init()
	if cfg.Topic == "" {
		return nil, errors.New("syncbridge/memory: subscribe: empty topic or nil handler")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, p := range cfg.Partitions {
		if p < 0 || int(p) >= t.Partitions {
			return nil, fmt.Errorf("syncbridge/memory: subscribe: partition %d of topic %q out of range [0,%d)", p, cfg.Topic, t.Partitions)
		}
	}
	tp, err := t.topic(cfg.Topic)
	if err != nil {
		return nil, err
	}
	if cfg.Group != "" {
		return t.join(tp, cfg.Group, h, ah, cfg.Concurrent)
	}
	var acks *sync.WaitGroup
	if ah != nil {
		acks = new(sync.WaitGroup)
		h = ackedHandler(ah, acks)
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &bsub{active: newGate(), t: t, tp: tp, h: h, acks: acks, ctx: sctx, cancel: cancel, done: make(chan struct{}), exited: make(chan struct{})}
	if cfg.Partitions != nil {
		s.parts = slices.Clone(cfg.Partitions)
	}
	if cfg.Concurrent {
		close(s.exited) // no goroutine: Publish calls h
	} else {
		s.q = make(chan syncbridge.Message, t.QueueSize)
		if !t.start(s.run) {
			cancel()
			return nil, ErrClosed
		}
	}
	tp.mu.Lock()
	subs := append(slices.Clone(*tp.subs.Load()), s)
	tp.subs.Store(&subs)
	tp.mu.Unlock()
	if t.isClosed() { // Close may have collected the subscriptions before this one
		s.Close()
		return nil, ErrClosed
	}
	return s, nil
}

// isClosed reports whether Close has begun. Registrations check it after
// registering, since Close may have collected what was registered before.
func (t *Transport) isClosed() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// start runs f in a goroutine of the transport, unless it is closed.
func (t *Transport) start(f func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		f()
	}()
	return true
}

// bsub is a broadcast subscription: a queue and a goroutine calling the
// handler, or, for a concurrent subscription, nothing but the handler,
// which Publish calls.
type bsub struct {
	active gate // inline handler calls in progress; closed by Close
	t      *Transport
	tp     *topic
	h      syncbridge.Handler
	acks   *sync.WaitGroup // SubscribeAck: messages not acked; else nil
	parts  []int32         // nil: every partition
	ctx    context.Context
	cancel context.CancelFunc
	q      chan syncbridge.Message // nil for a concurrent subscription
	done   chan struct{}           // closed by Close
	once   sync.Once
	exited chan struct{} // closed when run returns
}

// inline calls the handler of a concurrent subscription.
// No lock is held during the call: a handler may publish to its own
// topic, and so call itself, while Close waits.
func (s *bsub) inline(msg syncbridge.Message) {
	if !s.active.enter() {
		return
	}
	defer s.active.leave()
	s.h(s.ctx, msg)
}

func (s *bsub) run() {
	defer close(s.exited)
	for {
		select {
		case m := <-s.q:
			s.h(s.ctx, m)
		case <-s.done:
			return
		case <-s.t.done: // also when Close missed a subscription being made
			return
		}
	}
}

// Close ends the subscription and waits for its handler call in progress,
// and for the acks of the messages it handed out (SubscribeAck).
func (s *bsub) Close() error {
	s.once.Do(func() {
		s.tp.mu.Lock()
		subs := slices.DeleteFunc(slices.Clone(*s.tp.subs.Load()), func(x *bsub) bool { return x == s })
		s.tp.subs.Store(&subs)
		s.tp.mu.Unlock()
		s.cancel()
		close(s.done)
		s.active.close()
	})
	s.active.wait() // inline calls in progress
	<-s.exited
	if s.acks != nil {
		s.acks.Wait()
	}
	return nil
}

// Close closes every subscription, drops held and queued messages, and
// returns once every goroutine of the transport has ended. Publish and
// Subscribe fail with ErrClosed afterwards. Close is idempotent.
func (t *Transport) Close() error {
	t.init()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		t.wg.Wait()
		return nil
	}
	t.closed = true
	t.held = nil
	close(t.done)
	var subs []*bsub
	var members []*member
	topics := make([]*topic, 0, len(t.topics))
	for _, tp := range t.topics {
		topics = append(topics, tp)
		subs = append(subs, *tp.subs.Load()...)
		for _, g := range *tp.groups.Load() {
			members = append(members, *g.members.Load()...)
		}
	}
	t.mu.Unlock()
	for _, s := range subs {
		s.Close()
	}
	for _, m := range members {
		m.Close()
	}
	for _, tp := range topics {
		for _, g := range *tp.groups.Load() {
			g.stop()
		}
	}
	t.wg.Wait()
	return nil
}
