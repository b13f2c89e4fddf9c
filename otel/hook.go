package otel

import (
	"context"
	"errors"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/syncbridge/syncbridge"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Span kinds, as options made once.
var (
	kindClient   = trace.WithSpanKind(trace.SpanKindClient)
	kindProducer = trace.WithSpanKind(trace.SpanKindProducer)
	kindConsumer = trace.WithSpanKind(trace.SpanKindConsumer)
)

// hook implements every syncbridge hook for a Telemetry.
type hook struct{ t *Telemetry }

var (
	_ syncbridge.RequestStartHook   = (*hook)(nil)
	_ syncbridge.RequestEndHook     = (*hook)(nil)
	_ syncbridge.DroppedReplyHook   = (*hook)(nil)
	_ syncbridge.HandleStartHook    = (*hook)(nil)
	_ syncbridge.ReplyPublishHook   = (*hook)(nil)
	_ syncbridge.HandleEndHook      = (*hook)(nil)
	_ syncbridge.SkippedRequestHook = (*hook)(nil)
)

// Values of error.type, but for remote error codes, which are reported as
// themselves (bounded: see WithErrorCodes).
const (
	ErrorTypeCanceled     = "canceled"      // the caller cancelled
	ErrorTypeNoReply      = "no_reply"      // the deadline passed without a reply
	ErrorTypePublish      = "publish"       // certainly not sent
	ErrorTypeOverloaded   = "overloaded"    // refused: MaxInFlight
	ErrorTypeClosed       = "closed"        // the Bridge closed
	ErrorTypeInvalid      = "invalid"       // refused: invalid message
	ErrorTypeNoResponders = "no_responders" // refused: the topic has no responder
	ErrorTypeExpired      = "expired"       // the responder saw the deadline pass
	ErrorTypeMalformed    = "malformed"     // the request's routing headers were malformed
	ErrorTypeOther        = "_OTHER"        // a remote error code past the bound
)

// requestCtx is the context a RequestStartHook leaves in
// RequestInfo.Context: the caller's, with the request span, and the state
// OnRequestEnd needs.
type requestCtx struct {
	context.Context // the caller's, with the request span
	span            trace.Span
	send            trace.Span
	sendStart       time.Time
}

type requestKey struct{}

func (c *requestCtx) Value(key any) any {
	if key == (requestKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// messageAttrs appends the attributes of a message that spans carry.
func (t *Telemetry) messageAttrs(kv []attribute.KeyValue, m *syncbridge.Message, id string) []attribute.KeyValue {
	if id != "" {
		kv = append(kv, semconv.MessagingMessageConversationID(id))
	}
	kv = append(kv, semconv.MessagingMessageBodySize(len(m.Value)))
	if t.kafka && m.Key != nil && utf8.Valid(m.Key) {
		kv = append(kv, semconv.MessagingKafkaMessageKey(string(m.Key)))
	}
	return kv
}

// OnRequestStart starts the request span and its send child, and injects
// the send span's context into the request's headers.
func (h *hook) OnRequestStart(info *syncbridge.RequestInfo) {
	t := h.t
	// One array for the attributes of both spans, in two slices: a tracer
	// may keep the slice it is given.
	buf := make([]attribute.KeyValue, 0, 16)
	kv := append(buf, t.system, semconv.MessagingOperationName(OpRequest), semconv.MessagingDestinationName(info.Topic))
	kv = t.messageAttrs(kv, info.Message, info.ID)
	kv = kv[:len(kv):len(kv)]
	ctx, span := t.tracer.Start(info.Context, t.spanName(OpRequest, info.Topic),
		kindClient, trace.WithTimestamp(info.Start), trace.WithAttributes(kv...))
	rc := &requestCtx{Context: ctx, span: span}
	// The send span has the same attributes, but for the operation.
	skv := append(buf[len(kv):len(kv)], kv...)
	skv[1] = semconv.MessagingOperationName(OpSend)
	skv = append(skv, semconv.MessagingOperationTypeSend)
	if m := info.Message; m.UsePartition {
		skv = append(skv, semconv.MessagingDestinationPartitionID(strconv.Itoa(int(m.Partition))))
	}
	rc.sendStart = time.Now()
	sctx, send := t.tracer.Start(rc, t.spanName(OpSend, info.Topic),
		kindProducer, trace.WithAttributes(skv...))
	rc.send = send
	t.prop.Inject(sctx, HeaderCarrier{&info.Message.Headers})
	info.Context = rc
}

// OnRequestEnd ends the request's spans and records its metrics. A request
// refused before OnRequestStart gets a request span too, started when
// Request or Go was called.
func (h *hook) OnRequestEnd(info *syncbridge.RequestInfo) {
	t := h.t
	errType := t.requestErrorType(info)
	rc, _ := info.Context.Value(requestKey{}).(*requestCtx)
	var span trace.Span
	ctx := info.Context
	if rc != nil {
		span = rc.span
	} else {
		kv := []attribute.KeyValue{t.system, semconv.MessagingOperationName(OpRequest)}
		if info.Topic != "" {
			kv = append(kv, semconv.MessagingDestinationName(info.Topic))
		}
		ctx, span = t.tracer.Start(info.Context, t.spanName(OpRequest, info.Topic),
			kindClient, trace.WithTimestamp(info.Start), trace.WithAttributes(kv...))
	}
	if rc != nil && rc.send != nil {
		// The send span ends when the transport acknowledged the request,
		// or refused it; now when it has not said yet. Its error.type is
		// the request's when the request was certainly not sent.
		var sendErr string
		if errors.Is(info.Err, syncbridge.ErrPublish) {
			sendErr = errType
			rc.send.SetStatus(codes.Error, info.Err.Error())
			rc.send.SetAttributes(semconv.ErrorTypeKey.String(sendErr))
		}
		set := t.set(setKey{op: OpSend, topic: info.Topic, errType: sendErr})
		if d := info.PublishDuration; d > 0 {
			rc.send.End(trace.WithTimestamp(rc.sendStart.Add(d)))
			t.m.opDuration.Record(ctx, d.Seconds(), set.rec...)
		} else {
			rc.send.End()
		}
		t.m.sent.Add(ctx, 1, set.add...)
	}
	if r := info.Reply; r != nil {
		// The reply's creation context: the responder's send span.
		rctx := t.prop.Extract(context.Background(), HeaderCarrier{&r.Headers})
		if sc := trace.SpanContextFromContext(rctx); sc.IsValid() {
			span.AddLink(trace.Link{SpanContext: sc})
		}
		t.m.consumed.Add(ctx, 1, t.set(setKey{op: OpProcess, topic: r.Topic}).add...)
	}
	if errType != "" {
		span.SetStatus(codes.Error, info.Err.Error())
		span.SetAttributes(semconv.ErrorTypeKey.String(errType))
	}
	span.End()
	t.m.opDuration.Record(ctx, info.Duration.Seconds(), t.set(setKey{op: OpRequest, topic: info.Topic, errType: errType}).rec...)
}

// requestErrorType returns the error.type of an ended request, "" for a
// reply.
func (t *Telemetry) requestErrorType(info *syncbridge.RequestInfo) string {
	switch info.Outcome {
	case syncbridge.OutcomeReply:
		return ""
	case syncbridge.OutcomeRemoteError:
		var re *syncbridge.RemoteError
		if errors.As(info.Err, &re) {
			return t.remoteCode(re.Code)
		}
		return t.remoteCode("")
	case syncbridge.OutcomeCanceled:
		return ErrorTypeCanceled
	case syncbridge.OutcomeTimedOut:
		return ErrorTypeNoReply
	case syncbridge.OutcomePublishError:
		return ErrorTypePublish
	case syncbridge.OutcomeOverloaded:
		return ErrorTypeOverloaded
	case syncbridge.OutcomeClosed:
		return ErrorTypeClosed
	case syncbridge.OutcomeInvalid:
		return ErrorTypeInvalid
	case syncbridge.OutcomeNoResponders:
		return ErrorTypeNoResponders
	}
	return ErrorTypeOther
}

// OnDroppedReply counts the dropped reply.
func (h *hook) OnDroppedReply(reason syncbridge.DropReason, msg *syncbridge.Message) {
	h.t.m.dropped.Add(context.Background(), 1, h.t.set(setKey{topic: msg.Topic, reason: reason.String()}).add...)
}

// handleCtx is the context a HandleStartHook gives the handler: the
// handler's, with the process span, and the state the other hooks need.
type handleCtx struct {
	context.Context // the handler's, with the process span
	span            trace.Span
	start           time.Time
	send            trace.Span
	sendStart       time.Time
	replyTopic      string
	id              string // the correlation ID
}

type handleKey struct{}

func (c *handleCtx) Value(key any) any {
	if key == (handleKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// consumerAttrs returns the attributes of a process span.
func (t *Telemetry) consumerAttrs(topic, group string, m *syncbridge.Message, id string) []attribute.KeyValue {
	kv := make([]attribute.KeyValue, 0, 12)
	kv = append(kv, t.system, semconv.MessagingOperationName(OpProcess), semconv.MessagingOperationTypeProcess,
		semconv.MessagingDestinationName(topic), semconv.MessagingDestinationPartitionID(strconv.Itoa(int(m.Partition))))
	if group != "" {
		kv = append(kv, semconv.MessagingConsumerGroupName(group))
	}
	if t.kafka {
		kv = append(kv, semconv.MessagingKafkaOffset(int(m.Offset)))
	}
	return t.messageAttrs(kv, m, id)
}

// OnHandleStart starts the process span, child of the request's creation
// context, and gives it to the handler.
func (h *hook) OnHandleStart(info *syncbridge.HandleInfo) {
	t := h.t
	parent := t.prop.Extract(info.Context, HeaderCarrier{&info.Request.Headers})
	start := time.Now()
	id := string(info.ID)
	ctx, span := t.tracer.Start(parent, t.spanName(OpProcess, info.Topic), kindConsumer,
		trace.WithAttributes(t.consumerAttrs(info.Topic, info.Group, info.Request, id)...))
	hc := &handleCtx{Context: ctx, span: span, start: start, id: id}
	info.Context = hc
	t.m.consumed.Add(hc, 1, t.set(setKey{op: OpProcess, topic: info.Topic, group: info.Group}).add...)
}

// OnReplyPublish starts the reply's send span and injects its context into
// the reply's headers.
func (h *hook) OnReplyPublish(info *syncbridge.HandleInfo, reply *syncbridge.Message) {
	t := h.t
	hc, _ := info.Context.Value(handleKey{}).(*handleCtx)
	if hc == nil { // another hook replaced the context with an unrelated one
		return
	}
	kv := make([]attribute.KeyValue, 0, 8)
	kv = append(kv, t.system, semconv.MessagingOperationName(OpSend), semconv.MessagingOperationTypeSend,
		semconv.MessagingDestinationName(reply.Topic))
	if reply.UsePartition {
		kv = append(kv, semconv.MessagingDestinationPartitionID(strconv.Itoa(int(reply.Partition))))
	}
	kv = t.messageAttrs(kv, reply, hc.id)
	hc.sendStart = time.Now()
	hc.replyTopic = reply.Topic
	sctx, send := t.tracer.Start(hc, t.spanName(OpSend, reply.Topic), kindProducer,
		trace.WithAttributes(kv...))
	hc.send = send
	t.prop.Inject(sctx, HeaderCarrier{&reply.Headers})
}

// OnHandleEnd ends the reply's send span and the process span, and records
// their metrics.
func (h *hook) OnHandleEnd(info *syncbridge.HandleInfo) {
	t := h.t
	hc, _ := info.Context.Value(handleKey{}).(*handleCtx)
	if hc == nil {
		return
	}
	now := time.Now()
	if hc.send != nil {
		var sendErr string
		if info.ReplyErr != nil {
			sendErr = ErrorTypePublish
			hc.send.SetStatus(codes.Error, info.ReplyErr.Error())
			hc.send.SetAttributes(semconv.ErrorTypeKey.String(sendErr))
		}
		hc.send.End()
		set := t.set(setKey{op: OpSend, topic: hc.replyTopic, errType: sendErr})
		t.m.opDuration.Record(hc, now.Sub(hc.sendStart).Seconds(), set.rec...)
		t.m.sent.Add(hc, 1, set.add...)
	}
	var errType, desc string
	switch {
	case info.Err != nil:
		var re *syncbridge.RemoteError
		code := syncbridge.CodeInternal
		if errors.As(info.Err, &re) && re.Code != "" {
			code = re.Code
		}
		errType, desc = t.remoteCode(code), info.Err.Error()
	case info.ReplyErr != nil:
		errType, desc = ErrorTypePublish, info.ReplyErr.Error()
	case info.Reply == nil:
		errType, desc = ErrorTypeExpired, "the deadline passed before the reply could be sent"
	}
	if errType != "" {
		hc.span.SetStatus(codes.Error, desc)
		hc.span.SetAttributes(semconv.ErrorTypeKey.String(errType))
	}
	hc.span.End()
	t.m.process.Record(hc, now.Sub(hc.start).Seconds(), t.set(setKey{op: OpProcess, topic: info.Topic, group: info.Group, errType: errType}).rec...)
}

// OnSkippedRequest counts the skipped request, and makes a process span
// for it in the caller's trace, so that a trace whose request timed out
// shows that the responder received it too late.
func (h *hook) OnSkippedRequest(reason syncbridge.SkipReason, msg *syncbridge.Message, err error) {
	t := h.t
	errType := ErrorTypeMalformed
	if reason == syncbridge.SkipExpired {
		errType = ErrorTypeExpired
	}
	// The hook is told neither the Responder's group nor its header
	// names: the span has no group and no correlation ID.
	parent := t.prop.Extract(context.Background(), HeaderCarrier{&msg.Headers})
	kv := t.consumerAttrs(msg.Topic, "", msg, "")
	kv = append(kv, semconv.ErrorTypeKey.String(errType))
	_, span := t.tracer.Start(parent, t.spanName(OpProcess, msg.Topic), kindConsumer, trace.WithAttributes(kv...))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	} else {
		span.SetStatus(codes.Error, errType)
	}
	span.End()
	t.m.skipped.Add(context.Background(), 1, t.set(setKey{topic: msg.Topic, reason: reason.String()}).add...)
}
