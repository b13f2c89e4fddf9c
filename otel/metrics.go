package otel

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/messagingconv"
)

// durationBuckets are the bucket boundaries, in seconds, that the
// messaging conventions recommend for their duration histograms.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// Names of syncbridge's own instruments and attributes.
const (
	InFlightName   = "syncbridge.bridge.requests.in_flight"
	InProgressName = "syncbridge.responder.requests.in_progress"
	DroppedName    = "syncbridge.bridge.replies.dropped"
	SkippedName    = "syncbridge.responder.requests.skipped"
	// ReasonKey is the attribute of DroppedName and SkippedName: the
	// syncbridge.DropReason or syncbridge.SkipReason, as its String.
	ReasonKey = attribute.Key("syncbridge.reason")
)

// Operation names: messaging.operation.name values.
const (
	OpRequest = "request" // the caller's whole request
	OpSend    = "send"    // a publish: a request or a reply
	OpProcess = "process" // a responder's handling of a request
)

// instruments are a Telemetry's metric instruments.
type instruments struct {
	meter      metric.Meter
	opDuration metric.Float64Histogram
	process    metric.Float64Histogram
	sent       metric.Int64Counter
	consumed   metric.Int64Counter
	dropped    metric.Int64Counter
	skipped    metric.Int64Counter
	inFlight   metric.Int64ObservableUpDownCounter
	inProgress metric.Int64ObservableUpDownCounter
}

// newInstruments makes the instruments. A meter that refuses one gives a
// no-op instrument in its place (as the API's instruments do) and reports
// the error to the global error handler, as OpenTelemetry's
// instrumentation libraries do.
func newInstruments(m metric.Meter) instruments {
	buckets := metric.WithExplicitBucketBoundaries(durationBuckets...)
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	in := instruments{meter: m}
	op, err := messagingconv.NewClientOperationDuration(m, buckets)
	check(err)
	in.opDuration = op.Inst()
	pr, err := messagingconv.NewProcessDuration(m, buckets)
	check(err)
	in.process = pr.Inst()
	sent, err := messagingconv.NewClientSentMessages(m)
	check(err)
	in.sent = sent.Inst()
	cons, err := messagingconv.NewClientConsumedMessages(m)
	check(err)
	in.consumed = cons.Inst()
	in.dropped, err = m.Int64Counter(DroppedName, metric.WithUnit("{reply}"),
		metric.WithDescription("Replies a Bridge dropped, by reason: late, duplicate, unknown, foreign or malformed."))
	check(err)
	in.skipped, err = m.Int64Counter(SkippedName, metric.WithUnit("{request}"),
		metric.WithDescription("Requests a Responder did not hand to its handler, by reason: expired or malformed."))
	check(err)
	in.inFlight, err = m.Int64ObservableUpDownCounter(InFlightName, metric.WithUnit("{request}"),
		metric.WithDescription("Requests a Bridge has in flight: started and not yet ended."))
	check(err)
	in.inProgress, err = m.Int64ObservableUpDownCounter(InProgressName, metric.WithUnit("{request}"),
		metric.WithDescription("Handler calls a Responder has in progress."))
	check(err)
	for _, err := range errs {
		otel.Handle(err)
	}
	return in
}

// setKey identifies a set of metric attributes.
type setKey struct {
	op      string // messaging.operation.name; "" for dropped and skipped
	topic   string // messaging.destination.name
	group   string // messaging.consumer.group.name
	errType string // error.type
	reason  string // syncbridge.reason
}

// maxCached bounds the attribute sets and span names a Telemetry keeps.
// Past it, they are made for each use: slower, never unbounded.
const maxCached = 4096

// attrSet is a set of metric attributes, as the options that record it:
// slices made once, so that recording allocates none.
type attrSet struct {
	rec []metric.RecordOption
	add []metric.AddOption
}

// set returns the options of k's attributes, made once.
func (t *Telemetry) set(k setKey) attrSet {
	if o, ok := t.sets.get(k); ok {
		return o
	}
	kv := make([]attribute.KeyValue, 0, 6)
	kv = append(kv, t.system)
	if k.op != "" {
		kv = append(kv, semconv.MessagingOperationName(k.op))
		switch k.op {
		case OpSend:
			kv = append(kv, semconv.MessagingOperationTypeSend)
		case OpProcess:
			kv = append(kv, semconv.MessagingOperationTypeProcess)
		}
	}
	if k.topic != "" {
		kv = append(kv, semconv.MessagingDestinationName(k.topic))
	}
	if k.group != "" {
		kv = append(kv, semconv.MessagingConsumerGroupName(k.group))
	}
	if k.errType != "" {
		kv = append(kv, semconv.ErrorTypeKey.String(k.errType))
	}
	if k.reason != "" {
		kv = append(kv, ReasonKey.String(k.reason))
	}
	opt := metric.WithAttributeSet(attribute.NewSet(kv...))
	o, _ := t.sets.add(k, attrSet{rec: []metric.RecordOption{opt}, add: []metric.AddOption{opt}}, maxCached)
	return o
}

// nameKey identifies a span name.
type nameKey struct {
	op, topic string
}

// spanName returns "{op} {topic}", made once; op alone without a topic.
func (t *Telemetry) spanName(op, topic string) string {
	if topic == "" {
		return op
	}
	k := nameKey{op, topic}
	if n, ok := t.names.get(k); ok {
		return n
	}
	n, _ := t.names.add(k, op+" "+topic, maxCached)
	return n
}
