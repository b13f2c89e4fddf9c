// Package tracecheck holds the otel module's test environment (a
// Telemetry recording into memory) and its checks of one request's trace
// and metrics. It is a package of its own so that the trace test over
// Kafka, in the nested module otel/kafkatrace, runs the same checks as the
// memory transport's test without otel's go.mod requiring a Kafka client.
package tracecheck

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
	sbotel "github.com/syncbridge/syncbridge/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// Metric attribute sets as Points prints them (sorted by key:
// consumer.group, destination, operation.name, operation.type, system),
// piece by piece, for the topic "items" and its Responders' group.
const (
	AttrSystem  = "messaging.system=kafka"
	AttrRequest = "messaging.operation.name=request"
	AttrSend    = "messaging.operation.name=send,messaging.operation.type=send"
	AttrProcess = "messaging.operation.name=process,messaging.operation.type=process"
	AttrItems   = "messaging.destination.name=items"
	AttrReplies = "messaging.destination.name=" + syncbridge.DefaultReplyTopic
	AttrGroup   = "messaging.consumer.group.name=items.responders"
)

// Env is a Telemetry recording into memory: spans into a SpanRecorder,
// metrics into a ManualReader.
type Env struct {
	SR  *tracetest.SpanRecorder
	RD  *sdkmetric.ManualReader
	TP  *sdktrace.TracerProvider
	Tel *sbotel.Telemetry
}

// NewEnv returns an Env whose Telemetry has opts after its own providers
// and the W3C propagator; its providers shut down when the test ends.
func NewEnv(t testing.TB, opts ...sbotel.Option) *Env {
	t.Helper()
	e := &Env{SR: tracetest.NewSpanRecorder(), RD: sdkmetric.NewManualReader()}
	e.TP = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(e.SR))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(e.RD))
	t.Cleanup(func() {
		e.TP.Shutdown(context.Background())
		mp.Shutdown(context.Background())
	})
	e.Tel = sbotel.New(append([]sbotel.Option{
		sbotel.WithTracerProvider(e.TP),
		sbotel.WithMeterProvider(mp),
		sbotel.WithPropagators(propagation.TraceContext{}),
	}, opts...)...)
	return e
}

// Spans returns the ended spans named name.
func (e *Env) Spans(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range e.SR.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// Span returns the one ended span named name.
func (e *Env) Span(t testing.TB, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	ss := e.Spans(name)
	if len(ss) != 1 {
		t.Fatalf("%d spans named %q, want 1; ended: %v", len(ss), name, e.names())
	}
	return ss[0]
}

func (e *Env) names() []string {
	var ns []string
	for _, s := range e.SR.Ended() {
		ns = append(ns, s.Name())
	}
	sort.Strings(ns)
	return ns
}

// Attrs returns a span's attributes as a map of their values' strings.
func Attrs(s sdktrace.ReadOnlySpan) map[string]string {
	m := make(map[string]string)
	for _, kv := range s.Attributes() {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

// CheckAttrs reports the attributes of s that differ from want; a want
// value "-" means absent.
func CheckAttrs(t testing.TB, s sdktrace.ReadOnlySpan, want map[string]string) {
	t.Helper()
	got := Attrs(s)
	for k, w := range want {
		g, ok := got[k]
		switch {
		case w == "-" && ok:
			t.Errorf("%s: %s = %q, want absent", s.Name(), k, g)
		case w != "-" && g != w:
			t.Errorf("%s: %s = %q, want %q", s.Name(), k, g, w)
		}
	}
}

// Collect reads the metrics.
func (e *Env) Collect(t testing.TB) []metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := e.RD.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var ms []metricdata.Metrics
	for _, sm := range rm.ScopeMetrics {
		ms = append(ms, sm.Metrics...)
	}
	return ms
}

func setString(s attribute.Set) string {
	var parts []string
	for _, kv := range s.ToSlice() {
		parts = append(parts, string(kv.Key)+"="+kv.Value.Emit())
	}
	return strings.Join(parts, ",")
}

// Points returns the data points of the metric named name, as "attrs" to
// count (histograms) or value (sums).
func Points(t testing.TB, ms []metricdata.Metrics, name string) map[string]int64 {
	t.Helper()
	out := make(map[string]int64)
	for _, m := range ms {
		if m.Name != name {
			continue
		}
		switch d := m.Data.(type) {
		case metricdata.Histogram[float64]:
			for _, p := range d.DataPoints {
				out[setString(p.Attributes)] += int64(p.Count)
			}
		case metricdata.Sum[int64]:
			for _, p := range d.DataPoints {
				out[setString(p.Attributes)] += p.Value
			}
		default:
			t.Fatalf("metric %s has data %T", name, m.Data)
		}
	}
	return out
}

// Unit returns the unit of the metric named name.
func Unit(ms []metricdata.Metrics, name string) string {
	for _, m := range ms {
		if m.Name == name {
			return m.Unit
		}
	}
	return "(none)"
}

// CheckPoints compares the points of a metric with want.
func CheckPoints(t testing.TB, ms []metricdata.Metrics, name string, want map[string]int64) {
	t.Helper()
	got := Points(t, ms, name)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s:\n got %v\nwant %v", name, got, want)
	}
}

// AttrValues returns every attribute value of every data point.
func AttrValues(ms []metricdata.Metrics) []string {
	var vs []string
	add := func(s attribute.Set) {
		for _, kv := range s.ToSlice() {
			vs = append(vs, kv.Value.Emit())
		}
	}
	for _, m := range ms {
		switch d := m.Data.(type) {
		case metricdata.Histogram[float64]:
			for _, p := range d.DataPoints {
				add(p.Attributes)
			}
		case metricdata.Sum[int64]:
			for _, p := range d.DataPoints {
				add(p.Attributes)
			}
		}
	}
	return vs
}

// StartParent starts a span standing for the caller's own (an HTTP
// server's, say).
func (e *Env) StartParent(ctx context.Context) (context.Context, trace.Span) {
	return e.TP.Tracer("test").Start(ctx, "POST /takedowns", trace.WithSpanKind(trace.SpanKindServer))
}

// CheckTrace makes a request to "items" over tr, instrumented on both
// sides, and checks its trace and metrics. sent, when not nil, runs once
// Go returned; then the request was acknowledged before its reply came,
// and the checks that depend on it are made.
func CheckTrace(t testing.TB, e *Env, tr syncbridge.Transport, sent func()) {
	t.Helper()
	type seen struct {
		span        trace.SpanContext
		traceparent string
		partition   int32
		offset      int64
	}
	handled := make(chan seen, 1)
	r, err := syncbridge.NewResponder(context.Background(), tr, "items", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		tp, _ := req.Header("traceparent")
		handled <- seen{trace.SpanContextFromContext(ctx), string(tp), req.Partition, req.Offset}
		return syncbridge.Message{Value: []byte("taken down")}, nil
	}, e.Tel.Option())
	if err != nil {
		t.Fatal(err)
	}
	b, err := syncbridge.New(context.Background(), tr, e.Tel.Option())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	ctx, parent := e.StartParent(context.Background())
	call := b.Go(ctx, syncbridge.Message{Topic: "items", Key: []byte("itm-7"), Value: []byte("take down")})
	if sent != nil {
		sent()
	}
	wctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reply, err := call.Wait(wctx)
	if err != nil {
		t.Fatal(err)
	}
	parent.End()
	// The responder's spans end once its reply is published: Shutdown
	// waits for that.
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := <-handled
	id := call.ID()

	req := e.Span(t, "request items")
	send := e.Span(t, "send items")
	proc := e.Span(t, "process items")
	replySend := e.Span(t, "send "+syncbridge.DefaultReplyTopic)

	// One trace; each span's parent is the one before it.
	traceID := parent.SpanContext().TraceID()
	for _, s := range []struct {
		name   string
		span   trace.SpanContext
		parent trace.SpanContext
		want   trace.SpanContext
		kind   trace.SpanKind
		remote bool
	}{
		{"request", req.SpanContext(), req.Parent(), parent.SpanContext(), trace.SpanKindClient, false},
		{"send", send.SpanContext(), send.Parent(), req.SpanContext(), trace.SpanKindProducer, false},
		{"process", proc.SpanContext(), proc.Parent(), send.SpanContext(), trace.SpanKindConsumer, true},
		{"reply send", replySend.SpanContext(), replySend.Parent(), proc.SpanContext(), trace.SpanKindProducer, false},
	} {
		if s.span.TraceID() != traceID {
			t.Errorf("%s span in trace %s, want %s", s.name, s.span.TraceID(), traceID)
		}
		if s.parent.SpanID() != s.want.SpanID() || s.parent.TraceID() != s.want.TraceID() {
			t.Errorf("%s span's parent is %s, want %s", s.name, s.parent.SpanID(), s.want.SpanID())
		}
		if s.parent.IsRemote() != s.remote {
			t.Errorf("%s span's parent remote = %v, want %v", s.name, s.parent.IsRemote(), s.remote)
		}
	}
	kinds := map[string]trace.SpanKind{"request": req.SpanKind(), "send": send.SpanKind(), "process": proc.SpanKind(), "reply send": replySend.SpanKind()}
	wantKinds := map[string]trace.SpanKind{"request": trace.SpanKindClient, "send": trace.SpanKindProducer, "process": trace.SpanKindConsumer, "reply send": trace.SpanKindProducer}
	if fmt.Sprint(kinds) != fmt.Sprint(wantKinds) {
		t.Errorf("span kinds %v, want %v", kinds, wantKinds)
	}

	// The handler's context carries the process span; the request carried
	// the send span's context.
	if h.span.SpanID() != proc.SpanContext().SpanID() {
		t.Errorf("the handler's context has span %s, want the process span %s", h.span.SpanID(), proc.SpanContext().SpanID())
	}
	if want := fmt.Sprintf("00-%s-%s-01", traceID, send.SpanContext().SpanID()); h.traceparent != want {
		t.Errorf("request traceparent %q, want %q", h.traceparent, want)
	}
	tp, _ := reply.Header("traceparent")
	if want := fmt.Sprintf("00-%s-%s-01", traceID, replySend.SpanContext().SpanID()); string(tp) != want {
		t.Errorf("reply traceparent %q, want %q", tp, want)
	}
	// The request span links to the reply's creation context.
	if ls := req.Links(); len(ls) != 1 || ls[0].SpanContext.SpanID() != replySend.SpanContext().SpanID() {
		t.Errorf("request span links %v, want one to the reply's send span %s", ls, replySend.SpanContext().SpanID())
	}

	// Timing: each child within its parent.
	if send.StartTime().Before(req.StartTime()) || send.EndTime().After(req.EndTime()) {
		t.Errorf("send span [%v, %v] outside the request span [%v, %v]", send.StartTime(), send.EndTime(), req.StartTime(), req.EndTime())
	}
	if sent != nil && proc.StartTime().Before(send.EndTime()) {
		t.Errorf("process span starts at %v, before the send span's end %v", proc.StartTime(), send.EndTime())
	}
	if replySend.StartTime().Before(proc.StartTime()) || replySend.EndTime().After(proc.EndTime()) {
		t.Errorf("reply send span outside the process span")
	}

	part := strconv.Itoa(int(h.partition))
	CheckAttrs(t, req, map[string]string{
		"messaging.system": "kafka", "messaging.operation.name": "request", "messaging.operation.type": "-",
		"messaging.destination.name": "items", "messaging.message.conversation_id": id,
		"messaging.kafka.message.key": "itm-7", "messaging.message.body.size": "9", "error.type": "-",
	})
	CheckAttrs(t, send, map[string]string{
		"messaging.system": "kafka", "messaging.operation.name": "send", "messaging.operation.type": "send",
		"messaging.destination.name": "items", "messaging.message.conversation_id": id,
		"messaging.kafka.message.key": "itm-7", "messaging.destination.partition.id": "-", "error.type": "-",
	})
	CheckAttrs(t, proc, map[string]string{
		"messaging.system": "kafka", "messaging.operation.name": "process", "messaging.operation.type": "process",
		"messaging.destination.name": "items", "messaging.destination.partition.id": part,
		"messaging.kafka.offset": strconv.FormatInt(h.offset, 10), "messaging.consumer.group.name": "items.responders",
		"messaging.message.conversation_id": id, "messaging.kafka.message.key": "itm-7", "error.type": "-",
	})
	CheckAttrs(t, replySend, map[string]string{
		"messaging.system": "kafka", "messaging.operation.name": "send", "messaging.operation.type": "send",
		"messaging.destination.name": syncbridge.DefaultReplyTopic, "messaging.message.conversation_id": id,
		"messaging.message.body.size": "10", "error.type": "-",
	})
	for _, s := range e.SR.Ended() {
		if s.Status().Code != codes.Unset {
			t.Errorf("span %s has status %v", s.Name(), s.Status())
		}
	}

	ms := e.Collect(t)
	// Attribute sets print sorted by key: consumer.group, destination,
	// operation.name, operation.type, system.
	durations := map[string]int64{
		AttrItems + "," + AttrRequest + "," + AttrSystem: 1,
		AttrItems + "," + AttrSend + "," + AttrSystem:    1,
		AttrReplies + "," + AttrSend + "," + AttrSystem:  1,
	}
	if sent == nil && Points(t, ms, "messaging.client.operation.duration")[AttrItems+","+AttrSend+","+AttrSystem] == 0 {
		// The reply came before the acknowledgement: no send duration.
		delete(durations, AttrItems+","+AttrSend+","+AttrSystem)
	}
	CheckPoints(t, ms, "messaging.client.operation.duration", durations)
	CheckPoints(t, ms, "messaging.process.duration", map[string]int64{
		AttrGroup + "," + AttrItems + "," + AttrProcess + "," + AttrSystem: 1,
	})
	CheckPoints(t, ms, "messaging.client.sent.messages", map[string]int64{
		AttrItems + "," + AttrSend + "," + AttrSystem:   1,
		AttrReplies + "," + AttrSend + "," + AttrSystem: 1,
	})
	CheckPoints(t, ms, "messaging.client.consumed.messages", map[string]int64{
		AttrGroup + "," + AttrItems + "," + AttrProcess + "," + AttrSystem: 1,
		AttrReplies + "," + AttrProcess + "," + AttrSystem:                 1,
	})
	for name, want := range map[string]string{
		"messaging.client.operation.duration": "s", "messaging.process.duration": "s",
		"messaging.client.sent.messages": "{message}", "messaging.client.consumed.messages": "{message}",
	} {
		if got := Unit(ms, name); got != want {
			t.Errorf("%s unit %q, want %q", name, got, want)
		}
	}
	// The histograms have the conventions' buckets, 5 ms to 10 s.
	for _, m := range ms {
		if h, ok := m.Data.(metricdata.Histogram[float64]); ok {
			for _, p := range h.DataPoints {
				if got := fmt.Sprint(p.Bounds); got != "[0.005 0.01 0.025 0.05 0.075 0.1 0.25 0.5 0.75 1 2.5 5 7.5 10]" {
					t.Errorf("%s buckets %s", m.Name, got)
				}
			}
		}
	}
	// Never a correlation ID, a key or a partition in a metric.
	for _, v := range AttrValues(ms) {
		if v == id || v == "itm-7" {
			t.Errorf("metric attribute value %q", v)
		}
	}
}
