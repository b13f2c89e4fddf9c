package syncbridge

import (
	"context"
	"sync"
	"time"
)

// GatherOptions say when Gather stops collecting replies. The deadline of
// Gather's ctx (or the default timeout) always applies.
type GatherOptions struct {
	// Count stops the gathering once this many distinct replies arrived.
	// Zero means no count: gather until the deadline or a quiet gap.
	Count int
	// Quiet stops the gathering when no reply arrived for this long since
	// the last one (the first reply starts the clock). Zero means no quiet
	// stop.
	Quiet time.Duration
}

// GatherStop says why Gather stopped.
type GatherStop uint8

// Reasons for Gather to stop.
const (
	GatherCount    GatherStop = iota // GatherOptions.Count replies arrived
	GatherQuiet                      // no reply for GatherOptions.Quiet
	GatherDeadline                   // the deadline passed
	GatherCanceled                   // ctx was cancelled
	GatherClosed                     // the Bridge was closed (the error is ErrClosed)
)

var gatherStopNames = [...]string{"count", "quiet", "deadline", "canceled", "closed"}

// String returns "count", "quiet", "deadline", "canceled" or "closed".
func (s GatherStop) String() string {
	if int(s) >= len(gatherStopNames) {
		return "GatherStop(?)"
	}
	return gatherStopNames[s]
}

// Gathered is what Gather collected: partial results are results.
type Gathered struct {
	// Replies are the normal replies, in the order they arrived.
	Replies []*Message
	// Errors are the error replies, in the order they arrived; each
	// carries its reply message.
	Errors []*RemoteError
	// Stop says why the gathering stopped.
	Stop GatherStop
}

// Len returns the number of distinct replies, normal and error replies.
func (g *Gathered) Len() int { return len(g.Replies) + len(g.Errors) }

// gathering is the state of a Call started by Gather.
type gathering struct {
	count  int
	quiet  time.Duration
	notify chan struct{} // capacity 1: a reply arrived

	mu      sync.Mutex // protects the fields below
	result  Gathered
	seen    map[string]struct{} // the Responder header of each reply so far
	over    bool                // the gathering ended: later replies are late
	stopped bool                // result.Stop is set
}

// add records a reply unless its responder answered already or the
// gathering is over; it reports which, and whether the count is reached
// (which ends the gathering).
func (g *gathering) add(m *Message, h *HeaderNames) (dup, late, full bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.over {
		return false, true, false
	}
	if who, ok := m.Header(h.Responder); ok {
		if _, ok := g.seen[string(who)]; ok {
			return true, false, false
		}
		if g.seen == nil {
			g.seen = make(map[string]struct{})
		}
		g.seen[string(who)] = struct{}{}
	}
	if re := parseReplyError(m, h); re != nil {
		g.result.Errors = append(g.result.Errors, re)
	} else {
		g.result.Replies = append(g.result.Replies, m)
	}
	select {
	case g.notify <- struct{}{}:
	default:
	}
	if g.count > 0 && g.result.Len() >= g.count {
		g.stop(GatherCount)
		return false, false, true
	}
	return false, false, false
}

// stop ends the gathering for reason, unless it ended already, and reports
// whether it did. g.mu must be held.
func (g *gathering) stop(reason GatherStop) bool {
	if g.over {
		return false
	}
	g.over, g.stopped, g.result.Stop = true, true, reason
	return true
}

// stopQuiet ends the gathering for a quiet gap, unless it ended already.
func (g *gathering) stopQuiet() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stop(GatherQuiet)
}

// ended ends the gathering as its Call ends with o, and returns how many
// replies it got.
func (g *gathering) ended(o outcome) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch o {
	case outCanceled:
		g.stop(GatherCanceled)
	case outClosed:
		g.stop(GatherClosed)
	default:
		g.stop(GatherDeadline)
	}
	return g.result.Len()
}

// Gather publishes msg once and collects the replies of every responder
// that answers it — scatter-gather — until GatherOptions.Count distinct
// replies arrived, a quiet gap of GatherOptions.Quiet passed since the last
// one, or ctx ends (its deadline, or the default timeout when it has none),
// whichever comes first. It returns what arrived and why it stopped, with a
// nil error as soon as at least one reply arrived: partial results on
// timeout are a result (but for ErrClosed, which is returned with what
// arrived when the Bridge closes).
//
// Replies are counted once per responder: a Responder marks its replies
// with its group (the Responder header), and a second reply from one group
// (a redelivered request) is dropped as a duplicate. Replies without that
// header (from Spring or NestJS responders) are each counted. For a request
// to reach several responders, each must read it: on Kafka, give each its
// own group (WithGroup).
//
// Errors are those of Request when nothing arrived: ErrPublish,
// ErrOverloaded, ErrNoResponders, ErrClosed, ErrInvalidMessage (also for
// a negative Count or Quiet), or ErrNoReply with ctx's error (the
// Gathered is then empty, not nil). A Gather waiting for
// replies costs no goroutine; it counts in Stats as one request.
func (b *Bridge) Gather(ctx context.Context, msg Message, opts GatherOptions) (*Gathered, error) {
	g := &gathering{count: opts.Count, quiet: opts.Quiet, notify: make(chan struct{}, 1)}
	c := &Call{b: b, topic: msg.Topic, parent: ctx, g: g}
	c.ch = make(chan struct{}, 1)
	b.start(c, &msg, false)
	var expiry, quiet <-chan time.Time
	var deadline, gap *time.Timer
	if _, ok := ctx.Deadline(); !ok && c.deadline != 0 {
		deadline = b.timers.Get().(*time.Timer)
		deadline.Reset(c.untilDeadline())
		expiry = deadline.C
	}
	done := ctx.Done()
wait:
	for {
		select {
		case <-c.ch:
			break wait
		case <-g.notify:
			if opts.Quiet > 0 {
				if gap == nil {
					gap = b.timers.Get().(*time.Timer)
				}
				gap.Reset(opts.Quiet)
				quiet = gap.C
			}
		case <-quiet:
			quiet = nil
			if g.stopQuiet() && b.reg.remove(c.seq) != nil {
				c.end(nil, nil, outReply)
			}
		case <-done:
			done = nil // once: the Call ends when the transport's verdict comes
			c.expire(ctx.Err())
		case <-expiry:
			expiry = nil
			c.expire(context.DeadlineExceeded)
		}
	}
	for _, t := range []*time.Timer{deadline, gap} {
		if t != nil {
			t.Stop()
			b.timers.Put(t)
		}
	}
	g.mu.Lock()
	res := g.result
	g.mu.Unlock()
	return &res, c.err
}
