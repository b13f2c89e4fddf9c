package memory

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/syncbridge/syncbridge"
)

// group is a consumer group of a topic: one queue and one worker goroutine
// per partition. Each worker hands its messages, in order, to the member its
// partition is assigned to (partition modulo the number of members); a
// Concurrent member runs each call in a goroutine of its own, up to
// maxConcurrent at once, so that its calls overlap.
// Keyless messages, which have no order to keep, go to the shortest queue,
// so that none waits behind a busy partition while another is idle.
type group struct {
	t      *Transport
	tp     *topic
	name   string
	parts  []chan syncbridge.Message // one queue per partition worker
	exited []chan struct{}           // closed when each worker returns

	mu      sync.Mutex                // protects changes to members, and changed
	members atomic.Pointer[[]*member] // read without mu
	changed chan struct{}             // closed and replaced when members change
}

// maxConcurrent bounds the overlapping handler calls of one member of a
// group whose subscription is Concurrent.
const maxConcurrent = 64

// member is one subscription of a group.
type member struct {
	g      *group
	h      syncbridge.Handler
	sem    chan struct{} // for a Concurrent member: a slot per call in progress
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once

	mu     sync.Mutex     // protects closed and active.Add
	closed bool           // no new handler calls
	active sync.WaitGroup // handler calls in progress
}

// join adds a member to the named group of tp, creating the group (and its
// goroutines) on first use.
func (t *Transport) join(tp *topic, name string, h syncbridge.Handler, concurrent bool) (syncbridge.Subscription, error) {
	tp.mu.Lock()
	var g *group
	for _, x := range *tp.groups.Load() {
		if x.name == name {
			g = x
		}
	}
	if g == nil {
		g = &group{t: t, tp: tp, name: name, changed: make(chan struct{})}
		g.members.Store(new([]*member))
		for range t.Partitions {
			g.parts = append(g.parts, make(chan syncbridge.Message, t.QueueSize))
			g.exited = append(g.exited, make(chan struct{}))
		}
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
	m := &member{g: g, h: h, ctx: ctx, cancel: cancel}
	if concurrent {
		m.sem = make(chan struct{}, maxConcurrent)
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

// run serves partition p until the transport closes. It waits with a
// plain receive, the cheapest wait there is; Close stops it with a message
// that has no topic, which Publish never queues.
func (g *group) run(p int) {
	defer close(g.exited[p])
	q := g.parts[p]
	for {
		msg := <-q
		if msg.Topic == "" {
			return
		}
		for !g.handOver(p, msg) {
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
				return
			}
		}
	}
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
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
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
		m.active.Add(1)
		m.mu.Unlock()
		if m.sem != nil {
			// Concurrent: the call runs on its own, and the worker goes
			// on to the next message, even of the same key.
			m.sem <- struct{}{}
			go func() {
				defer func() { <-m.sem; m.active.Done() }()
				m.h(m.ctx, msg)
			}()
			return true
		}
		m.h(m.ctx, msg)
		m.active.Done()
		return true
	}
}

// Close removes the member from its group and waits for its handler calls
// in progress. Its partitions pass to the remaining members; messages not
// yet handed over stay queued for them.
func (m *member) Close() error {
	m.once.Do(func() {
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		g := m.g
		g.mu.Lock()
		ms := slices.DeleteFunc(slices.Clone(*g.members.Load()), func(x *member) bool { return x == m })
		g.members.Store(&ms)
		close(g.changed)
		g.changed = make(chan struct{})
		g.mu.Unlock()
		m.cancel()
	})
	m.active.Wait()
	return nil
}

// stop makes every worker of g return, once the transport is closed.
func (g *group) stop() {
	for p, q := range g.parts {
		select {
		case q <- syncbridge.Message{}:
		case <-g.exited[p]: // returned by itself (see run)
		}
	}
}

// shortest returns the partition whose queue is shortest.
func (g *group) shortest() int32 {
	best, n := 0, len(g.parts[0])
	for p := 1; p < len(g.parts) && n > 0; p++ {
		if l := len(g.parts[p]); l < n {
			best, n = p, l
		}
	}
	return int32(best)
}
