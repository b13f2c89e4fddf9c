package memory

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/syncbridge/syncbridge"
)

var _ syncbridge.AckSubscriber = (*Transport)(nil)

// maxPending bounds the messages a member of a group handed to its
// AckHandler and not yet acked, when it is not Concurrent: its partitions
// wait while that many are pending.
const maxPending = 256

// SubscribeAck is Subscribe with an AckHandler (syncbridge.AckSubscriber).
// Messages are delivered as by Subscribe: the next message of a partition
// once the handler call for the previous one returned, acked or not (or
// overlapping, with cfg.Concurrent). The memory transport commits nothing,
// so an ack only frees room: a group member holds at most 256 messages
// handed out and not acked (64 calls in progress or messages not acked
// when Concurrent), and its partitions wait while it does. Close waits for
// the handler calls in progress and for the acks of every message handed
// out.
func (t *Transport) SubscribeAck(ctx context.Context, cfg syncbridge.SubscribeConfig, h syncbridge.AckHandler) (syncbridge.Subscription, error) {
	if h == nil {
		return nil, errors.New("syncbridge/memory: subscribe: empty topic or nil handler")
	}
	return t.subscribe(ctx, cfg, nil, h)
}

// ackedHandler turns ah into a Handler for a broadcast subscription: acks
// counts the messages not acked, which Close waits for.
func ackedHandler(ah syncbridge.AckHandler, acks *sync.WaitGroup) syncbridge.Handler {
	return func(ctx context.Context, msg syncbridge.Message) {
		acks.Add(1)
		var once sync.Once
		ah(ctx, msg, func() { once.Do(acks.Done) })
	}
}

// pending is a message a group member handed to its AckHandler. It holds
// a slot of the member's sem and counts in its active until both the call
// returned and the message was acked.
type pending struct {
	m     *member
	acked atomic.Bool
	refs  atomic.Int32 // 2 at the start: the return and the ack
}

// ack is the message's ack; calls after the first do nothing.
func (p *pending) ack() {
	if p.acked.CompareAndSwap(false, true) {
		p.release()
	}
}

func (p *pending) release() {
	if p.refs.Add(-1) == 0 {
		<-p.m.sem
		p.m.active.leave()
	}
}

// handAck hands msg to m's AckHandler; m.active was incremented for it.
// Without Concurrent the call runs here, so the worker goes on to the next
// message once it returned; with Concurrent, in a goroutine of its own.
func (m *member) handAck(msg syncbridge.Message) {
	m.sem <- struct{}{}
	p := &pending{m: m}
	p.refs.Store(2)
	if !m.conc {
		m.ah(m.ctx, msg, p.ack)
		p.release()
		return
	}
	go func() {
		m.ah(m.ctx, msg, p.ack)
		p.release()
	}()
}
