package syncbridge

import (
	"context"
	"time"
)

// Header is one message header. Values are bytes, as on Kafka: binary-safe.
type Header struct {
	Key   string
	Value []byte
}

// Message is a unit published on, and delivered by, a Transport.
//
// A Message handed to Publish, Request or Go is read, never modified; the
// caller must not modify its slices until the call returns. A Message
// delivered to a Handler belongs to that handler: it may keep it, but must
// treat the slices as read-only, since other subscribers may share them.
type Message struct {
	// Topic is the destination on Publish and the source on delivery.
	Topic string
	// Key orders messages: transports with partitions send messages with the
	// same key to the same partition. Nil means no key.
	Key []byte
	// Value is the payload.
	Value []byte
	// Headers are the message's headers, in order. Keys may repeat; the
	// first occurrence wins when syncbridge reads one. On a request (and a
	// Responder's reply), headers named like syncbridge's own (HeaderNames)
	// are dropped: syncbridge sets those.
	Headers []Header
	// Partition is the partition the message was delivered from, and, when
	// UsePartition is true, the partition Publish must write it to.
	// Transports without partitions ignore it.
	Partition int32
	// UsePartition makes Publish write to Partition instead of choosing a
	// partition itself (by Key, or spreading keyless messages).
	UsePartition bool
	// Offset is the message's offset in its partition on delivery, for
	// transports that have offsets (Kafka); -1 or 0 otherwise. Ignored by
	// Publish.
	Offset int64
	// Time is when the message was written, on delivery, as the transport
	// records it (the Kafka record's timestamp; the time of Publish on the
	// memory transport). Zero when unknown. Ignored by Publish.
	Time time.Time
}

// Header returns the value of the first header named key, and whether there
// was one.
func (m *Message) Header(key string) ([]byte, bool) {
	for i := range m.Headers {
		if m.Headers[i].Key == key {
			return m.Headers[i].Value, true
		}
	}
	return nil, false
}

// Handler receives messages from a Subscription. The transport calls it from
// one goroutine per partition (or per subscription), so calls for one
// partition are sequential. ctx ends when the subscription is closed.
// A handler that returns has processed the message: a transport with
// at-least-once delivery commits it then, and not before.
type Handler func(ctx context.Context, msg Message)

// SubscribeConfig says what a subscription reads.
type SubscribeConfig struct {
	// Topic is the topic to read. Required.
	Topic string
	// Group, when set, makes the subscription one competing consumer of the
	// named group: each message of Topic is delivered to one subscription of
	// the group. When empty, the subscription is a broadcast subscription: it
	// receives every message published to Topic after Subscribe returned.
	Group string
	// Partitions, for a broadcast subscription, limits it to these
	// partitions. Nil means every partition. Ignored with Group.
	Partitions []int32
	// Concurrent says that the handler is safe for concurrent use and needs
	// no ordering. Every transport then overlaps the handler calls of a
	// group subscription, even for messages of one partition or one key, so
	// that a slow message does not hold up the next (the transporttest
	// suite checks it); it may also call a broadcast subscription's handler
	// from several goroutines. A transport with at-least-once delivery still
	// commits a message only once the handler returned for it and for every
	// message before it. The Bridge sets it for its reply subscription;
	// WithConcurrentHandlers sets it for a Responder. Without it, calls for
	// one partition are sequential and in order.
	Concurrent bool
}

// Transport moves messages. Implementations must be safe for concurrent use.
// The memory and kafka packages provide two; the transporttest package holds
// the conformance suite every Transport must pass.
//
// Errors tell a caller whether a message may have been written. An error
// that wraps ErrNotSent means certainly not written: the message never left
// the transport (refused before sending, dropped from a queue before being
// sent, rejected by the broker with an error that says it was not stored,
// or the transport was closed before sending it); a caller may send it
// again without sending it twice. Any other error means it may have been
// written. After Close, Publish and Subscribe fail with an error wrapping
// both ErrClosed and (for Publish) ErrNotSent.
type Transport interface {
	// Publish writes msg to msg.Topic and returns once the transport has
	// accepted it durably (as durably as the transport goes: acks from every
	// in-sync replica for Kafka). It returns by the time ctx ends; when ctx
	// ends before msg was handed to the network, msg is not sent later and
	// the error wraps ErrNotSent and ctx.Err().
	Publish(ctx context.Context, msg Message) error
	// Subscribe starts delivering messages to h and returns once the
	// subscription is positioned: a broadcast subscription receives every
	// message published after Subscribe returned. ctx bounds Subscribe only,
	// not the subscription's life.
	Subscribe(ctx context.Context, cfg SubscribeConfig, h Handler) (Subscription, error)
}

// AsyncPublisher is implemented by transports that can publish without
// making the caller wait for the acknowledgement. Bridge.Go (and so
// Request) uses it when the Transport has it, and returns as soon as the
// request is handed over.
type AsyncPublisher interface {
	// PublishAsync hands msg to the transport and returns; it may block
	// while the transport's queue is full, but not past ctx's end. done is
	// called exactly once, from any goroutine, possibly before PublishAsync
	// returns, with what Publish would have returned: nil once the message
	// is acknowledged, an error wrapping ErrNotSent when it certainly was
	// not written, another error when it may have been. When ctx ends
	// before msg was sent, msg is removed from the queue, never sent, and
	// done receives an error wrapping ErrNotSent and ctx.Err(). msg is
	// copied or kept until done is called: the caller must not modify it
	// before then. done must be fast and must not block.
	PublishAsync(ctx context.Context, msg Message, done func(error))
}

// AckHandler is like Handler, but the message is processed only once ack
// is called for it, not when the call returns: the handler may hand the
// rest of the work (publishing a reply, say) to something that finishes
// later, and the transport goes on to the next message meanwhile.
//
// ack must be called exactly once per call, from any goroutine, before or
// after the call returns. Calling it twice, or never, is a bug: a message
// never acked is never committed, and Subscription.Close waits for it.
type AckHandler func(ctx context.Context, msg Message, ack func())

// AckSubscriber is implemented by transports that can deliver messages to
// an AckHandler. A Responder uses it, with an AsyncPublisher, to publish a
// request's reply without waiting for its acknowledgement before it handles
// the next request.
type AckSubscriber interface {
	// SubscribeAck is Subscribe with an AckHandler; cfg and ctx mean what
	// they mean for Subscribe. Subscribe(ctx, cfg, h) behaves as SubscribeAck
	// with a handler that calls h and then ack.
	//
	// The transport delivers the next message of a partition once the
	// handler call for the previous one returned, acked or not: calls stay
	// sequential and in order per partition unless cfg.Concurrent (which
	// overlaps them as for Subscribe). A message counts as processed once
	// ack was called for it and for every message of its partition before
	// it: a transport with at-least-once delivery commits it then and not
	// before, and a message not acked when the subscription loses its
	// partition (the member leaves or dies) is delivered again. A transport
	// may bound the messages delivered but not acked; it stops delivering
	// while the bound is reached. Subscription.Close waits for the handler
	// calls in progress and for the acks of every message already handed
	// to the handler, then commits what is processed.
	SubscribeAck(ctx context.Context, cfg SubscribeConfig, h AckHandler) (Subscription, error)
}

// ResponderChecker is implemented by transports that can tell, from what
// they already know, whether a topic has responders: a consumer group with
// at least one member reading it. A Bridge with WithFailFastNoResponders
// asks it before each request.
type ResponderChecker interface {
	// HasResponders reports whether topic has a group subscription with a
	// member, and whether the transport knows (known false: it cannot tell
	// yet, and the request goes ahead). It must answer from memory, never
	// with network I/O on the caller's path: a transport that must ask a
	// broker caches the answer and refreshes it in the background. Safe for
	// concurrent use.
	HasResponders(topic string) (has, known bool)
}

// Subscription is a running subscription.
type Subscription interface {
	// Close stops the subscription and returns once no handler call is in
	// progress and every goroutine of the subscription has ended. It is
	// idempotent.
	Close() error
}
