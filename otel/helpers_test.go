package otel_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/syncbridge/syncbridge"
	sbotel "github.com/syncbridge/syncbridge/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a Telemetry recording into memory: spans into a SpanRecorder,
// metrics into a ManualReader.
type env struct {
	sr  *tracetest.SpanRecorder
	rd  *sdkmetric.ManualReader
	tp  *sdktrace.TracerProvider
	tel *sbotel.Telemetry
}

func newEnv(t testing.TB, opts ...sbotel.Option) *env {
	t.Helper()
	e := &env{sr: tracetest.NewSpanRecorder(), rd: sdkmetric.NewManualReader()}
	e.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(e.sr))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(e.rd))
	t.Cleanup(func() {
		e.tp.Shutdown(context.Background())
		mp.Shutdown(context.Background())
	})
	e.tel = sbotel.New(append([]sbotel.Option{
		sbotel.WithTracerProvider(e.tp),
		sbotel.WithMeterProvider(mp),
		sbotel.WithPropagators(propagation.TraceContext{}),
	}, opts...)...)
	return e
}

// spans returns the ended spans named name.
func (e *env) spans(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range e.sr.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// span returns the one ended span named name.
func (e *env) span(t *testing.T, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	ss := e.spans(name)
	if len(ss) != 1 {
		t.Fatalf("%d spans named %q, want 1; ended: %v", len(ss), name, e.names())
	}
	return ss[0]
}

func (e *env) names() []string {
	var ns []string
	for _, s := range e.sr.Ended() {
		ns = append(ns, s.Name())
	}
	sort.Strings(ns)
	return ns
}

// attrs returns a span's attributes as a map of their values' strings.
func attrs(s sdktrace.ReadOnlySpan) map[string]string {
	m := make(map[string]string)
	for _, kv := range s.Attributes() {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

// checkAttrs reports the attributes of s that differ from want; a want
// value "-" means absent.
func checkAttrs(t *testing.T, s sdktrace.ReadOnlySpan, want map[string]string) {
	t.Helper()
	got := attrs(s)
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

// collect reads the metrics.
func (e *env) collect(t testing.TB) []metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := e.rd.Collect(context.Background(), &rm); err != nil {
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

// points returns the data points of the metric named name, as "attrs" to
// count (histograms) or value (sums).
func points(t testing.TB, ms []metricdata.Metrics, name string) map[string]int64 {
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

// unit returns the unit of the metric named name.
func unit(ms []metricdata.Metrics, name string) string {
	for _, m := range ms {
		if m.Name == name {
			return m.Unit
		}
	}
	return "(none)"
}

// checkPoints compares the points of a metric with want.
func checkPoints(t *testing.T, ms []metricdata.Metrics, name string, want map[string]int64) {
	t.Helper()
	got := points(t, ms, name)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s:\n got %v\nwant %v", name, got, want)
	}
}

// attrValues returns every attribute value of every data point.
func attrValues(ms []metricdata.Metrics) []string {
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

// testParent starts a span standing for the caller's own (an HTTP
// server's, say).
func (e *env) testParent(ctx context.Context) (context.Context, trace.Span) {
	return e.tp.Tracer("test").Start(ctx, "POST /takedowns", trace.WithSpanKind(trace.SpanKindServer))
}

// signal is a hook that tells a test that a reply was dropped or a request
// skipped: it runs after the Telemetry's hook, given after it.
type signal struct {
	dropped chan syncbridge.DropReason
	skipped chan syncbridge.SkipReason
}

func newSignal() *signal {
	return &signal{dropped: make(chan syncbridge.DropReason, 16), skipped: make(chan syncbridge.SkipReason, 16)}
}

func (s *signal) OnDroppedReply(r syncbridge.DropReason, _ *syncbridge.Message) { s.dropped <- r }
func (s *signal) OnSkippedRequest(r syncbridge.SkipReason, _ *syncbridge.Message, _ error) {
	s.skipped <- r
}
