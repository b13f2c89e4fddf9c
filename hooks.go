package syncbridge

import (
	"context"
	"fmt"
	"time"
)

// Hook is a value implementing one or more of the hook interfaces below,
// passed to WithHooks. New hook interfaces may be added; a value
// implementing none of them makes New or NewResponder fail. Hook methods
// are called synchronously, on the path of a reply or request: they must be
// fast, must not block, and must be safe for concurrent use. Without hooks,
// a request costs nothing more: the structures passed to hooks are made
// only when there are hooks to call.
type Hook any

// RequestStartHook is called by a Bridge for each request it is about to
// hand to the transport, once the request carries its correlation ID and
// reply headers. The hook may append headers to info.Message (trace
// context, say) and replace info.Context with a context derived from it
// (carrying a span, say); the end hooks receive it back.
type RequestStartHook interface {
	OnRequestStart(info *RequestInfo)
}

// RequestEndHook is called by a Bridge once for every request that
// Request or Go received, when it ends: answered, failed, refused at once
// (then without OnRequestStart before it), cancelled, timed out or closed.
// It is called from the goroutine that ended the request: the caller's,
// the reply subscription's, a timer's or the transport's.
type RequestEndHook interface {
	OnRequestEnd(info *RequestInfo)
}

// RequestInfo describes a request to the request hooks. The Bridge owns it;
// hooks may keep it after the call but must not modify it, but for the
// fields that say so.
type RequestInfo struct {
	// Context is the caller's context. A RequestStartHook may replace it.
	Context context.Context
	// Topic is the request's topic.
	Topic string
	// ID is the request's correlation ID; "" when refused before one was
	// assigned.
	ID string
	// Message is the request as it will be published, for
	// RequestStartHook, which may append headers to it; nil for a request
	// refused before publishing.
	Message *Message
	// Start is when Request or Go was called.
	Start time.Time

	// Set for RequestEndHook:

	// Outcome says how the request ended.
	Outcome Outcome
	// Err is the request's error, nil for a reply.
	Err error
	// Reply is the reply, for OutcomeReply and OutcomeRemoteError.
	Reply *Message
	// Duration is the time from Start to the end.
	Duration time.Duration
	// PublishDuration is the time the transport took to acknowledge the
	// request (or refuse it); zero when it did not answer before the end.
	PublishDuration time.Duration

	pubStart time.Time // when the request was handed to the transport
}

// Outcome says how a request ended: one per Stats counter, and
// OutcomeInvalid, which Stats does not count.
type Outcome uint8

// Outcomes of a request.
const (
	OutcomeReply        Outcome = Outcome(outReply)      // a normal reply
	OutcomeRemoteError  Outcome = Outcome(outRemote)     // an error reply
	OutcomeCanceled     Outcome = Outcome(outCanceled)   // the caller cancelled
	OutcomeTimedOut     Outcome = Outcome(outTimedOut)   // the deadline passed
	OutcomePublishError Outcome = Outcome(outPublish)    // not sent: the transport failed
	OutcomeOverloaded   Outcome = Outcome(outOverloaded) // refused: MaxInFlight
	OutcomeClosed       Outcome = Outcome(outClosed)     // the Bridge was closed
	OutcomeInvalid      Outcome = Outcome(outInvalid)    // refused: invalid message
	// OutcomeNoResponders: refused, the topic has no responder.
	OutcomeNoResponders Outcome = Outcome(outNoResponders)
)

var outcomeNames = [...]string{"reply", "remote_error", "canceled", "timed_out", "publish_error", "overloaded", "closed", "invalid", "no_responders"}

// String returns the outcome's name: "reply", "remote_error", "canceled",
// "timed_out", "publish_error", "overloaded", "closed", "invalid" or
// "no_responders".
func (o Outcome) String() string {
	if int(o) >= len(outcomeNames) {
		return "Outcome(?)"
	}
	return outcomeNames[o]
}

// HandleStartHook is called by a Responder before it calls its handler.
// The hook may replace info.Context with a context derived from it (a
// span whose parent is the caller's trace context from the request's
// headers, say): the handler receives that context.
type HandleStartHook interface {
	OnHandleStart(info *HandleInfo)
}

// ReplyPublishHook is called by a Responder just before it publishes a
// reply; the hook may append headers to reply.
type ReplyPublishHook interface {
	OnReplyPublish(info *HandleInfo, reply *Message)
}

// HandleEndHook is called by a Responder once for every request it handed
// to its handler, once the reply is published (or not). On a transport the
// Responder publishes to without waiting (an AsyncPublisher and
// AckSubscriber, such as Kafka), that is when the transport acknowledges
// the reply, from the transport's goroutine: the hook must be quick.
type HandleEndHook interface {
	OnHandleEnd(info *HandleInfo)
}

// HandleInfo describes a request a Responder handles, to its hooks. The
// Responder owns it; hooks may keep it but must not modify it, but for
// the fields that say so.
type HandleInfo struct {
	// Context is the handler's context. A HandleStartHook may replace it
	// with one derived from it.
	Context context.Context
	// Topic and Group are the request topic and the Responder's group.
	Topic, Group string
	// Request is the request. Its Partition, Offset and Time are what the
	// transport knows of it.
	Request *Message
	// ID is the request's correlation ID.
	ID []byte
	// Queued is the time from the request being written (its Time) to the
	// handler's call; zero when the transport does not know when it was
	// written.
	Queued time.Duration

	// Set for HandleEndHook:

	// Err is the handler's error (a *RemoteError for a panic), nil when it
	// succeeded.
	Err error
	// Panicked reports whether the handler panicked.
	Panicked bool
	// Handling is how long the handler ran.
	Handling time.Duration
	// Reply is the reply, with the headers it was published with; nil when
	// none was published (the deadline passed).
	Reply *Message
	// ReplyErr is the transport's error when the reply could not be
	// published.
	ReplyErr error
}

// DroppedReplyHook is called by a Bridge for every reply it drops. msg is
// valid only during the call.
type DroppedReplyHook interface {
	OnDroppedReply(reason DropReason, msg *Message)
}

// SkippedRequestHook is called by a Responder for every request it does not
// hand to its handler. msg is valid only during the call; err says why.
type SkippedRequestHook interface {
	OnSkippedRequest(reason SkipReason, msg *Message, err error)
}

// hooks holds the hooks by interface, found once by type assertion.
type hooks struct {
	dropped     []DroppedReplyHook
	skipped     []SkippedRequestHook
	reqStart    []RequestStartHook
	reqEnd      []RequestEndHook
	handleStart []HandleStartHook
	replyPub    []ReplyPublishHook
	handleEnd   []HandleEndHook
}

// requests reports whether there are request hooks.
func (h *hooks) requests() bool { return len(h.reqStart)+len(h.reqEnd) > 0 }

// handling reports whether there are handling hooks.
func (h *hooks) handling() bool { return len(h.handleStart)+len(h.replyPub)+len(h.handleEnd) > 0 }

func newHooks(hs []Hook) (hooks, error) {
	var h hooks
	for i, x := range hs {
		// Each hook goes to every list whose interface it implements.
		n := collect(x, &h.dropped) + collect(x, &h.skipped) +
			collect(x, &h.reqStart) + collect(x, &h.reqEnd) +
			collect(x, &h.handleStart) + collect(x, &h.replyPub) + collect(x, &h.handleEnd)
		if n == 0 {
			return hooks{}, fmt.Errorf("syncbridge: WithHooks: hook %d (%T) implements no hook interface", i, x)
		}
	}
	return h, nil
}

// collect appends x to list when x implements T, and returns 1 then, 0
// otherwise.
func collect[T any](x Hook, list *[]T) int {
	if t, ok := x.(T); ok {
		*list = append(*list, t)
		return 1
	}
	return 0
}

// DropReason says why a Bridge dropped a reply.
type DropReason int

// Reasons for dropping a reply.
const (
	// DropMalformed: the reply has no correlation ID header.
	DropMalformed DropReason = iota
	// DropForeign: the reply belongs to another Bridge sharing the reply
	// topic. Expected, and frequent, when Bridges share a reply topic
	// without pinned partitions.
	DropForeign
	// DropUnknown: the correlation ID names this Bridge but no request it
	// ever sent.
	DropUnknown
	// DropDuplicate: the request was answered already (at-least-once
	// delivery, or a responder that ran twice). Detected for recently
	// answered requests; older duplicates count as late.
	DropDuplicate
	// DropLate: the request is no longer waiting: it timed out, was
	// cancelled, or was answered long ago.
	DropLate
	numDropReasons
)

var dropNames = [...]string{"malformed", "foreign", "unknown", "duplicate", "late"}

// String returns the reason's name: "malformed", "foreign", "unknown",
// "duplicate" or "late".
func (r DropReason) String() string {
	if r < 0 || r >= numDropReasons {
		return "DropReason(?)"
	}
	return dropNames[r]
}

// SkipReason says why a Responder did not handle a request.
type SkipReason int

// Reasons for skipping a request.
const (
	// SkipMalformed: the request's routing headers are missing or cannot
	// be decoded, so no reply could reach its caller.
	SkipMalformed SkipReason = iota
	// SkipExpired: the caller's deadline had passed when the request
	// arrived: nobody waits for the reply.
	SkipExpired
	numSkipReasons
)

var skipNames = [...]string{"malformed", "expired"}

// String returns the reason's name: "malformed" or "expired".
func (r SkipReason) String() string {
	if r < 0 || r >= numSkipReasons {
		return "SkipReason(?)"
	}
	return skipNames[r]
}
