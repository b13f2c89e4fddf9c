package syncbridge

import (
	"fmt"
)

// Hook is a value implementing one or more of the hook interfaces below,
// passed to WithHooks. New hook interfaces may be added; a value
// implementing none of them makes New or NewResponder fail. Hook methods are called synchronously, on the
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

func newHooks(hs []Hook) (hooks, error) {
	var h hooks
	for i, x := range hs {
		any := false
		if d, ok := x.(DroppedReplyHook); ok {
			h.dropped = append(h.dropped, d)
			any = true
		}
		if s, ok := x.(SkippedRequestHook); ok {
			h.skipped = append(h.skipped, s)
			any = true
		}
		if !any {
			return hooks{}, fmt.Errorf("syncbridge: WithHooks: hook %d (%T) implements no hook interface", i, x)
		}
	}
	return h, nil
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
