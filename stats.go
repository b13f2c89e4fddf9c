package syncbridge

import (
	"context"
	"errors"
	"sync/atomic"
)

// outcome is how a request ended, for the counters.
type outcome uint8

const (
	outReply outcome = iota
	outRemote
	outCanceled
	outTimedOut
	outPublish
	outOverloaded
	outClosed
	outInvalid
	outNoResponders
	numOutcomes
)

// outcomeOf classifies the error that ended a request without a reply.
func outcomeOf(err error) outcome {
	switch {
	case errors.Is(err, context.Canceled):
		return outCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return outTimedOut
	default:
		return outPublish
	}
}

// counters are a Bridge's statistics.
type counters struct {
	outcomes [numOutcomes]atomic.Uint64
	dropped  [numDropReasons]atomic.Uint64
}

// Stats are a Bridge's counters since New, for metrics. Each request not
// refused with ErrInvalidMessage (no topic, or invalid GatherOptions) ends
// in exactly one of Replies, RemoteErrors, Canceled, TimedOut,
// PublishErrors, Overloaded, Closed and NoResponders, whether it was
// started by Request, Go or Gather; an invalid one counts in none.
type Stats struct {
	// InFlight is the number of requests in flight now: started, and not
	// yet returned (Request) or ended (Go).
	InFlight int
	// Waiting is the number of requests registered for a reply now.
	Waiting int
	// Replies counts requests answered with a normal reply.
	Replies uint64
	// RemoteErrors counts requests answered with an error reply.
	RemoteErrors uint64
	// Canceled counts requests ended by their caller: the context was
	// cancelled, or Call.Cancel was called, before a reply came. Whether
	// the request was sent shows in the error (ErrPublish: not sent;
	// ErrNoReply: maybe sent), not here.
	Canceled uint64
	// TimedOut counts requests whose deadline passed (the context's, or the
	// default timeout) before a reply came, sent or not.
	TimedOut uint64
	// PublishErrors counts requests the transport could not send, for a
	// reason other than their context ending (ErrPublish).
	PublishErrors uint64
	// Overloaded counts requests refused with ErrOverloaded.
	Overloaded uint64
	// Closed counts requests refused or ended with ErrClosed.
	Closed uint64
	// NoResponders counts requests refused with ErrNoResponders.
	NoResponders uint64
	// Dropped counts the replies the Bridge dropped, by reason.
	Dropped DroppedReplies
}

// DroppedReplies counts dropped replies by DropReason.
type DroppedReplies struct {
	Malformed uint64 // DropMalformed
	Foreign   uint64 // DropForeign
	Unknown   uint64 // DropUnknown
	Duplicate uint64 // DropDuplicate
	Late      uint64 // DropLate
}

// Stats returns the Bridge's counters. It is safe to call at any time; the
// counters are read one by one, not as one snapshot.
func (b *Bridge) Stats() Stats {
	o := &b.stats.outcomes
	d := &b.stats.dropped
	return Stats{
		InFlight:      int(b.inflight.Load()),
		Waiting:       b.reg.len(),
		Replies:       o[outReply].Load(),
		RemoteErrors:  o[outRemote].Load(),
		Canceled:      o[outCanceled].Load(),
		TimedOut:      o[outTimedOut].Load(),
		PublishErrors: o[outPublish].Load(),
		Overloaded:    o[outOverloaded].Load(),
		Closed:        o[outClosed].Load(),
		NoResponders:  o[outNoResponders].Load(),
		Dropped: DroppedReplies{
			Malformed: d[DropMalformed].Load(),
			Foreign:   d[DropForeign].Load(),
			Unknown:   d[DropUnknown].Load(),
			Duplicate: d[DropDuplicate].Load(),
			Late:      d[DropLate].Load(),
		},
	}
}

// ResponderStats are a Responder's counters since NewResponder.
type ResponderStats struct {
	// InProgress is the number of requests handed to the handler and not
	// finished: handler calls in progress, and replies the transport has not
	// yet acknowledged (or failed).
	InProgress int
	// Handled counts requests handed to the handler.
	Handled uint64
	// Failed counts handler calls that returned an error or panicked.
	Failed uint64
	// Panicked counts handler calls that panicked.
	Panicked uint64
	// ReplyFailed counts replies that could not be published.
	ReplyFailed uint64
	// ReplyExpired counts replies not sent because the deadline passed
	// while the handler ran (the caller's, or the default timeout for a
	// request without one). A handler that Close cancelled still has its
	// reply sent, within that deadline.
	ReplyExpired uint64
	// Skipped counts requests not handed to the handler, by SkipReason.
	Skipped SkippedRequests
}

// SkippedRequests counts skipped requests by SkipReason.
type SkippedRequests struct {
	Malformed uint64 // SkipMalformed
	Expired   uint64 // SkipExpired
}

// responderCounters are a Responder's statistics.
type responderCounters struct {
	inProgress   atomic.Int64
	handled      atomic.Uint64
	failed       atomic.Uint64
	panicked     atomic.Uint64
	replyFails   atomic.Uint64
	replyExpired atomic.Uint64
	skipped      [numSkipReasons]atomic.Uint64
}

// Stats returns the Responder's counters, read one by one.
func (r *Responder) Stats() ResponderStats {
	c := &r.stats
	return ResponderStats{
		InProgress:   int(c.inProgress.Load()),
		Handled:      c.handled.Load(),
		Failed:       c.failed.Load(),
		Panicked:     c.panicked.Load(),
		ReplyFailed:  c.replyFails.Load(),
		ReplyExpired: c.replyExpired.Load(),
		Skipped: SkippedRequests{
			Malformed: c.skipped[SkipMalformed].Load(),
			Expired:   c.skipped[SkipExpired].Load(),
		},
	}
}
