// Package syncbridge lets a synchronous caller (an HTTP handler, a gRPC
// method) talk to an asynchronous, message-driven system: a Bridge publishes
// a request with a correlation ID and a reply address, and waits for the
// matching reply on one reply subscription, bounded by the caller's context.
//
// The Bridge runs over a Transport: the kafka package (Apache Kafka, on
// segmentio/kafka-go) and the memory package (in-process, the embedded
// default) provide one each; transporttest holds the conformance suite they
// pass. A Responder serves requests on the other side; any requester that
// speaks Spring Kafka's ReplyingKafkaTemplate headers works with it, and a
// Bridge works with Spring and NestJS responders.
//
// Go starts a request and returns a Call as soon as the request is handed
// to the transport; the Call can outlive its caller's patience: answer 202
// Accepted, keep the Call, and serve its outcome when the client polls.
// Request is Go followed by a wait, so both give the same outcome for the
// same inputs.
//
// Errors say what a caller can do next: ErrOverloaded and ErrPublish mean
// the request was certainly not sent (retry); ErrNoReply, with
// context.DeadlineExceeded or context.Canceled, means it was sent or maybe
// sent and may have run (retry only idempotent requests); a *RemoteError
// carries the responder's error; ErrClosed follows Close and Shutdown.
// Bridge.Stats counts the causes apart: replies, remote errors, the
// caller's cancellations, timeouts, publish failures, overload, closing.
package syncbridge
