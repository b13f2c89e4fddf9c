package otel

import (
	"context"
	"strings"

	"github.com/syncbridge/syncbridge"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the tracer and meter.
const ScopeName = "github.com/syncbridge/syncbridge/otel"

// Version is the version of this instrumentation, reported with its scope.
const Version = "0.1.0"

// Option configures New.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	tp     trace.TracerProvider
	mp     metric.MeterProvider
	prop   propagation.TextMapPropagator
	system string
	codes  []string
	fixed  bool // codes is the whole set of allowed remote codes
}

// WithTracerProvider sets the TracerProvider. Default: the global one
// (otel.GetTracerProvider). A nil provider means the default.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) { c.tp = tp })
}

// WithMeterProvider sets the MeterProvider. Default: the global one
// (otel.GetMeterProvider). A nil provider means the default.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.mp = mp })
}

// WithPropagators sets the propagator that injects the trace context into
// requests and replies and extracts it from them. Default: the global one
// (otel.GetTextMapPropagator), which propagates nothing until the program
// sets one, as with otelhttp: set
// propagation.TraceContext{} (traceparent and tracestate), or a composite
// with propagation.Baggage{}, with otel.SetTextMapPropagator or here. A
// nil propagator means the default.
func WithPropagators(p propagation.TextMapPropagator) Option {
	return optionFunc(func(c *config) { c.prop = p })
}

// WithSystem sets messaging.system, on every span and metric. Default
// "kafka". An empty name means the default.
func WithSystem(name string) Option {
	return optionFunc(func(c *config) { c.system = name })
}

// WithErrorCodes bounds the remote error codes that error.type reports:
// only these codes are reported as themselves, others as "_OTHER".
// syncbridge.CodeInternal and syncbridge.CodePanic are always allowed.
// Default: the first 50 distinct codes seen (up to 64 bytes of letters,
// digits and "_.:-") are reported as themselves, later ones as "_OTHER",
// so that an error code carrying an identifier cannot make the metrics'
// cardinality grow without bound.
func WithErrorCodes(codes ...string) Option {
	cs := append([]string(nil), codes...)
	return optionFunc(func(c *config) { c.codes, c.fixed = cs, true })
}

// DefaultSystem is the messaging.system of a Telemetry without WithSystem.
const DefaultSystem = "kafka"

// maxCodes bounds the distinct remote error codes reported without
// WithErrorCodes.
const maxCodes = 50

// maxCodeLen bounds the length of a remote error code reported as itself.
const maxCodeLen = 64

// Telemetry makes the spans and metrics of the Bridges and Responders it
// instruments. Create one with New and share it: every Bridge and
// Responder of a process can use the same. It is safe for concurrent use.
type Telemetry struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	system attribute.KeyValue
	kafka  bool // system is Kafka: messaging.kafka.* attributes apply
	m      instruments
	h      *hook

	codes cache[string, string]  // remote error code to error.type
	fixed bool                   // codes is complete: no code is added
	names cache[nameKey, string] // span names
	sets  cache[setKey, attrSet] // metric attribute sets
}

// New returns a Telemetry configured by opts.
func New(opts ...Option) *Telemetry {
	var c config
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	if c.prop == nil {
		c.prop = otel.GetTextMapPropagator()
	}
	if c.system == "" {
		c.system = DefaultSystem
	}
	t := &Telemetry{
		tracer: c.tp.Tracer(ScopeName, trace.WithInstrumentationVersion(Version), trace.WithSchemaURL(semconv.SchemaURL)),
		prop:   c.prop,
		system: semconv.MessagingSystemKey.String(c.system),
		kafka:  c.system == DefaultSystem,
		fixed:  c.fixed,
	}
	for _, code := range append([]string{syncbridge.CodeInternal, syncbridge.CodePanic}, c.codes...) {
		t.codes.add(code, code, len(c.codes)+2)
	}
	t.m = newInstruments(c.mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version), metric.WithSchemaURL(semconv.SchemaURL)))
	t.h = &hook{t: t}
	return t
}

// Option returns the option that instruments a Bridge (syncbridge.New) or
// a Responder (syncbridge.NewResponder): one option for both, carrying the
// hooks of both (syncbridge.WithHooks). Give it to every Bridge and
// Responder the Telemetry instruments; giving it twice to one makes every
// span twice.
func (t *Telemetry) Option() syncbridge.SharedOption {
	return syncbridge.WithHooks(t.h)
}

// ObserveBridge reports b's requests in flight (b.Stats().InFlight) in
// syncbridge.bridge.requests.in_flight until the returned registration is
// unregistered; the values of several Bridges add up. The error is the
// MeterProvider's, when it refuses the callback.
func (t *Telemetry) ObserveBridge(b *syncbridge.Bridge) (metric.Registration, error) {
	set := metric.WithAttributeSet(attribute.NewSet(t.system))
	return t.m.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(t.m.inFlight, int64(b.Stats().InFlight), set)
		return nil
	}, t.m.inFlight)
}

// ObserveResponder reports r's handler calls in progress
// (r.Stats().InProgress) in syncbridge.responder.requests.in_progress
// until the returned registration is unregistered; the values of several
// Responders add up. The error is the MeterProvider's, when it refuses the
// callback.
func (t *Telemetry) ObserveResponder(r *syncbridge.Responder) (metric.Registration, error) {
	set := metric.WithAttributeSet(attribute.NewSet(t.system))
	return t.m.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(t.m.inProgress, int64(r.Stats().InProgress), set)
		return nil
	}, t.m.inProgress)
}

// remoteCode returns the error.type of a remote error code.
func (t *Telemetry) remoteCode(code string) string {
	if v, ok := t.codes.get(code); ok {
		return v
	}
	if t.fixed || !validCode(code) {
		return ErrorTypeOther
	}
	// CodeInternal and CodePanic are always there.
	if v, ok := t.codes.add(strings.Clone(code), strings.Clone(code), maxCodes+2); ok {
		return v
	}
	return ErrorTypeOther
}

// validCode reports whether code may be reported as an error.type.
func validCode(code string) bool {
	if code == "" || len(code) > maxCodeLen {
		return false
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '.', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}
