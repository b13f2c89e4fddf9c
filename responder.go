package syncbridge

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// ReplyHandler handles one request for a Responder and returns the reply.
// ctx carries the caller's deadline, or DefaultResponderTimeout from now
// when the request has none. req belongs
// to the handler. The reply's Topic and partition fields are ignored (the
// Responder addresses it to the caller); its Key, Value and Headers are
// sent. Return a *RemoteError (see NewRemoteError) to send an error reply
// with a code of your choice; any other error is sent with CodeInternal and
// the error's text.
type ReplyHandler func(ctx context.Context, req *Message) (Message, error)

// Responder serves a request topic: it consumes requests as one member of
// a consumer group (each request goes to one Responder of the group), calls
// its handler, and publishes the reply to the reply topic (and partition)
// that the request names, echoing its correlation ID byte for byte.
//
// A request whose caller's deadline has passed is skipped, not handled. A
// handler that returns an error or panics produces an error reply; the
// Responder keeps serving. It works with any requester that sets the
// correlation and reply-topic headers, Spring's ReplyingKafkaTemplate
// included.
type Responder struct {
	t     Transport
	cfg   config
	hooks hooks
	h     ReplyHandler
	sub   Subscription

	replyTo atomic.Pointer[string] // the last reply topic seen, to reuse its string

	handled      atomic.Uint64
	failed       atomic.Uint64
	panicked     atomic.Uint64
	skipped      [numSkipReasons]atomic.Uint64
	replyFails   atomic.Uint64
	replyExpired atomic.Uint64
}

// DefaultResponderTimeout bounds the handling of a request that carries no
// deadline, and the publishing of its reply.
const DefaultResponderTimeout = DefaultTimeout

// NewResponder subscribes to topic and serves its requests with h until
// Close. Subscribing takes at most DefaultResponderTimeout.
func NewResponder(t Transport, topic string, h ReplyHandler, opts ...ResponderOption) (*Responder, error) {
	if t == nil || h == nil {
		return nil, errors.New("syncbridge: NewResponder: nil Transport or handler")
	}
	if topic == "" {
		return nil, errors.New("syncbridge: NewResponder: empty topic")
	}
	cfg := defaultConfig()
	cfg.group = topic + ".responders"
	for _, o := range opts {
		if o != nil {
			o.applyResponder(&cfg)
		}
	}
	if err := cfg.headers.validate(); err != nil {
		return nil, err
	}
	if cfg.group == "" {
		return nil, errors.New("syncbridge: NewResponder: empty group")
	}
	r := &Responder{t: t, cfg: cfg, hooks: newHooks(cfg.hooks), h: h}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultResponderTimeout)
	defer cancel()
	sub, err := t.Subscribe(ctx, SubscribeConfig{Topic: topic, Group: cfg.group, Concurrent: cfg.concurrent}, r.serve)
	if err != nil {
		return nil, fmt.Errorf("syncbridge: subscribe to request topic %q: %w", topic, err)
	}
	r.sub = sub
	return r, nil
}

// inbound holds what the Responder needs for one request, in one
// allocation: the request, its handler's context, and room for the reply's
// headers.
type inbound struct {
	req  Message
	ctx  deadlineCtx
	hdrs [1]Header // the correlation ID of a plain reply
}

// serve handles one request: the transport's Handler. It returns once the
// reply is published (or could not be), so that an at-least-once transport
// commits the request only after its reply is out.
func (r *Responder) serve(_ context.Context, msg Message) {
	in := &inbound{req: msg}
	req := &in.req
	ri, err := parseRequest(req, &r.cfg.headers, &r.replyTo)
	if err != nil {
		r.skip(SkipMalformed, req, err)
		return
	}
	deadline := ri.deadline
	if deadline.IsZero() {
		deadline = time.Now().Add(DefaultResponderTimeout)
	} else if !time.Now().Before(deadline) {
		r.skip(SkipExpired, req, fmt.Errorf("syncbridge: deadline %v passed", deadline))
		return
	}
	// The handler's context is not cancelled by Close: Close waits for
	// handlers in progress, which end by the caller's deadline.
	in.ctx.deadline = deadline
	ctx := &in.ctx
	defer ctx.release()
	reply, err := r.call(ctx, req)
	r.handled.Add(1)
	out := Message{Topic: ri.replyTo, Key: reply.Key, Value: reply.Value, Partition: ri.partition, UsePartition: ri.hasPartition}
	h := &r.cfg.headers
	out.Headers = in.hdrs[:0]
	for _, x := range reply.Headers {
		if !h.reserved(x.Key) { // a handler passing on another reply's headers
			out.Headers = append(out.Headers, x)
		}
	}
	out.Headers = append(out.Headers, Header{Key: h.CorrelationID, Value: ri.id})
	if err != nil {
		r.failed.Add(1)
		var re *RemoteError
		if !errors.As(err, &re) {
			re = &RemoteError{Code: CodeInternal, Description: err.Error()}
		}
		code := re.Code
		if code == "" {
			code = CodeInternal
		}
		out.Headers = append(out.Headers,
			Header{Key: h.ErrorCode, Value: []byte(code)},
			Header{Key: h.ErrorDescription, Value: []byte(re.Description)})
	}
	if !time.Now().Before(deadline) {
		// Nobody waits for this reply any more: the caller gave up.
		r.replyExpired.Add(1)
		return
	}
	if perr := r.t.Publish(ctx, out); perr != nil {
		r.replyFails.Add(1)
		if l := r.cfg.logger; l != nil {
			l.Warn("syncbridge: reply not published", "topic", ri.replyTo, "correlation", string(ri.id), "err", perr)
		}
	}
}

// call runs the handler, turning a panic into an error.
func (r *Responder) call(ctx context.Context, req *Message) (reply Message, err error) {
	defer func() {
		if p := recover(); p != nil {
			r.panicked.Add(1)
			if l := r.cfg.logger; l != nil {
				l.Error("syncbridge: handler panicked", "topic", req.Topic, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			}
			reply, err = Message{}, &RemoteError{Code: CodePanic, Description: "handler panicked"}
		}
	}()
	return r.h(ctx, req)
}

func (r *Responder) skip(reason SkipReason, msg *Message, err error) {
	r.skipped[reason].Add(1)
	for _, h := range r.hooks.skipped {
		h.OnSkippedRequest(reason, msg, err)
	}
	if l := r.cfg.logger; l != nil {
		l.Debug("syncbridge: skipped request", "reason", reason.String(), "topic", msg.Topic, "err", err)
	}
}

// Close stops consuming and returns once every handler call in progress
// has returned and its reply is published. Handlers' contexts are not
// cancelled; they end at the caller's deadline. Close is idempotent.
func (r *Responder) Close() error { return r.sub.Close() }

// ResponderStats are a Responder's counters since NewResponder.
type ResponderStats struct {
	Handled     uint64 // requests handed to the handler
	Failed      uint64 // handler calls that returned an error or panicked
	Panicked    uint64 // handler calls that panicked
	ReplyFailed uint64 // replies that could not be published
	// ReplyExpired counts replies not sent because the caller's deadline
	// passed while the handler ran (DefaultResponderTimeout for requests
	// without a deadline).
	ReplyExpired uint64
	// Skipped counts requests not handled, indexed by SkipReason.
	Skipped [numSkipReasons]uint64
}

// Stats returns the Responder's counters, read one by one.
func (r *Responder) Stats() ResponderStats {
	s := ResponderStats{
		Handled:      r.handled.Load(),
		Failed:       r.failed.Load(),
		Panicked:     r.panicked.Load(),
		ReplyFailed:  r.replyFails.Load(),
		ReplyExpired: r.replyExpired.Load(),
	}
	for i := range s.Skipped {
		s.Skipped[i] = r.skipped[i].Load()
	}
	return s
}
