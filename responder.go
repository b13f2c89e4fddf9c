package syncbridge

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// ReplyHandler handles one request for a Responder and returns the reply.
// ctx carries the caller's deadline (capped by WithMaxTimeout), or the
// default timeout from now when the request carries none (see
// WithDefaultTimeout); Close cancels it. req belongs to the handler. The
// reply's Topic and partition fields are ignored (the Responder addresses
// it to the caller); its Key, Value and Headers are sent. Return a
// *RemoteError (see NewRemoteError) to send an error reply with a code of
// your choice; any other error is sent with CodeInternal and the error's
// text.
type ReplyHandler func(ctx context.Context, req *Message) (Message, error)

// Responder serves a request topic: it consumes requests as one member of
// a consumer group (each request goes to one Responder of the group), calls
// its handler, and publishes the reply to the reply topic (and partition)
// that the request names, echoing its correlation ID byte for byte.
//
// Handler calls for one partition are sequential and in order unless
// WithConcurrentHandlers. On a transport that can publish without waiting
// and take acks (an AsyncPublisher and an AckSubscriber, as the Kafka
// transport is), the Responder hands each reply to the transport and goes
// on to the next request without waiting for the reply's acknowledgement;
// the request counts as processed (on Kafka: its offset is committed) only
// once its reply is acknowledged, or could not be published, and so are
// the replies of every request before it. On other transports it
// publishes each reply, and waits for it, before the next request.
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

	replyTo   atomic.Pointer[string] // the last reply topic seen, to reuse its string
	groupName []byte                 // cfg.group, the value of the Responder header
	stats     responderCounters

	closing atomic.Bool // Close began: handler contexts are cancelled
	mu      sync.Mutex  // protects waiting
	// waiting holds the handler contexts whose Done channel was asked for,
	// so that Close can close them.
	waiting   map[*deadlineCtx]struct{}
	closeOnce sync.Once
	closeErr  error         // the subscription's Close error
	closed    chan struct{} // closed once the subscription is closed
}

// NewResponder subscribes to topic and serves its requests with h until
// Shutdown or Close. ctx bounds subscribing (on Kafka: joining the group's
// coordinator and metadata lookups). opts must be options that apply to a
// Responder (ResponderOption); NewResponder fails on others.
func NewResponder(ctx context.Context, t Transport, topic string, h ReplyHandler, opts ...Option) (*Responder, error) {
	if t == nil || h == nil {
		return nil, errors.New("syncbridge: NewResponder: nil Transport or handler")
	}
	if topic == "" {
		return nil, errors.New("syncbridge: NewResponder: empty topic")
	}
	cfg := defaultConfig()
	cfg.group = topic + ".responders"
	hs, err := applyOptions(&cfg, opts, false)
	if err != nil {
		return nil, err
	}
	if cfg.group == "" {
		return nil, errors.New("syncbridge: NewResponder: empty group")
	}
	r := &Responder{t: t, cfg: cfg, hooks: hs, h: h, groupName: []byte(cfg.group), waiting: make(map[*deadlineCtx]struct{}), closed: make(chan struct{})}
	scfg := SubscribeConfig{Topic: topic, Group: cfg.group, Concurrent: cfg.concurrent}
	var sub Subscription
	_, async := t.(AsyncPublisher)
	if as, ok := t.(AckSubscriber); ok && async {
		sub, err = as.SubscribeAck(ctx, scfg, r.serveAck)
	} else {
		sub, err = t.Subscribe(ctx, scfg, r.serve)
	}
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
	ctx  deadlineCtx // the handler's (ctx.r is the Responder), and the reply's (ctx.rc)
	hdrs [1]Header   // the correlation ID of a plain reply
}

// inboundAck is inbound for a reply published without waiting (serveAck):
// with what its done callback needs.
type inboundAck struct {
	inbound
	hi  *HandleInfo // with hooks; else nil
	ack func()      // the transport's ack
}

// serve handles one request: the transport's Handler, when the transport
// cannot publish without waiting or cannot take acks. It returns once the
// reply is published (or could not be), so that an at-least-once
// transport commits the request only after its reply is out.
func (r *Responder) serve(_ context.Context, msg Message) {
	in := &inbound{req: msg}
	hi, out, ok := r.handle(in)
	if !ok {
		return
	}
	// The reply's context has the request's deadline and is not cancelled
	// by Close, which may begin at any moment: the caller still waits,
	// answer it.
	perr := r.t.Publish(&in.ctx.rc, out)
	in.ctx.rc.release()
	in.published(perr, hi)
}

// serveAck handles one request as serve does, but hands the reply to the
// transport without waiting for its acknowledgement: the transport's
// AckHandler, when it is an AsyncPublisher and an AckSubscriber. The
// request is acked once its reply is acknowledged (or could not be
// published), so the transport commits it only then, as with serve, while
// it goes on to the next request meanwhile. The reply's context has the
// request's deadline and is not cancelled by Close, as serve's.
func (r *Responder) serveAck(_ context.Context, msg Message, ack func()) {
	ia := &inboundAck{inbound: inbound{req: msg}, ack: ack}
	hi, out, ok := r.handle(&ia.inbound)
	if !ok {
		ack()
		return
	}
	ia.hi = hi
	r.t.(AsyncPublisher).PublishAsync(&ia.ctx.rc, out, ia.done)
}

// done is PublishAsync's done callback for the reply of ia's request.
func (ia *inboundAck) done(perr error) {
	ia.published(perr, ia.hi)
	ia.ctx.rc.release()
	ia.ack()
}

// handle runs the handler for the request in in, and returns the reply to
// publish, and the HandleInfo, with hooks, to give published once it is;
// ok false when the request was skipped or the reply is not to be
// published (its deadline passed): that is done with.
func (r *Responder) handle(in *inbound) (hi *HandleInfo, out Message, ok bool) {
	req := &in.req
	ri, err := parseRequest(req, &r.cfg.headers, &r.replyTo)
	if err != nil {
		r.skip(SkipMalformed, req, err)
		return nil, out, false
	}
	now := time.Now()
	deadline := ri.deadline
	switch {
	case deadline.IsZero():
		deadline = now.Add(r.cfg.defaultTimeout)
	case !now.Before(deadline):
		r.skip(SkipExpired, req, fmt.Errorf("syncbridge: deadline %v passed", deadline))
		return nil, out, false
	case deadline.UnixNano()-now.UnixNano() > int64(r.cfg.maxTimeout): // no Sub: cheaper
		deadline = now.Add(r.cfg.maxTimeout)
	}
	in.ctx.rc.deadline = deadline.UnixNano()
	in.ctx.r = r
	ctx := &in.ctx
	r.stats.inProgress.Add(1)
	var hctx context.Context = ctx
	if r.hooks.handling() {
		hi = &HandleInfo{Context: ctx, Topic: req.Topic, Group: r.cfg.group, Request: req, ID: ri.id}
		if !req.Time.IsZero() {
			hi.Queued = now.Sub(req.Time)
		}
		for _, h := range r.hooks.handleStart {
			h.OnHandleStart(hi)
		}
		hctx = hi.Context
	}
	reply, err, panicked := r.call(hctx, req)
	r.stats.handled.Add(1)
	if hi != nil {
		hi.Err, hi.Panicked, hi.Handling = err, panicked, time.Since(now)
	}
	out = Message{Topic: ri.replyTo, Key: reply.Key, Value: reply.Value, Partition: ri.partition, UsePartition: ri.hasPartition}
	h := &r.cfg.headers
	out.Headers = in.hdrs[:0]
	for _, x := range reply.Headers {
		if !h.reserved(x.Key) && !isNestHeader(x.Key) { // a handler passing on another reply's headers
			out.Headers = append(out.Headers, x)
		}
	}
	out.Headers = append(out.Headers, Header{Key: h.CorrelationID, Value: ri.id})
	if ri.gather { // Gather counts one reply per responder group
		out.Headers = append(out.Headers, Header{Key: h.Responder, Value: r.groupName})
	}
	var re *RemoteError // the error reply's, nil for a normal reply
	if err != nil {
		r.stats.failed.Add(1)
		re = asRemoteError(err)
		code := re.Code
		if code == "" {
			code = CodeInternal
		}
		out.Headers = append(out.Headers,
			Header{Key: h.ErrorCode, Value: []byte(code)},
			Header{Key: h.ErrorDescription, Value: []byte(re.Description)})
	}
	// interop (dialect.go): the last reply to a NestJS caller
	if r.cfg.dialect.nestReply(&ri) {
		out.Headers = appendNestHeaders(out.Headers, re)
	}
	// The reply is published within the request's deadline (a handler
	// cancelled by Close still answers its caller): past it, Publish
	// refuses it (ErrNotSent), since nobody waits for it any more.
	if hi != nil {
		if !time.Now().Before(deadline) { // no reply hooks for a reply nobody waits for
			r.stats.replyExpired.Add(1)
			in.end(hi)
			return nil, out, false
		}
		m := out // on the heap only when there are hooks
		for _, h := range r.hooks.replyPub {
			h.OnReplyPublish(hi, &m)
		}
		out = m
		hi.Reply = &m
	}
	return hi, out, true
}

// published ends the request once the transport says what became of its
// reply: perr is what Publish returned, or what PublishAsync's done got.
func (in *inbound) published(perr error, hi *HandleInfo) {
	r := in.ctx.r
	switch {
	case perr == nil:
	case errors.Is(perr, context.DeadlineExceeded) && errors.Is(perr, ErrNotSent):
		// Nobody waits for this reply any more: the deadline passed.
		r.stats.replyExpired.Add(1)
		if hi != nil {
			hi.Reply = nil
		}
	default:
		r.stats.replyFails.Add(1)
		if hi != nil {
			hi.ReplyErr = perr
		}
		if l := r.cfg.logger; l != nil {
			to, _ := in.req.Header(r.cfg.headers.ReplyTopic)
			id, _ := in.req.Header(r.cfg.headers.CorrelationID)
			l.Warn("syncbridge: reply not published", "topic", string(to), "correlation", string(id), "err", perr)
		}
	}
	in.end(hi)
}

// end ends a handled request: HandleEndHooks, the handler's context and
// the count in progress.
func (in *inbound) end(hi *HandleInfo) {
	r := in.ctx.r
	if hi != nil {
		r.handleEnd(hi)
	}
	in.ctx.release()
	r.stats.inProgress.Add(-1)
}

// handleEnd calls the HandleEndHooks.
func (r *Responder) handleEnd(hi *HandleInfo) {
	for _, h := range r.hooks.handleEnd {
		h.OnHandleEnd(hi)
	}
}

// asRemoteError returns the *RemoteError in err's chain, or one with
// CodeInternal and err's text. Its own function, so that the variable
// errors.As needs escapes only when there is an error.
func asRemoteError(err error) *RemoteError {
	var re *RemoteError
	if !errors.As(err, &re) {
		re = &RemoteError{Code: CodeInternal, Description: err.Error()}
	}
	return re
}

// call runs the handler, turning a panic into an error.
func (r *Responder) call(ctx context.Context, req *Message) (reply Message, err error, panicked bool) {
	defer func() {
		if p := recover(); p != nil {
			r.stats.panicked.Add(1)
			if l := r.cfg.logger; l != nil {
				l.Error("syncbridge: handler panicked", "topic", req.Topic, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			}
			reply, err, panicked = Message{}, &RemoteError{Code: CodePanic, Description: "handler panicked"}, true
		}
	}()
	reply, err = r.h(ctx, req)
	return reply, err, false
}

func (r *Responder) skip(reason SkipReason, msg *Message, err error) {
	r.stats.skipped[reason].Add(1)
	for _, h := range r.hooks.skipped {
		h.OnSkippedRequest(reason, msg, err)
	}
	if l := r.cfg.logger; l != nil {
		l.Debug("syncbridge: skipped request", "reason", reason.String(), "topic", msg.Topic, "err", err)
	}
}

// Shutdown stops the Responder gracefully: it stops taking requests, lets
// the handler calls in progress finish and publishes their replies, lets
// the transport commit what was handled (on Kafka: commits, then leaves
// the group, so that the other members take the partitions over at once),
// and returns. Requests not yet handed to the handler stay for the other
// members of the group. When ctx ends first, Shutdown does what Close does
// and returns ctx's error once it is done.
func (r *Responder) Shutdown(ctx context.Context) error {
	go r.closeSub()
	select {
	case <-r.closed:
		return r.closeErr
	case <-ctx.Done():
		r.Close()
		return ctx.Err()
	}
}

// Close stops the Responder at once: it stops taking requests, cancels the
// contexts of the handler calls in progress, and returns once they have
// returned, their replies are published (a handler that gives up when its
// context is cancelled can still tell its caller so, with an error reply)
// and the subscription is closed. How long that takes depends on the
// handlers honouring their context, not on the requests' deadlines. Close
// is idempotent, and safe to call during Shutdown.
func (r *Responder) Close() error {
	r.closing.Store(true)
	r.mu.Lock()
	ws := make([]*deadlineCtx, 0, len(r.waiting))
	for c := range r.waiting {
		ws = append(ws, c)
	}
	r.mu.Unlock()
	for _, c := range ws {
		c.end(ctxCanceled)
	}
	return r.closeSub()
}

// closeSub closes the subscription once, marks the Responder closed and
// returns the subscription's Close error.
func (r *Responder) closeSub() error {
	r.closeOnce.Do(func() {
		r.closeErr = r.sub.Close()
		close(r.closed)
	})
	<-r.closed
	return r.closeErr
}
