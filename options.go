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
	// ReplyPartition carries the partition to reply to, sent only when the
	// Bridge pins reply partitions: a 4-byte big-endian int32 (Spring's
	// form), or decimal ASCII with DialectNestJS (NestJS's form). A
	// Responder reads either. Default "kafka_replyPartition".
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
	// Responder, on a Gather's request (empty), asks responders to say
	// who they are; on a Responder's reply to it, it carries the name of
	// its group, so that Gather counts one reply per group (several
	// members of one group may answer a redelivered request). Default
	// "syncbridge_responder".
	Responder string
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
		Responder:        "syncbridge_responder",
	}
}

// reserved reports whether key is one of the names syncbridge sets.
func (h *HeaderNames) reserved(key string) bool {
	switch key {
	case h.CorrelationID, h.ReplyTopic, h.ReplyPartition, h.Deadline, h.ErrorCode, h.ErrorDescription, h.Responder:
		return true
	}
	return false
}

func (h HeaderNames) validate() error {
	names := []string{h.CorrelationID, h.ReplyTopic, h.ReplyPartition, h.Deadline, h.ErrorCode, h.ErrorDescription, h.Responder}
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

// DefaultTimeout bounds a request whose context has no deadline (on a
// Bridge), and the handling of a request that carries no deadline (on a
// Responder), unless WithDefaultTimeout says otherwise.
const DefaultTimeout = 5 * time.Second

// DefaultMaxTimeout caps the deadline a Responder gives a handler, unless
// WithMaxTimeout says otherwise.
const DefaultMaxTimeout = 15 * time.Minute

// config holds what options set, for a Bridge and for a Responder.
type config struct {
	headers        HeaderNames
	logger         *slog.Logger
	hooks          []Hook
	replyTopic     string
	replyParts     []int32
	defaultTimeout time.Duration
	maxTimeout     time.Duration
	maxTimeoutSet  bool
	maxInFlight    int
	group          string
	concurrent     bool
	failFast       bool
	dialect        Dialect // see dialect.go
}

func defaultConfig() config {
	return config{
		headers:        DefaultHeaderNames(),
		replyTopic:     DefaultReplyTopic,
		defaultTimeout: DefaultTimeout,
		maxTimeout:     DefaultMaxTimeout,
	}
}

// Option configures a Bridge (New) or a Responder (NewResponder). Every
// option is an Option, so that options common to both can be kept in one
// slice and spread into either constructor; each option also implements
// BridgeOption, ResponderOption or both, which says where it applies. A
// constructor given an option that does not apply to it returns an error.
type Option interface {
	apply(*config)
	name() string
}

// BridgeOption is an Option that applies to a Bridge.
type BridgeOption interface {
	Option
	bridgeOption()
}

// ResponderOption is an Option that applies to a Responder.
type ResponderOption interface {
	Option
	responderOption()
}

// SharedOption is an Option that applies to a Bridge and to a Responder.
type SharedOption interface {
	BridgeOption
	ResponderOption
}

type opt struct {
	n string
	f func(*config)
}

func (o opt) apply(c *config) { o.f(c) }
func (o opt) name() string    { return o.n }

type bridgeOpt struct{ opt }

func (bridgeOpt) bridgeOption() {}

type responderOpt struct{ opt }

func (responderOpt) responderOption() {}

type sharedOpt struct{ opt }

func (sharedOpt) bridgeOption()    {}
func (sharedOpt) responderOption() {}

// applyOptions applies opts to cfg, refusing those that do not apply to
// what is being built (a Bridge when forBridge, else a Responder), and
// checks the result, hooks included.
func applyOptions(cfg *config, opts []Option, forBridge bool) (hooks, error) {
	for _, o := range opts {
		if o == nil {
			continue
		}
		if forBridge {
			if _, ok := o.(BridgeOption); !ok {
				return hooks{}, fmt.Errorf("syncbridge: New: option %s applies to a Responder, not a Bridge", o.name())
			}
		} else if _, ok := o.(ResponderOption); !ok {
			return hooks{}, fmt.Errorf("syncbridge: NewResponder: option %s applies to a Bridge, not a Responder", o.name())
		}
		o.apply(cfg)
	}
	if err := cfg.headers.validate(); err != nil {
		return hooks{}, err
	}
	if err := cfg.dialect.validate(); err != nil { // dialect.go
		return hooks{}, err
	}
	if cfg.defaultTimeout <= 0 {
		return hooks{}, fmt.Errorf("syncbridge: WithDefaultTimeout: %v is not positive", cfg.defaultTimeout)
	}
	switch {
	case !cfg.maxTimeoutSet:
		cfg.maxTimeout = max(cfg.maxTimeout, cfg.defaultTimeout)
	case cfg.maxTimeout < cfg.defaultTimeout:
		return hooks{}, fmt.Errorf("syncbridge: WithMaxTimeout: %v is below the default timeout %v", cfg.maxTimeout, cfg.defaultTimeout)
	}
	return newHooks(cfg.hooks)
}

// WithHeaderNames sets the header names. Every name must be non-empty and
// distinct. Default DefaultHeaderNames(). Bridges and responders that talk
// to each other must use the same names.
func WithHeaderNames(h HeaderNames) SharedOption {
	return sharedOpt{opt{"WithHeaderNames", func(c *config) { c.headers = h }}}
}

// WithLogger makes the Bridge or Responder log unusual events (dropped
// replies, handler panics, failed replies) at Debug, Warn and Error level.
// Default: no logging.
func WithLogger(l *slog.Logger) SharedOption {
	return sharedOpt{opt{"WithLogger", func(c *config) { c.logger = l }}}
}

// WithHooks adds hooks: values implementing one or more of the hook
// interfaces (DroppedReplyHook, SkippedRequestHook, ...). The constructor
// fails when a value implements none of them. Hooks are called
// synchronously and must be fast and safe for concurrent use.
func WithHooks(hooks ...Hook) SharedOption {
	return sharedOpt{opt{"WithHooks", func(c *config) { c.hooks = append(c.hooks, hooks...) }}}
}

// WithDefaultTimeout sets the timeout of what carries no deadline. On a
// Bridge it bounds requests whose context has no deadline: the request,
// its publish and its wait for the reply. On a Responder it is the deadline
// given to the handler of a request that carries no deadline header (as
// Spring and NestJS callers send none), from the moment it is handled;
// the reply is sent only within it. Default DefaultTimeout (5 s). It must be
// positive.
func WithDefaultTimeout(d time.Duration) SharedOption {
	return sharedOpt{opt{"WithDefaultTimeout", func(c *config) { c.defaultTimeout = d }}}
}

// WithReplyTopic sets the topic the Bridge subscribes to and asks
// responders to reply to. Default DefaultReplyTopic. Several Bridges may
// share one reply topic: each drops the replies meant for the others.
func WithReplyTopic(topic string) BridgeOption {
	return bridgeOpt{opt{"WithReplyTopic", func(c *config) { c.replyTopic = topic }}}
}

// WithReplyPartitions pins the Bridge to these partitions of its reply
// topic: it reads only them, and each request asks the responder (by the
// ReplyPartition header) to reply to one of them, in turn. Give each Bridge
// sharing a reply topic its own partitions. Default: read every partition,
// send no ReplyPartition header.
func WithReplyPartitions(partitions ...int32) BridgeOption {
	ps := append([]int32(nil), partitions...)
	return bridgeOpt{opt{"WithReplyPartitions", func(c *config) { c.replyParts = ps }}}
}

// WithMaxInFlight limits the requests in flight: past n, Request and Go
// fail at once with ErrOverloaded. Zero, the default, means no limit.
func WithMaxInFlight(n int) BridgeOption {
	return bridgeOpt{opt{"WithMaxInFlight", func(c *config) { c.maxInFlight = n }}}
}

// WithFailFastNoResponders makes Request, Go and Gather fail at once with
// ErrNoResponders, publishing nothing, when the transport knows that the
// request topic has no responder (see ResponderChecker; the memory
// transport always knows). The check costs a lookup in memory, never a
// network round trip. Off by default: where requests are durable,
// publishing to a topic whose responder is not running yet can be what the
// caller wants (it is handled once one starts).
func WithFailFastNoResponders() BridgeOption {
	return bridgeOpt{opt{"WithFailFastNoResponders", func(c *config) { c.failFast = true }}}
}

// WithGroup sets the consumer group a Responder joins. Responders in one
// group share the requests: each request goes to one of them. Default: the
// request topic's name followed by ".responders".
func WithGroup(group string) ResponderOption {
	return responderOpt{opt{"WithGroup", func(c *config) { c.group = group }}}
}

// WithMaxTimeout caps the deadline a Responder gives a handler at d from
// the moment the request is handled, whatever deadline the request
// carries: a request claiming a far-future deadline cannot hold a handler,
// or a Shutdown, for longer. Default DefaultMaxTimeout (15 min), or the
// default timeout when that is longer; set, it must not be below the
// default timeout.
func WithMaxTimeout(d time.Duration) ResponderOption {
	return responderOpt{opt{"WithMaxTimeout", func(c *config) { c.maxTimeout, c.maxTimeoutSet = d, true }}}
}

// WithConcurrentHandlers lets the Responder's handler calls overlap, even
// for requests of one partition or one key: requests are then not handled
// in order, and the handler must be safe for concurrent use. Every
// transport honours it (SubscribeConfig.Concurrent). It pays off when
// handlers wait (on I/O, say): without it, a partition's requests wait
// for the handler call before them. Waiting for replies to be produced is
// not a reason: on Kafka a Responder does not wait for them either way.
// Offsets are still committed only below the oldest request not finished.
// Default: off, one call at a time per partition, in order.
func WithConcurrentHandlers() ResponderOption {
	return responderOpt{opt{"WithConcurrentHandlers", func(c *config) { c.concurrent = true }}}
}
