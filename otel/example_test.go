package otel_test

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
	sbotel "github.com/syncbridge/syncbridge/otel"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// One request over the in-process transport, instrumented on both sides:
// its spans form one trace from the caller to the responder and back, and
// its duration is in the messaging.client.operation.duration histogram.
func Example() {
	ctx := context.Background()
	// Spans and metrics kept in memory, to print them below; a program
	// would export them (OTLP, Prometheus).
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	tel := sbotel.New(sbotel.WithTracerProvider(tp), sbotel.WithMeterProvider(mp),
		sbotel.WithPropagators(propagation.TraceContext{}))

	tr := &memory.Transport{}
	defer tr.Close()
	r, err := syncbridge.NewResponder(ctx, tr, "items", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		// ctx carries the process span: the handler's spans nest under it.
		return syncbridge.Message{Value: []byte("taken down")}, nil
	}, tel.Option())
	if err != nil {
		panic(err)
	}
	b, err := syncbridge.New(ctx, tr, tel.Option())
	if err != nil {
		panic(err)
	}
	defer b.Close()

	reply, err := b.Request(ctx, syncbridge.Message{Topic: "items", Value: []byte("itm-7")})
	if err != nil {
		panic(err)
	}
	fmt.Println(string(reply.Value))
	r.Shutdown(ctx) // the responder's spans end once its reply is out

	printTree(spans.Ended())
	var rm metricdata.ResourceMetrics
	reader.Collect(ctx, &rm)
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if h, ok := m.Data.(metricdata.Histogram[float64]); ok && m.Name == "messaging.client.operation.duration" {
			for _, p := range h.DataPoints {
				op, _ := p.Attributes.Value("messaging.operation.name")
				topic, _ := p.Attributes.Value("messaging.destination.name")
				if op.AsString() == "request" {
					fmt.Printf("%s{%s %s}: %d\n", m.Name, op.AsString(), topic.AsString(), p.Count)
				}
			}
		}
	}
	// Output:
	// taken down
	// request items (client)
	//   send items (producer)
	//     process items (consumer)
	//       send syncbridge.replies (producer)
	// messaging.client.operation.duration{request items}: 1
}

// printTree prints spans as a tree, children under their parent.
func printTree(spans []sdktrace.ReadOnlySpan) {
	children := make(map[trace.SpanID][]sdktrace.ReadOnlySpan)
	ids := make(map[trace.SpanID]bool)
	for _, s := range spans {
		ids[s.SpanContext().SpanID()] = true
	}
	var roots []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if p := s.Parent().SpanID(); ids[p] {
			children[p] = append(children[p], s)
		} else {
			roots = append(roots, s)
		}
	}
	var walk func(ss []sdktrace.ReadOnlySpan, depth int)
	walk = func(ss []sdktrace.ReadOnlySpan, depth int) {
		sort.Slice(ss, func(i, j int) bool { return ss[i].StartTime().Before(ss[j].StartTime()) })
		for _, s := range ss {
			fmt.Printf("%s%s (%s)\n", strings.Repeat("  ", depth), s.Name(), s.SpanKind())
			walk(children[s.SpanContext().SpanID()], depth+1)
		}
	}
	walk(roots, 0)
}
