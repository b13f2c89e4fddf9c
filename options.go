package syncbridge

import (
	"fmt"
	"log/slog"
	"time"
)

// HeaderNames names the headers syncbridge reads and writes. The defaults
// follow Spring Kafka's ReplyingKafkaTemplate, so that syncbridge callers
// interoperate with Spring @SendTo and NestJS responders.
type HeaderNames struct {
	// CorrelationID carries the request's correlation ID; the responder
	// echoes it byte for byte. Default "kafka_correlationId".
	CorrelationID string
	// ReplyTopic carries the topic to reply to. Default "kafka_replyTopic".
	ReplyTopic string
	// ReplyPartition carries the partition to reply to, a 4-byte big-endian
	// int32, sent only when the Bridge pins reply partitions. Default
	// "kafka_replyPartition".
	ReplyPartition string
	// Deadline carries the caller's absolute deadline, in Unix milliseconds
	// as decimal ASCII. Default "syncbridge_deadline".
	Deadline string
	// ErrorCode marks an error reply and carries its code. Default
	// "syncbridge_errorCode".
	ErrorCode string
	// ErrorDescription carries an error reply's description. Default
	// "syncbridge_errorDescription".
	ErrorDescription string
}

// DefaultHeaderNames returns the default header names.
func DefaultHeaderNames() HeaderNames {
	return HeaderNames{
		CorrelationID:    "kafka_correlationId",
		ReplyTopic:       "kafka_replyTopic",
		ReplyPartition:   "kafka_replyPartition",
		Deadline:         "syncbridge_deadline",
		ErrorCode:        "syncbridge_errorCode",
		ErrorDescription: "syncbridge_errorDescription",
	}
}

// reserved reports whether key is one of the names syncbridge sets.
func (h *HeaderNames) reserved(key string) bool {
	switch key {
	case h.CorrelationID, h.ReplyTopic, h.ReplyPartition, h.Deadline, h.ErrorCode, h.ErrorDescription:
		return true
	}
	return false
}

func (h HeaderNames) validate() error {
	names := []string{h.CorrelationID, h.ReplyTopic, h.ReplyPartition, h.Deadline, h.ErrorCode, h.ErrorDescription}
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		if n == "" {
			return fmt.Errorf("syncbridge: header names: empty name in %+v", h)
		}
		if seen[n] {
			return fmt.Errorf("syncbridge: header names: %q used twice", n)
		}
		seen[n] = true
	}
	return nil
}

// DefaultReplyTopic is the reply topic of a Bridge without WithReplyTopic.
const DefaultReplyTopic = "syncbridge.replies"

// DefaultTimeout bounds a request whose context has no deadline, unless
// WithDefaultTimeout says otherwise.
const DefaultTimeout = 5 * time.Second

// config holds what options set, for a Bridge and for a Responder.
type config struct {
	headers        HeaderNames
	logger         *slog.Logger
	hooks          []Hook
	replyTopic     string
	replyParts     []int32
	defaultTimeout time.Duration
	maxInFlight    int
	group          string
	concurrent     bool
}

func defaultConfig() config {
	return config{
		headers:        DefaultHeaderNames(),
		replyTopic:     DefaultReplyTopic,
		defaultTimeout: DefaultTimeout,
	}
}

// Option configures a Bridge. Options that also configure a Responder
// implement ResponderOption as well.
type Option interface {
	applyBridge(*config)
}

// ResponderOption configures a Responder.
type ResponderOption interface {
	applyResponder(*config)
}

// SharedOption configures a Bridge or a Responder.
type SharedOption interface {
	Option
	ResponderOption
}

type bridgeOpt func(*config)

func (f bridgeOpt) applyBridge(c *config) { f(c) }

type responderOpt func(*config)

func (f responderOpt) applyResponder(c *config) { f(c) }

type sharedOpt func(*config)

func (f sharedOpt) applyBridge(c *config)    { f(c) }
func (f sharedOpt) applyResponder(c *config) { f(c) }

// WithHeaderNames sets the header names. Every name must be non-empty and
// distinct. Default DefaultHeaderNames(). Bridges and responders that talk
// to each other must use the same names.
func WithHeaderNames(h HeaderNames) SharedOption {
	return sharedOpt(func(c *config) { c.headers = h })
}

// WithLogger makes the Bridge or Responder log unusual events (dropped
// replies, handler panics, failed replies) at Debug and Warn level. Default:
// no logging.
func WithLogger(l *slog.Logger) SharedOption {
	return sharedOpt(func(c *config) { c.logger = l })
}

// WithHooks adds hooks: values implementing one or more of the hook
// interfaces (DroppedReplyHook, SkippedRequestHook, ...). Values that
// implement none are ignored. Hooks are called synchronously and must be
// fast and safe for concurrent use.
func WithHooks(hooks ...Hook) SharedOption {
	return sharedOpt(func(c *config) { c.hooks = append(c.hooks, hooks...) })
}

// WithReplyTopic sets the topic the Bridge subscribes to and asks
// responders to reply to. Default DefaultReplyTopic. Several Bridges may
// share one reply topic: each drops the replies meant for the others.
func WithReplyTopic(topic string) Option {
	return bridgeOpt(func(c *config) { c.replyTopic = topic })
}

// WithReplyPartitions pins the Bridge to these partitions of its reply
// topic: it reads only them, and each request asks the responder (by the
// ReplyPartition header) to reply to one of them, in turn. Give each Bridge
// sharing a reply topic its own partitions. Default: read every partition,
// send no ReplyPartition header.
func WithReplyPartitions(partitions ...int32) Option {
	return bridgeOpt(func(c *config) { c.replyParts = append([]int32(nil), partitions...) })
}

// WithDefaultTimeout bounds requests whose context has no deadline.
// Default DefaultTimeout (5 s). It must be positive.
func WithDefaultTimeout(d time.Duration) Option {
	return bridgeOpt(func(c *config) { c.defaultTimeout = d })
}

// WithMaxInFlight limits the requests in flight: past n, Request and Go
// fail at once with ErrOverloaded. Zero, the default, means no limit.
func WithMaxInFlight(n int) Option {
	return bridgeOpt(func(c *config) { c.maxInFlight = n })
}

// WithGroup sets the consumer group a Responder joins. Responders in one
// group share the requests: each request goes to one of them. Default: the
// request topic's name followed by ".responders".
func WithGroup(group string) ResponderOption {
	return responderOpt(func(c *config) { c.group = group })
}

// WithConcurrentHandlers lets the Responder's handler calls overlap, even
// for requests of one partition: requests are then not handled in order,
// and the handler must be safe for concurrent use. On Kafka this multiplies
// a Responder's throughput, since a partition no longer waits for each
// reply to be produced before handling the next request; offsets are still
// committed only below the oldest request in progress. Transports may
// ignore it (the memory transport does). Default: off, one call at a time
// per partition, in order.
func WithConcurrentHandlers() ResponderOption {
	return responderOpt(func(c *config) { c.concurrent = true })
}
