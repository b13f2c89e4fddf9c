package syncbridge_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

// benchPayload is the request payload of the benchmarks: 100 bytes.
var benchPayload = make([]byte, 100)

// runSeqPar runs f as sub-benchmarks seq (one caller) and par64 (64
// concurrent callers).
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

// BenchmarkRequest measures Bridge.Request over the memory transport to an
// echo Responder.
func BenchmarkRequest(b *testing.B) {
	tr := &memory.Transport{}
	defer tr.Close()
	r, err := syncbridge.NewResponder(context.Background(), tr, "req", echo)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	br, err := syncbridge.New(context.Background(), tr)
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	runSeqPar(b, func(ctx context.Context) error {
		_, err := br.Request(ctx, syncbridge.Message{Topic: "req", Value: benchPayload})
		return err
	})
}
