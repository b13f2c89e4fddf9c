package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/syncbridge/syncbridge"
)

// Subscribe starts delivering the messages of cfg.Topic to h.
//
// Without cfg.Group it is a broadcast subscription: it reads every partition
// of the topic (or cfg.Partitions) directly, without a consumer group,
// starting at the end offsets it resolves before Subscribe returns, so every
// message published after Subscribe returned is delivered. h is called from
// one goroutine per partition leader (one in all on a one-broker cluster),
// with or without cfg.Concurrent, so calls for one partition are
// sequential and in offset order. Broadcast subscriptions of one
// Transport to the same partitions of a topic share that goroutine and its
// fetches: each record goes to each of them in turn, so a slow handler
// delays the others. A partition whose leader fails or moves is read from
// its new leader once the metadata names it, at the next offset it has not
// delivered (if that offset no longer exists, at the nearest end of the
// log); the partitions led by other brokers are read on meanwhile. Without
// cfg.Partitions, partitions added to the topic are read too, from their
// start, within MetadataMaxAge (5 s by default) of their creation.
//
// With cfg.Group it is a member of that Kafka consumer group: each message
// goes to one member. h is called from one goroutine per assigned
// partition, in offset order; with cfg.Concurrent, up to 256 calls per
// partition may run at once (a handler that publishes a reply and waits for
// its acknowledgement then no longer caps a partition at one reply per
// produce round trip). An offset is committed only after h returned for
// its message (and, with cfg.Concurrent, for every message before it),
// and the processed offsets are committed before the partitions are given
// up in a rebalance or on Close: delivery is at least once (a crash
// re-delivers what was not committed). A group that never committed starts
// at the earliest offset, so no request published before or after
// Subscribe is missed; Subscribe returns before the first assignment.
//
// ctx bounds Subscribe only. The handler's context ends when the
// subscription closes. Safe for concurrent use.
func (t *Transport) Subscribe(ctx context.Context, cfg syncbridge.SubscribeConfig, h syncbridge.Handler) (syncbridge.Subscription, error) {
	if h == nil {
		return nil, errors.New("syncbridge/kafka: subscribe: nil handler")
	}
	return t.subscribe(ctx, cfg, h, nil)
}

// SubscribeAck is Subscribe with an AckHandler (syncbridge.AckSubscriber):
// a message counts as handled once ack was called for it, not when the
// handler returns. The next message of a partition is delivered once the
// call for the previous one returned (or, for a group subscription with
// cfg.Concurrent, as for Subscribe), so a handler can pass the end of its
// work on, a reply's acknowledgement say, and the partition moves on
// meanwhile.
//
// With cfg.Group, up to 256 messages per partition may be pending (handed
// to the handler, and not both returned and acked); the partition waits
// while that many are. An offset is committed only once ack was called for its
// message and for every message of the partition before it; a message not
// acked when the member loses the partition (a crash, a lost session) is
// delivered again to the partition's next owner, as is every message after
// it. Close, and the end of a generation in a rebalance, wait for the
// handler calls in progress and for the acks of every message handed out
// before committing and giving the partitions up: a handler that never
// acks holds them (and Close) up. Without cfg.Group, nothing is committed
// and the number of messages pending is not bounded (the next one is
// delivered once the call for the previous one returned, acked or not),
// and Close waits for the outstanding acks too.
func (t *Transport) SubscribeAck(ctx context.Context, cfg syncbridge.SubscribeConfig, h syncbridge.AckHandler) (syncbridge.Subscription, error) {
	if h == nil {
		return nil, errors.New("syncbridge/kafka: subscribe: nil handler")
	}
	return t.subscribe(ctx, cfg, nil, h)
}

// subscribe is Subscribe with h, or SubscribeAck with ah.
func (t *Transport) subscribe(ctx context.Context, cfg syncbridge.SubscribeConfig, h syncbridge.Handler, ah syncbridge.AckHandler) (syncbridge.Subscription, error) {
	if cfg.Topic == "" {
		return nil, errors.New("syncbridge/kafka: subscribe: no topic")
	}
	if t.ctx.Err() != nil {
		return nil, errClosed
	}
	m, err := t.topicMetaRetry(ctx, cfg.Topic)
	if err != nil {
		return nil, err
	}
	if cfg.Group != "" {
		if ah == nil {
			ah = func(ctx context.Context, msg syncbridge.Message, ack func()) {
				h(ctx, msg)
				ack()
			}
		}
		return t.subscribeGroup(cfg, ah)
	}
	parts := m.partitions
	if cfg.Partitions != nil {
		parts = slices.Clone(cfg.Partitions)
		slices.Sort(parts)
		parts = slices.Compact(parts)
		if len(parts) == 0 {
			return nil, fmt.Errorf("syncbridge/kafka: subscribe to %q: empty partition list", cfg.Topic)
		}
		for _, p := range parts {
			if !m.has(p) {
				return nil, fmt.Errorf("%w: %s[%d] (the topic has %d)", ErrUnknownPartition, cfg.Topic, p, len(m.partitions))
			}
		}
	}
	if ah == nil {
		return t.subscribeBroadcast(ctx, cfg.Topic, parts, cfg.Partitions == nil, h)
	}
	as := &ackedSub{}
	sub, err := t.subscribeBroadcast(ctx, cfg.Topic, parts, cfg.Partitions == nil, func(ctx context.Context, msg syncbridge.Message) {
		as.wg.Add(1)
		var once sync.Once
		ah(ctx, msg, func() { once.Do(as.wg.Done) })
	})
	if err != nil {
		return nil, err
	}
	as.Subscription = sub
	return as, nil
}

// ackedSub is a broadcast subscription with an AckHandler: Close waits for
// the outstanding acks too.
type ackedSub struct {
	syncbridge.Subscription
	wg sync.WaitGroup // messages handed out, not acked
}

// Close closes the subscription and waits for the acks of the messages it
// handed out.
func (s *ackedSub) Close() error {
	err := s.Subscription.Close()
	s.wg.Wait()
	return err
}

// topicMetaRetry is topicMeta, retried within ctx on retriable errors.
func (t *Transport) topicMetaRetry(ctx context.Context, topic string) (*topicMeta, error) {
	var m *topicMeta
	err := t.retry(ctx, func() error {
		var err error
		m, err = t.topicMeta(ctx, topic)
		return err
	})
	return m, err
}

// retry calls f until it succeeds, fails with an error that is not
// retriable, or ctx or the Transport ends.
func (t *Transport) retry(ctx context.Context, f func() error) error {
	for attempt := 0; ; attempt++ {
		err := f()
		if err == nil || !retriable(err) {
			return err
		}
		if t.ctx.Err() != nil {
			return errClosed
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		}
		t.refreshMetadata()
		if !t.sleep(ctx, t.backoff(attempt)) {
			if t.ctx.Err() != nil {
				return errClosed
			}
			return fmt.Errorf("syncbridge/kafka: %w (last error: %w)", ctx.Err(), err)
		}
	}
}

var _ syncbridge.AckSubscriber = (*Transport)(nil)
