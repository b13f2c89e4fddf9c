package otel_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
	sbotel "github.com/syncbridge/syncbridge/otel"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// BenchmarkRequest measures Bridge.Request over the memory transport to an
// echo Responder, as the core's BenchmarkRequest does, without
// instrumentation and with the Telemetry's option on both sides:
//   - none: no hooks;
//   - noop: no-op providers: the hooks' own cost;
//   - sdk: the SDK's providers, every span sampled and ended into no
//     exporter, metrics aggregated by a reader never read, and the W3C
//     propagator: the cost of instrumentation in production, exporting
//     aside.
func BenchmarkRequest(b *testing.B) {
	for _, c := range []struct {
		name string
		tel  func(b *testing.B) *sbotel.Telemetry
	}{
		{"none", func(*testing.B) *sbotel.Telemetry { return nil }},
		{"noop", func(*testing.B) *sbotel.Telemetry {
			return sbotel.New(sbotel.WithTracerProvider(tracenoop.NewTracerProvider()),
				sbotel.WithMeterProvider(metricnoop.NewMeterProvider()), sbotel.WithPropagators(propagation.TraceContext{}))
		}},
		{"sdk", func(b *testing.B) *sbotel.Telemetry {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			b.Cleanup(func() {
				tp.Shutdown(context.Background())
				mp.Shutdown(context.Background())
			})
			return sbotel.New(sbotel.WithTracerProvider(tp), sbotel.WithMeterProvider(mp), sbotel.WithPropagators(propagation.TraceContext{}))
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var opts []syncbridge.Option
			if tel := c.tel(b); tel != nil {
				opts = append(opts, tel.Option())
			}
			tr := &memory.Transport{}
			defer tr.Close()
			r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
				return syncbridge.Message{Value: req.Value}, nil
			}, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			br, err := syncbridge.New(context.Background(), tr, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer br.Close()
			payload := make([]byte, 100)
			runSeqPar(b, func(ctx context.Context) error {
				_, err := br.Request(ctx, syncbridge.Message{Topic: "req", Value: payload})
				return err
			})
		})
	}
}

// runSeqPar runs f as sub-benchmarks seq (one caller) and par64 (64
// concurrent callers), as the core's benchmarks do.
func runSeqPar(b *testing.B, f func(ctx context.Context) error) {
	b.Run("seq", func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		b.ReportAllocs()
		for b.Loop() {
			if err := f(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("par64", func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		b.ReportAllocs()
		b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := f(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
