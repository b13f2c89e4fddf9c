package main

import (
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These tests check the harness itself — every contender answers with the
// echo, the scale measurement holds and releases, the report renders — with
// a few requests each. The measurements are `go run .` and the benchmarks.

func TestInprocContenders(t *testing.T) {
	for _, name := range inprocNames {
		t.Run(name, func(t *testing.T) {
			c, err := newInproc(name)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := c.close(); err != nil {
					t.Errorf("close: %v", err)
				}
			}()
			if err := warm(c.r, 10, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			r := drive(c.r, load{callers: 64, maxOps: 640, timeout: 30 * time.Second})
			if r.errs != 0 || r.ops != 640 {
				t.Fatalf("64 callers: %d requests answered, %d failed (first: %v), want 640 and 0", r.ops, r.errs, r.firstErr)
			}
			if r.p50 <= 0 || r.p99 < r.p50 || r.p999 < r.p99 || r.max < r.p999 || r.mean <= 0 || r.mean > r.max {
				t.Errorf("p50 %v, p99 %v, p99.9 %v, max %v, mean %v", r.p50, r.p99, r.p999, r.max, r.mean)
			}
			if r.mallocs < r.ops { // every contender allocates at least once per request
				t.Errorf("%d allocations for %d requests", r.mallocs, r.ops)
			}
		})
	}
}

func TestKafkaContenders(t *testing.T) {
	e := kfakeEnv(t)
	for _, name := range kafkaNames {
		t.Run(name, func(t *testing.T) {
			c, err := e.newKafka(name)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := c.close(); err != nil {
					t.Errorf("close: %v", err)
				}
			}()
			if err := warm(c.r, 1, time.Minute); err != nil {
				t.Fatal(err)
			}
			n := int64(256)
			if c.maxSeq > 0 {
				n = 64 // one batch: about a second
			}
			r := driveCounting(c, load{callers: 64, maxOps: n, timeout: time.Minute})
			if r.errs != 0 || r.ops != n {
				t.Fatalf("64 in flight: %d requests answered, %d failed (first: %v), want %d and 0", r.ops, r.errs, r.firstErr, n)
			}
			if r.produces <= 0 || r.fetches <= 0 {
				t.Errorf("kfake counted %d produce and %d fetch requests", r.produces, r.fetches)
			}
		})
	}
}

func TestScaleOnce(t *testing.T) {
	r, err := scaleOnce(1000, 100)
	if err != nil {
		t.Fatal(err)
	}
	if r.heapPerGo <= 0 || r.heapPerReq <= 0 {
		t.Errorf("heap per in-flight request: Go %.0f B, Request %.0f B; want both positive", r.heapPerGo, r.heapPerReq)
	}
	if r.probe.ops != 100 || r.probe.errs != 0 {
		t.Errorf("probe: %d answered, %d failed", r.probe.ops, r.probe.errs)
	}
}

// TestReport renders a report from a tiny run, saves and reloads it, and
// checks the SVG is well-formed XML.
func TestReport(t *testing.T) {
	dir := t.TempDir()
	c := config{
		short: true, rounds: 1, memDur: 20 * time.Millisecond, kafkaDur: 20 * time.Millisecond,
		warmOps: 10, warmDur: 10 * time.Millisecond, probeOps: 50, scaleReps: 1,
		sections: map[string]bool{"memory": true, "scale": true},
		out:      filepath.Join(dir, "B.md"), svg: filepath.Join(dir, "x", "l.svg"),
	}
	saved := scaleLevels
	scaleLevels = []int{10, 100}
	defer func() { scaleLevels = saved }()
	res, err := runAll(c, "go run . (test)")
	if err != nil {
		t.Fatal(err)
	}
	md := res.markdown(c)
	for _, want := range []string{"## Targets", "syncbridge ns/op ÷ floor", "](x/l.svg)", "## Scale", "## Peer versions", "github.com/nats-io/nats.go",
		"| p50 µs | p99 µs | p99.9 µs | max µs | mean µs |", "allocs/req, 64 callers",
		"syncbridge mean latency ÷ floor mean latency", "syncbridge p99 ÷ syncbridge mean latency", "syncbridge p99.9 ÷ floor p99.9",
		"syncbridge max latency ÷ floor max latency", "syncbridge heap allocations per request"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	path := filepath.Join(dir, "r.json")
	if err := res.save(path, c); err != nil {
		t.Fatal(err)
	}
	var c2 config
	c2.out, c2.svg = c.out, c.svg
	res2, err := loadResults(path, &c2)
	if err != nil {
		t.Fatal(err)
	}
	if md2 := res2.markdown(c2); md2 != md {
		t.Errorf("report rendered from saved results differs from the original")
	}
	d := xml.NewDecoder(strings.NewReader(res.svg()))
	for {
		if _, err := d.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("SVG is not well-formed: %v", err)
		}
	}
}

// TestRenderOlderResults: results saved before every request was timed
// (no p99.9, max, mean or allocations) still render: the mean by Little's
// law, allocations as not measured.
func TestRenderOlderResults(t *testing.T) {
	old := `{"Config":{"Rounds":1,"Sections":{"memory":true}},"Inproc":{"Kind":"in-process","Title":"In-process","Names":["floor","syncbridge"],"Levels":["seq","par64"],
	"Runs":{"floor":{"seq":[{"Ops":10,"Elapsed":10000,"P50":1000,"P99":2000}],"par64":[{"Ops":100,"Elapsed":100000,"P50":1000,"P99":2000}]},
	"syncbridge":{"seq":[{"Ops":10,"Elapsed":20000,"P50":1000,"P99":2000}],"par64":[{"Ops":100,"Elapsed":150000,"P50":1000,"P99":2000}]}}}}`
	path := filepath.Join(t.TempDir(), "old.json")
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	var c config
	res, err := loadResults(path, &c)
	if err != nil {
		t.Fatal(err)
	}
	md := res.markdown(c)
	// mean = 64 × ns/op: 64 µs for the floor, 96 µs for syncbridge.
	for _, want := range []string{"| 64.0 |", "| 96.0 |", "syncbridge mean latency ÷ floor mean latency, 64 callers | ≤ 1.25× | 1.50×"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(md, "syncbridge heap allocations per request") {
		t.Error("report has an allocation target without allocations measured")
	}
}

// TestBridgesConfigs builds every configuration of the bridges section on
// kfake and runs 256 requests through it at 64 in flight: every one is
// answered, by every Bridge in turn.
func TestBridgesConfigs(t *testing.T) {
	e := kfakeEnv(t)
	for _, name := range bridgesNames {
		t.Run(name, func(t *testing.T) {
			c, err := e.newBridges(name)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := c.close(); err != nil {
					t.Errorf("close: %v", err)
				}
			}()
			_, n, _ := bridgesConfig(name)
			if got := len(c.r.(*rrBridges).bs); got != n {
				t.Fatalf("%d Bridges, want %d", got, n)
			}
			if err := warm(c.r, int64(n), time.Minute); err != nil {
				t.Fatal(err)
			}
			r := drive(c.r, load{callers: 64, maxOps: 256, timeout: time.Minute})
			if r.errs != 0 || r.ops != 256 {
				t.Fatalf("64 in flight: %d requests answered, %d failed (first: %v), want 256 and 0", r.ops, r.errs, r.firstErr)
			}
		})
	}
	if _, _, err := bridgesConfig("sideways-3"); err == nil {
		t.Error("an unknown configuration was accepted")
	}
}

// kfakeEnv starts a kfake broker for the test, even with KAFKA_BROKERS set:
// the harness tests check the harness, not a broker.
func kfakeEnv(t *testing.T) *kafkaEnv {
	t.Helper()
	if os.Getenv("KAFKA_BROKERS") != "" {
		t.Setenv("KAFKA_BROKERS", "")
	}
	e, err := startKafka()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	return e
}
