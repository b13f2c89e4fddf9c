package syncbridge

import (
	"context"
	"errors"
	"fmt"
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
	// first occurrence wins when syncbridge reads one.
	Headers []Header
	// Partition is the partition the message was delivered from, and, when
	// UsePartition is true, the partition Publish must write it to.
	// Transports without partitions ignore it.
	Partition int32
	// UsePartition makes Publish write to Partition instead of choosing a
	// partition itself (by Key, or spreading keyless messages).
	UsePartition bool
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
}

// Transport moves messages. Implementations must be safe for concurrent use.
// The memory and kafka packages provide two; the transporttest package holds
// the conformance suite every Transport must pass.
type Transport interface {
	// Publish writes msg to msg.Topic and returns once the transport has
	// accepted it durably (as durably as the transport goes: acks from every
	// in-sync replica for Kafka). An error means the message may not have
	// been written. Publish must return by the time ctx ends.
	Publish(ctx context.Context, msg Message) error
	// Subscribe starts delivering messages to h and returns once the
	// subscription is positioned: a broadcast subscription receives every
	// message published after Subscribe returned. ctx bounds Subscribe only,
	// not the subscription's life.
	Subscribe(ctx context.Context, cfg SubscribeConfig, h Handler) (Subscription, error)
}

// Subscription is a running subscription.
type Subscription interface {
	// Close stops the subscription and returns once no handler call is in
	// progress and every goroutine of the subscription has ended. It is
	// idempotent.
	Close() error
}

// Errors returned by syncbridge. Compare with errors.Is: they are wrapped.
var (
	// ErrClosed is returned by Request, Go and Responder calls after Close
	// or Shutdown, and wakes requests in flight when the Bridge closes.
	ErrClosed = errors.New("syncbridge: closed")
	// ErrOverloaded is returned at once by Request and Go when the Bridge
	// already has MaxInFlight requests in flight. Nothing was published: the
	// request is safe to retry later (an HTTP server answers 503).
	ErrOverloaded = errors.New("syncbridge: too many requests in flight")
	// ErrPublish wraps the transport's error when a request could not be
	// published. The responder did not receive it (as far as the transport
	// can tell): the request is safe to retry.
	ErrPublish = errors.New("syncbridge: publish failed")
	// ErrNoReply is returned, together with the context's error, when a
	// request was published but no reply arrived before its context ended.
	// The responder may have run it: retry only idempotent requests.
	ErrNoReply = errors.New("syncbridge: no reply")
	// ErrInvalidMessage is returned for a request without a topic.
	ErrInvalidMessage = errors.New("syncbridge: invalid message")
	// ErrMalformedHeader is returned when a header read off the wire cannot
	// be decoded.
	ErrMalformedHeader = errors.New("syncbridge: malformed header")
)

// RemoteError is an error reply: the responder's handler failed. Request
// returns it as the error, with the reply available in Reply.
type RemoteError struct {
	// Code is a short machine-readable code, such as "not_found".
	Code string
	// Description is a human-readable description.
	Description string
	// Reply is the error reply message, nil on the responder side.
	Reply *Message
}

// Error implements error.
func (e *RemoteError) Error() string {
	if e.Description == "" {
		return "syncbridge: remote error " + e.Code
	}
	return fmt.Sprintf("syncbridge: remote error %s: %s", e.Code, e.Description)
}

// NewRemoteError returns a *RemoteError that a responder's handler can return
// to send an error reply with that code and description.
func NewRemoteError(code, description string) *RemoteError {
	return &RemoteError{Code: code, Description: description}
}

// Error codes the Responder uses for errors it creates.
const (
	// CodeInternal is sent when a handler returns an error that is not a
	// *RemoteError.
	CodeInternal = "internal"
	// CodePanic is sent when a handler panics.
	CodePanic = "panic"
)

// compile-time check that the context package's errors stay comparable.
var _ = context.DeadlineExceeded
