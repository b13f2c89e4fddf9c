package syncbridge

import (
	"sync/atomic"
)

// Hook is a value implementing one or more of the hook interfaces below,
// passed to WithHooks. New hook interfaces may be added; a hook implementing
// none of them is ignored. Hook methods are called synchronously, on the
// path of a reply or request: they must be fast, must not block, and must be
// safe for concurrent use.
type Hook any

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
	dropped []DroppedReplyHook
	skipped []SkippedRequestHook
}

func newHooks(hs []Hook) hooks {
	var h hooks
	for _, x := range hs {
		if d, ok := x.(DroppedReplyHook); ok {
			h.dropped = append(h.dropped, d)
		}
		if s, ok := x.(SkippedRequestHook); ok {
			h.skipped = append(h.skipped, s)
		}
	}
	return h
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

// counters are a Bridge's statistics.
type counters struct {
	replies       atomic.Uint64
	remoteErrors  atomic.Uint64
	noReply       atomic.Uint64
	publishErrors atomic.Uint64
	overloaded    atomic.Uint64
	dropped       [numDropReasons]atomic.Uint64
}

// Stats are a Bridge's counters since New. Use them for metrics.
type Stats struct {
	InFlight      int    // requests in flight now
	Waiting       int    // requests registered and waiting for their reply now
	Replies       uint64 // requests answered with a normal reply
	RemoteErrors  uint64 // requests answered with an error reply
	NoReply       uint64 // requests published that got no reply in time
	PublishErrors uint64 // requests that could not be published
	Overloaded    uint64 // requests refused with ErrOverloaded
	// Dropped counts dropped replies by reason, indexed by DropReason.
	Dropped [numDropReasons]uint64
}

// Stats returns the Bridge's counters. It is safe to call at any time; the
// counters are read one by one, not as one snapshot.
func (b *Bridge) Stats() Stats {
	s := Stats{
		InFlight:      int(b.inflight.Load()),
		Waiting:       b.reg.len(),
		Replies:       b.stats.replies.Load(),
		RemoteErrors:  b.stats.remoteErrors.Load(),
		NoReply:       b.stats.noReply.Load(),
		PublishErrors: b.stats.publishErrors.Load(),
		Overloaded:    b.stats.overloaded.Load(),
	}
	for i := range s.Dropped {
		s.Dropped[i] = b.stats.dropped[i].Load()
	}
	return s
}
