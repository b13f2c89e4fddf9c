package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// The testing.B face of the harness: the same contenders and the same drive
// loop, with b.N requests split between the callers.
//
//	go test -run '^$' -bench . -count 6 | tee new.txt; go tool benchstat new.txt
//
// Each benchmark reports ns/op (wall time per request: for 64 callers the
// inverse of throughput) and the latency distribution of the requests it
// made, every one timed: p50, p99, p99.9, max and mean.

// benchDrive runs b.N requests from callers goroutines and reports latency.
func benchDrive(b *testing.B, r requester, callers int) {
	b.Helper()
	b.ReportAllocs()
	b.ResetTimer()
	res := drive(r, load{callers: callers, maxOps: int64(b.N), timeout: time.Minute})
	b.StopTimer()
	if res.errs > 0 {
		b.Fatalf("%d of %d requests failed, first: %v", res.errs, b.N, res.firstErr)
	}
	b.ReportMetric(float64(res.p50.Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(res.p99.Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(res.p999.Nanoseconds()), "p99.9-ns")
	b.ReportMetric(float64(res.max.Nanoseconds()), "max-ns")
	b.ReportMetric(float64(res.mean.Nanoseconds()), "mean-ns")
	b.ReportMetric(res.perSec(), "req/s")
	b.ReportMetric(res.cpuPerOp(), "cpu-ns/op")
}

// BenchmarkMemory: floor, syncbridge over the memory transport, NATS and
// Watermill, with 1 caller (seq) and 64 concurrent callers (par64).
func BenchmarkMemory(b *testing.B) {
	for _, name := range inprocNames {
		b.Run(name, func(b *testing.B) {
			c, err := newInproc(name)
			if err != nil {
				b.Fatal(err)
			}
			defer c.close()
			if err := warm(c.r, 1000, 10*time.Second); err != nil {
				b.Fatal(err)
			}
			b.Run("seq", func(b *testing.B) { benchDrive(b, c.r, 1) })
			b.Run("par64", func(b *testing.B) { benchDrive(b, c.r, 64) })
		})
	}
}

var (
	kafkaOnce sync.Once
	kafkaE    *kafkaEnv
	kafkaErr  error
	kafkaCs   = map[string]*contender{}
)

// kafkaContender returns the named Kafka contender on the shared broker
// (kfake, or KAFKA_BROKERS), built and warmed once per test binary.
func kafkaContender(b *testing.B, name string) *contender {
	kafkaOnce.Do(func() { kafkaE, kafkaErr = startKafka() })
	if kafkaErr != nil {
		b.Fatal(kafkaErr)
	}
	if c := kafkaCs[name]; c != nil {
		return c
	}
	var (
		c   *contender
		err error
	)
	if cfg, ok := strings.CutPrefix(name, "bridges:"); ok {
		c, err = kafkaE.newBridges(cfg)
	} else {
		c, err = kafkaE.newKafka(name)
	}
	if err != nil {
		b.Fatal(err)
	}
	n := int64(200)
	if c.maxSeq > 0 {
		n = 2
	}
	if err := warm(c.r, n, time.Minute); err != nil {
		b.Fatal(err)
	}
	kafkaCs[name] = c
	return c
}

// BenchmarkKafka: each Kafka contender sequential (seq) and with 64 requests
// in flight (pipe64). kafka-go-default takes a second per request.
func BenchmarkKafka(b *testing.B) {
	for _, name := range kafkaNames {
		b.Run(name, func(b *testing.B) {
			c := kafkaContender(b, name)
			slow := func(b *testing.B) {
				if c.maxSeq > 0 && b.N > 100 {
					b.Skipf("%s takes a second per request: run it with a time -benchtime (the default 1s), not %d requests", name, b.N)
				}
			}
			b.Run("seq", func(b *testing.B) { slow(b); benchDrive(b, c.r, 1) })
			b.Run("pipe64", func(b *testing.B) { slow(b); benchDrive(b, c.r, 64) })
		})
	}
}

// BenchmarkBridges: the bridges section's configurations (many Bridges on
// one reply topic), sequential and 64 in flight.
func BenchmarkBridges(b *testing.B) {
	for _, name := range bridgesNames {
		b.Run(name, func(b *testing.B) {
			c := kafkaContender(b, "bridges:"+name)
			b.Run("seq", func(b *testing.B) { benchDrive(b, c.r, 1) })
			b.Run("pipe64", func(b *testing.B) { benchDrive(b, c.r, 64) })
		})
	}
}

// BenchmarkScale: syncbridge over the memory transport with N requests held
// in flight; ns/op is a probe request's latency meanwhile, and B/inflight
// the heap each held request (started with Bridge.Go) takes.
func BenchmarkScale(b *testing.B) {
	for _, n := range scaleLevels {
		b.Run(fmt.Sprintf("inflight=%d", n), func(b *testing.B) {
			r, err := scaleOnce(n, b.N)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(r.probe.elapsed.Nanoseconds())/float64(max(1, r.probe.ops)), "ns/op")
			b.ReportMetric(float64(r.probe.pct(.99).Nanoseconds()), "p99-ns")
			b.ReportMetric(r.heapPerGo, "B/inflight")
		})
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, c := range kafkaCs {
		c.close()
	}
	if kafkaE != nil {
		kafkaE.close()
	}
	os.Exit(code)
}
