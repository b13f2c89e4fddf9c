package memory

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syncbridge/syncbridge"
)

// group is a consumer group of a topic: one queue and one worker goroutine
// per partition. Each worker hands its messages, in order, to the member its
// partition is assigned to (partition modulo the number of members); a
// Concurrent member runs each call in a goroutine of its own, up to
// maxConcurrent at once, so that its calls overlap.
//
// Keyless messages have no order to keep: they wait in one queue shared by
// all the workers, and whichever worker is free takes the next, handing it
// to the member its (round-robin) partition is assigned to. So none waits
// behind a busy handler while a worker is free, and the group serves them
// first come, first served.
//
// How workers are woken decides the latency of requests, because of how Go
// schedules goroutines. A goroutine woken by another (a worker woken by a
// publisher, a caller woken by its reply) runs next on the waker's
// processor and inherits the rest of its time slice: a caller and a
// worker that wake each other can keep a processor for a whole time slice
// (10 ms) while every other caller waits, and a few requests then take tens
// of milliseconds (issue 11). Therefore:
//   - A publisher wakes a parked worker only when no worker is ready to
//     look at the keyless queue (every worker that is not parked is inside
//     a handler call), and fewer than GOMAXPROCS workers are inside handler
//     calls: more would not run anyway while those run.
//   - A worker that finds nothing to do yields (runtime.Gosched) once before
//     it parks. It stays ready meanwhile, so the callers that run in the
//     meantime queue their requests without waking anyone (no hand-off
//     that inherits a time slice), and it comes back to a batch, in the
//     order the requests came.
//   - A watchdog wakes one more worker when the keyless queue has not moved
//     for about a millisecond: when every busy handler is blocked (on I/O,
//     say) or the thread running one was descheduled.
type group struct {
	t      *Transport
	tp     *topic
	name   string
	parts  []partQueue     // one queue per partition worker, for keyed and partitioned messages
	exited []chan struct{} // closed when each worker returns

	keyless chan syncbridge.Message // keyless messages, taken by any worker
	wake    chan struct{}           // a token wakes one parked worker; capacity len(parts)
	// active counts the workers that are not parked, and the wake tokens
	// sent but not yet taken; busy those inside a handler call (or waiting
	// for a member). A worker that is active and not busy looks at the
	// keyless queue before it parks.
	active, busy atomic.Int32
	maxBusy      int32       // GOMAXPROCS when the group was made: see kick
	taken        []takenCtr  // keyless messages taken, per worker: the watchdog's sign of progress
	watchdog     *time.Timer // runs watch; armed while keyless messages wait for busy workers
	armed        atomic.Bool // watchdog is set
	mark         atomic.Int64

	mu      sync.Mutex                // protects changes to members, and changed
	members atomic.Pointer[[]*member] // read without mu
	changed chan struct{}             // closed and replaced when members change
}

// partQueue is a partition worker's queue, made when the first message for
// the partition comes: a group that only sees keyless messages (a
// Responder's, serving Bridge requests) keeps no queues it never uses.
// A queue holds QueueSize messages, about 128 KB that the garbage
// collector scans in every cycle.
type partQueue struct {
	q    atomic.Pointer[chan syncbridge.Message]
	made chan struct{} // a token once q is made, capacity 1: wakes the parked worker
}

// queue returns partition p's queue, making it on first use.
func (g *group) queue(p int32) chan syncbridge.Message {
	pq := &g.parts[p]
	if q := pq.q.Load(); q != nil {
		return *q
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if q := pq.q.Load(); q != nil {
		return *q
	}
	q := make(chan syncbridge.Message, g.t.QueueSize)
	pq.q.Store(&q)
	select {
	case pq.made <- struct{}{}:
	default:
	}
	return q
}

// takenCtr is a worker's count of the keyless messages it took, alone on
// its cache line.
type takenCtr struct {
	n atomic.Int64
	_ [56]byte
}

// watchdogPeriod is how long keyless messages may wait without any being
// taken, while every worker that could take them is busy, before one more
// worker is woken. Go timers shorter than a millisecond do not fire sooner.
const watchdogPeriod = time.Millisecond

// maxConcurrent bounds the overlapping handler calls of one member of a
// group whose subscription is Concurrent.
const maxConcurrent = 64

// member is one subscription of a group.
type member struct {
	g      *group
	h      syncbridge.Handler
	ah     syncbridge.AckHandler // SubscribeAck's handler (then h is nil): see ack.go
	conc   bool                  // Concurrent
	sem    chan struct{}         // for a Concurrent member: a slot per call in progress; with ah, per message pending
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once

	active gate // handler calls in progress; closed: no new ones
}

// join adds a member to the named group of tp, creating the group (and its
// goroutines) on first use.
func (t *Transport) join(tp *topic, name string, h syncbridge.Handler, ah syncbridge.AckHandler, concurrent bool) (syncbridge.Subscription, error) {
	tp.mu.Lock()
	var g *group
	for _, x := range *tp.groups.Load() {
		if x.name == name {
			g = x
		}
	}
	if g == nil {
		g = &group{t: t, tp: tp, name: name, changed: make(chan struct{}),
			keyless: make(chan syncbridge.Message, t.QueueSize),
			wake:    make(chan struct{}, t.Partitions),
			taken:   make([]takenCtr, t.Partitions),
			maxBusy: int32(max(1, runtime.GOMAXPROCS(0))),
		}
		g.members.Store(new([]*member))
		for range t.Partitions {
			g.parts = append(g.parts, partQueue{made: make(chan struct{}, 1)})
			g.exited = append(g.exited, make(chan struct{}))
		}
		g.active.Store(int32(t.Partitions)) // the workers start active
		g.watchdog = time.AfterFunc(time.Hour, g.watch)
		g.watchdog.Stop()
		for p := range g.parts {
			if !t.start(func() { g.run(p) }) {
				tp.mu.Unlock()
				g.stop()
				return nil, ErrClosed
			}
		}
		gs := append(slices.Clone(*tp.groups.Load()), g)
		tp.groups.Store(&gs)
		if t.isClosed() { // Close may have looked for groups before this one
			tp.mu.Unlock()
			g.stop()
			return nil, ErrClosed
		}
	}
	tp.mu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	m := &member{g: g, h: h, ah: ah, conc: concurrent, ctx: ctx, cancel: cancel, active: newGate()}
	switch {
	case concurrent:
		m.sem = make(chan struct{}, maxConcurrent)
	case ah != nil:
		m.sem = make(chan struct{}, maxPending)
	}
	g.mu.Lock()
	ms := append(slices.Clone(*g.members.Load()), m)
	g.members.Store(&ms)
	close(g.changed)
	g.changed = make(chan struct{})
	g.mu.Unlock()
	if t.isClosed() { // Close may have collected the members before this one
		m.Close()
		return nil, ErrClosed
	}
	return m, nil
}

// run serves partition p's queue, and the keyless queue when its own is
// empty, until the transport closes. Close stops it with a message that
// has no topic, which Publish never queues.
func (g *group) run(p int) {
	defer close(g.exited[p])
	pq := &g.parts[p]
	var q chan syncbridge.Message // nil until made: never ready
	yielded := false
	for {
		var (
			msg     syncbridge.Message
			keyless bool
		)
		if q == nil {
			if x := pq.q.Load(); x != nil {
				q = *x
			}
		}
		select {
		case msg = <-q:
		default:
			select {
			case msg = <-g.keyless:
				keyless = true
			default:
				if !yielded {
					// Let the goroutines this worker woke run, and queue
					// their next requests, before it parks (see group).
					yielded = true
					runtime.Gosched()
					continue
				}
				var ok bool
				if msg, keyless, ok = g.park(q, pq.made); !ok {
					yielded = false // woken to look at the keyless queue
					continue
				}
			}
		}
		yielded = false
		if msg.Topic == "" {
			return
		}
		to := p
		if keyless {
			g.taken[p].n.Add(1)
			to = int(msg.Partition)
		}
		g.busy.Add(1)
		if len(g.keyless) > 0 {
			g.kick() // this worker is no longer ready to take them
		}
		if !g.serve(to, msg) {
			return
		}
		g.busy.Add(-1)
	}
}

// park waits for a message on partition p's queue q or for a wake token,
// after a last look at the keyless queue; while q is nil (not made yet),
// for made, the token that says it was. It reports false when woken by a
// token, counted active again.
func (g *group) park(q chan syncbridge.Message, made chan struct{}) (msg syncbridge.Message, keyless, ok bool) {
	if q != nil {
		made = nil
	}
	g.active.Add(-1)
	// A publisher queues, then reads active; this worker decrements active,
	// then looks: one of the two sees the other.
	select {
	case msg = <-g.keyless:
		g.active.Add(1)
		return msg, true, true
	default:
	}
	select {
	case msg = <-q:
		g.active.Add(1)
		return msg, false, true
	case <-g.wake: // the waker counted this worker active
		return msg, false, false
	case <-made:
		g.active.Add(1)
		return msg, false, false
	}
}

// kick makes sure that a keyless message just queued will be taken: it
// wakes a parked worker if no worker is ready to take it and fewer than
// GOMAXPROCS are busy, and otherwise, if every active worker is busy, arms
// the watchdog.
func (g *group) kick() {
	for {
		a, b := g.active.Load(), g.busy.Load()
		if a > b {
			return // a worker will look at the keyless queue before it parks
		}
		if b >= g.maxBusy {
			g.arm()
			return
		}
		if g.active.CompareAndSwap(a, a+1) {
			g.wakeOne()
			return
		}
	}
}

// wakeOne sends a wake token for a worker already counted active.
func (g *group) wakeOne() {
	select {
	case g.wake <- struct{}{}:
	default: // a token for every worker is waiting already
		g.active.Add(-1)
	}
}

// arm sets the watchdog, unless it is set.
func (g *group) arm() {
	if !g.armed.Load() && g.armed.CompareAndSwap(false, true) {
		g.mark.Store(g.takenSum())
		g.watchdog.Reset(watchdogPeriod)
	}
}

func (g *group) takenSum() int64 {
	var n int64
	for i := range g.taken {
		n += g.taken[i].n.Load()
	}
	return n
}

// watch is the watchdog: if keyless messages wait and none was taken since
// it was set, it wakes one more worker. It sets itself again while they
// wait.
func (g *group) watch() {
	t := g.t
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.wg.Add(1) // so that Close waits for it
	t.mu.Unlock()
	defer t.wg.Done()
	g.armed.Store(false)
	if len(g.keyless) == 0 {
		return
	}
	if g.takenSum() == g.mark.Load() {
		g.active.Add(1)
		g.wakeOne()
	}
	g.arm()
}

// serve hands msg to the member partition to is assigned to, waiting for a
// member if there is none. It reports false when the transport closed
// meanwhile.
func (g *group) serve(to int, msg syncbridge.Message) bool {
	for !g.handOver(to, msg) {
		// No open member: wait for the membership to change.
		g.mu.Lock()
		changed := g.changed
		g.mu.Unlock()
		if len(*g.members.Load()) > 0 {
			continue // changed between handOver and reading changed
		}
		select {
		case <-changed:
		case <-g.t.done:
			return false
		}
	}
	return true
}

// handOver calls the handler of the member partition p is assigned to,
// and reports false when no member could take the message.
func (g *group) handOver(p int, msg syncbridge.Message) bool {
	for {
		ms := *g.members.Load()
		if len(ms) == 0 {
			return false
		}
		m := ms[p%len(ms)]
		if !m.active.enter() {
			// Leaving: it is being removed from members. Look again.
			g.mu.Lock()
			changed := g.changed
			stale := slices.Contains(*g.members.Load(), m)
			g.mu.Unlock()
			if stale {
				<-changed
			}
			continue
		}
		if m.ah != nil {
			m.handAck(msg)
			return true
		}
		if m.sem != nil {
			// Concurrent: the call runs on its own, and the worker goes
			// on to the next message, even of the same key.
			m.sem <- struct{}{}
			go func() {
				defer func() { <-m.sem; m.active.leave() }()
				m.h(m.ctx, msg)
			}()
			return true
		}
		m.h(m.ctx, msg)
		m.active.leave()
		return true
	}
}

// Close removes the member from its group and waits for its handler calls
// in progress. Its partitions pass to the remaining members; messages not
// yet handed over stay queued for them.
func (m *member) Close() error {
	m.once.Do(func() {
		m.active.close()
		g := m.g
		g.mu.Lock()
		ms := slices.DeleteFunc(slices.Clone(*g.members.Load()), func(x *member) bool { return x == m })
		g.members.Store(&ms)
		close(g.changed)
		g.changed = make(chan struct{})
		g.mu.Unlock()
		m.cancel()
	})
	m.active.wait()
	return nil
}

// stop makes every worker of g return, once the transport is closed.
func (g *group) stop() {
	g.watchdog.Stop()
	for p := range g.parts {
		select {
		case g.queue(int32(p)) <- syncbridge.Message{}:
		case <-g.exited[p]: // returned by itself (see run)
		}
	}
}
