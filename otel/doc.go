// Package otel instruments syncbridge Bridges and Responders with
// OpenTelemetry: W3C trace context carried in message headers, spans
// following OpenTelemetry's messaging semantic conventions, and metrics.
// It is a module of its own, so that the core module stays free of
// OpenTelemetry, and its go.mod requires no Kafka client (its trace test
// over Kafka is the nested module otel/kafkatrace); import it as, say,
// sbotel:
//
//	tel := sbotel.New()                                  // global providers and propagator
//	b, err := syncbridge.New(ctx, tr, tel.Option())      // the caller's side
//	reg, err := tel.ObserveBridge(b)                     // its requests in flight
//	r, err := syncbridge.NewResponder(ctx, tr, "items", h, tel.Option())
//
// # Traces
//
// One request makes one trace, from the caller to the responder and back:
//
//	request items                 CLIENT    caller     the whole request: Request, or Go until its Call ends
//	└ send items                  PRODUCER  caller     the publish, until the transport acknowledges it
//	  └ process items             CONSUMER  responder  the handler, and its reply's publish
//	    └ send syncbridge.replies PRODUCER  responder  the reply's publish
//
// The context of each send span is injected into the message's headers
// (traceparent and tracestate with the W3C propagator): it is the
// message's creation context in the conventions' words, and the parent of
// the span that consumes the message. The process span is a CONSUMER
// child of a PRODUCER span, as the conventions ask and as service-graph
// tools expect; the handler's context carries it, so the handler's own
// spans nest under it. The request span links to the reply's creation
// context when the reply carries one. A trace context the request already
// carries (headers passed on from another message) is replaced: the
// Bridge is the request's producer.
//
// Span names are "{operation} {topic}". Attributes, set when the span
// starts: messaging.system, messaging.operation.name,
// messaging.operation.type (but on the request span, whose operation has
// no type in the conventions), messaging.destination.name,
// messaging.message.conversation_id (the correlation ID),
// messaging.message.body.size, messaging.destination.partition.id (for a
// delivered message, or a reply pinned to a partition),
// messaging.consumer.group.name (on process spans), and, when the system
// is Kafka, messaging.kafka.message.key (for a key that is valid UTF-8)
// and messaging.kafka.offset (for a delivered message). A span that failed
// has an Error status and error.type. A request a Responder skipped gets a
// process span too, without group or correlation ID (its hook is told
// neither).
//
// # error.type
//
// error.type is low-cardinality, on spans and metrics alike. On the
// caller, by the request's Outcome: "canceled", "no_reply" (the deadline
// passed, sent or not), "publish" (certainly not sent), "overloaded",
// "closed", "invalid", "no_responders", or, for an error reply, the remote
// error's code.
// On the responder: the code of the handler's error ("internal" for an
// error that is not a *syncbridge.RemoteError, "panic" for a panic),
// "publish" when the reply could not be published, "expired" when the
// deadline passed before the reply could be sent; for skipped requests,
// "expired" or "malformed". Remote error codes are bounded: see
// WithErrorCodes; others become "_OTHER".
//
// # Metrics
//
// Every metric has messaging.system. Attribute values are topics, groups,
// operation names, reasons and error types: never a correlation ID, key or
// partition.
//
//   - messaging.client.operation.duration (histogram, s):
//     messaging.operation.name "request" (the whole request, caller side)
//     or "send" (a publish, until the transport acknowledged it: requests
//     on the caller, replies on the responder); with
//     messaging.destination.name and error.type. A request's send is
//     recorded when the transport acknowledged it (or refused it) before
//     the request ended; on the memory transport a reply may come first,
//     and then only the request is.
//   - messaging.process.duration (histogram, s): a responder's handling of
//     a request, its reply's publish included; with
//     messaging.destination.name, messaging.consumer.group.name and
//     error.type.
//   - messaging.client.sent.messages (counter): requests and replies
//     handed to the transport; with error.type when certainly not written:
//     "publish", or "canceled" or "no_reply" when the request's context
//     ended before it was sent.
//   - messaging.client.consumed.messages (counter): messages delivered to
//     the application: requests handed to a handler, replies handed to
//     their caller.
//   - syncbridge.bridge.requests.in_flight (observable up-down counter):
//     Stats().InFlight of the Bridges given to ObserveBridge.
//   - syncbridge.responder.requests.in_progress (observable up-down
//     counter): Stats().InProgress of the Responders given to
//     ObserveResponder.
//   - syncbridge.bridge.replies.dropped (counter): replies a Bridge
//     dropped, by syncbridge.reason (a syncbridge.DropReason).
//   - syncbridge.responder.requests.skipped (counter): requests a
//     Responder did not handle, by syncbridge.reason (a
//     syncbridge.SkipReason).
//
// Histograms use the bucket boundaries the conventions recommend, from
// 5 ms to 10 s; change them with a View of the MeterProvider.
package otel
