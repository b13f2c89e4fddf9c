package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

func sortFloats(v []float64) { slices.Sort(v) }

func perOp(n, ops int64) float64 {
	if n < 0 || ops == 0 {
		return math.NaN()
	}
	return float64(n) / float64(ops)
}

// Metric extractors.
var (
	mNsOp  = func(r run) float64 { return r.nsPerOp() }
	mPerS  = func(r run) float64 { return r.perSec() }
	mP50   = func(r run) float64 { return float64(r.pct(.5)) }
	mP99   = func(r run) float64 { return float64(r.pct(.99)) }
	mP999  = func(r run) float64 { return float64(r.pct(.999)) }
	mMax   = func(r run) float64 { return float64(r.max) }
	mMean  = func(r run) float64 { return float64(r.meanLat(64)) }
	mCPU   = func(r run) float64 { return r.cpuPerOp() }
	mAlloc = func(r run) float64 { return r.allocsPerOp() }
	mProd  = func(r run) float64 { return perOp(r.produces, r.ops) }
	mFetch = func(r run) float64 { return perOp(r.fetches, r.ops) }
)

// fmtNum prints v with three significant digits, grouping thousands.
func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return group(fmt.Sprintf("%.0f", v))
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func group(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// cell prints a median and its min–max over rounds, scaled by div.
func cell(s stat, div float64) string {
	if s.lo == s.hi {
		return fmtNum(s.med / div)
	}
	return fmt.Sprintf("%s <sub>%s–%s</sub>", fmtNum(s.med/div), fmtNum(s.lo/div), fmtNum(s.hi/div))
}

// ratio is a target's measured ratio: of the medians, with the range of the
// per-round ratios (rounds pair the two contenders' runs of the same round).
type ratio struct {
	med, lo, hi float64
}

func pairRatio(a, b *series, f func(run) float64) ratio { return pairRatio2(a, f, b, f) }

// pairRatio2 is pairRatio of fa(a) to fb(b).
func pairRatio2(a *series, fa func(run) float64, b *series, fb func(run) float64) ratio {
	if a == nil || b == nil || len(a.runs) == 0 || len(b.runs) == 0 {
		return ratio{med: math.NaN()}
	}
	sa, sb := a.stat(fa), b.stat(fb)
	var per []float64
	for i := range min(len(a.runs), len(b.runs)) {
		if d := fb(b.runs[i]); d != 0 {
			per = append(per, fa(a.runs[i])/d)
		}
	}
	ps := summarize(per)
	return ratio{med: sa.med / sb.med, lo: ps.lo, hi: ps.hi}
}

// target is one goal and what was measured.
type target struct {
	area, what, goal string
	r                ratio
	ok               bool
	note             string
}

func (t target) measured() string {
	if math.IsNaN(t.r.med) {
		return "not measured"
	}
	s := fmt.Sprintf("%.2f×", t.r.med)
	if t.r.lo != 0 || t.r.hi != 0 {
		s += fmt.Sprintf(" <sub>rounds %.2f–%.2f</sub>", t.r.lo, t.r.hi)
	}
	if t.note != "" {
		s += " — " + t.note
	}
	return s
}

func (res *results) targets() []target {
	var ts []target
	if s := res.inproc; s != nil && s.err == nil {
		sb, fl := s.get("syncbridge", "par64"), s.get("floor", "par64")
		r := pairRatio(sb, fl, mNsOp)
		ts = append(ts, target{area: "memory", what: "syncbridge ns/op ÷ floor ns/op, 64 callers", goal: "≤ 1.25×", r: r, ok: r.med <= 1.25})
		r = pairRatio(sb, fl, mMean)
		ts = append(ts, target{area: "memory", what: "syncbridge mean latency ÷ floor mean latency, 64 callers", goal: "≤ 1.25×", r: r, ok: r.med <= 1.25})
		r = pairRatio2(sb, mP99, sb, mMean)
		ts = append(ts, target{area: "memory", what: "syncbridge p99 ÷ syncbridge mean latency, 64 callers (fair service)", goal: "≤ 5×", r: r, ok: r.med <= 5})
		r = pairRatio(sb, fl, mP999)
		ts = append(ts, target{area: "memory", what: "syncbridge p99.9 ÷ floor p99.9, 64 callers", goal: "≤ 1×", r: r, ok: r.med <= 1})
		r = pairRatio(sb, fl, mMax)
		ts = append(ts, target{area: "memory", what: "syncbridge max latency ÷ floor max latency, 64 callers", goal: "≤ 1×", r: r, ok: r.med <= 1})
		if a := sb.stat(mAlloc); !math.IsNaN(a.med) {
			ts = append(ts, target{area: "memory", what: "syncbridge heap allocations per request ÷ 4, 64 callers (whole process)", goal: "≤ 1× (4 allocs)",
				r: ratio{med: a.med / 4, lo: a.lo / 4, hi: a.hi / 4}, ok: a.med <= 4, note: fmt.Sprintf("%.2f allocs", a.med)})
		}
		r = pairRatio(sb, s.get("nats", "par64"), mPerS)
		ts = append(ts, target{area: "memory", what: "syncbridge req/s ÷ NATS req/s, 64 callers", goal: "≥ 6×", r: r, ok: r.med >= 6})
		r = pairRatio(sb, s.get("watermill", "par64"), mPerS)
		ts = append(ts, target{area: "memory", what: "syncbridge req/s ÷ Watermill req/s, 64 callers", goal: "≥ 25×", r: r, ok: r.med >= 25})
	}
	for _, k := range res.kafka {
		if k.err != nil {
			continue
		}
		area := "Kafka, " + k.broker
		sb, fr := k.get("syncbridge", "seq"), k.get("franz-go", "seq")
		r := pairRatio(sb, fr, mP50)
		ts = append(ts, target{area: area, what: "syncbridge seq p50 ÷ franz-go linger 0 seq p50", goal: "≤ 1×", r: r, ok: r.med <= 1})
		r = pairRatio(k.get("syncbridge", "pipe64"), k.get("franz-go", "pipe64"), mPerS)
		ts = append(ts, target{area: area, what: "syncbridge req/s ÷ franz-go linger 0 req/s, 64 in flight", goal: "≥ 1×", r: r, ok: r.med >= 1})
		// Issue 11, part 2: syncbridge's own Responder against the franz-go
		// echo, end to end (requester and responder).
		if _, ok := k.runs["syncbridge-e2e"]; ok {
			e2e, fr := k.get("syncbridge-e2e", "pipe64"), k.get("franz-go", "pipe64")
			r = pairRatio(e2e, fr, mPerS)
			ts = append(ts, target{area: area, what: "syncbridge-e2e (own Responder, defaults) req/s ÷ franz-go req/s, 64 in flight", goal: "≥ 1×", r: r, ok: r.med >= 1})
			r = pairRatio(e2e, fr, mCPU)
			ts = append(ts, target{area: area, what: "syncbridge-e2e CPU per request ÷ franz-go's, 64 in flight", goal: "≤ 1.2×", r: r, ok: r.med <= 1.2})
		}
		if _, ok := k.runs["syncbridge-e2e-conc"]; ok {
			r = pairRatio(k.get("syncbridge-e2e-conc", "pipe64"), k.get("franz-go", "pipe64"), mPerS)
			ts = append(ts, target{area: area, what: "syncbridge-e2e-conc (WithConcurrentHandlers) req/s ÷ franz-go req/s, 64 in flight", goal: "≥ 1.5×", r: r, ok: r.med >= 1.5})
		}
	}
	ts = append(ts, res.bridgesTargets()...)
	if len(res.scale) > 0 {
		big := scaleLevels[len(scaleLevels)-1]
		small := scaleLevels[0]
		if rs := res.scale[big]; len(rs) > 0 {
			var v []float64
			for _, r := range rs {
				v = append(v, r.heapPerGo)
			}
			st := summarize(v)
			ts = append(ts, target{area: "scale", what: fmt.Sprintf("heap bytes per in-flight request at %s in flight (Bridge.Go), ÷ 256 B", group(fmt.Sprint(big))), goal: "≤ 1× (256 B)",
				r: ratio{med: st.med / 256, lo: st.lo / 256, hi: st.hi / 256}, ok: st.med <= 256, note: fmt.Sprintf("%.0f B", st.med)})
		}
		if len(res.scale[big]) > 0 && len(res.scale[small]) > 0 {
			var per []float64
			var bigs, smalls []float64
			for i := range min(len(res.scale[big]), len(res.scale[small])) {
				b, s := float64(res.scale[big][i].probe.pct(.5)), float64(res.scale[small][i].probe.pct(.5))
				bigs, smalls = append(bigs, b), append(smalls, s)
				per = append(per, b/s)
			}
			ps := summarize(per)
			r := ratio{med: summarize(bigs).med / summarize(smalls).med, lo: ps.lo, hi: ps.hi}
			if len(per) < 2 {
				r.lo, r.hi = 0, 0
			}
			ts = append(ts, target{area: "scale", what: fmt.Sprintf("probe Request p50 with %s held ÷ with %d held", group(fmt.Sprint(big)), small), goal: "≤ 2×", r: r, ok: r.med <= 2})
		}
	}
	return ts
}

// writeBrokerNotes ends the table of a Kafka or bridges section: what each
// contender is, what the table's columns mean (notes), the first error of
// every run that had one, and how busy the machine was.
func writeBrokerNotes(w func(format string, args ...any), s *section, notes string) {
	w("\n")
	for _, n := range s.names {
		w("- **%s**: %s\n", n, s.desc[n])
	}
	w("\n%s\n\n", notes)
	errLines := 0
	for _, n := range s.names {
		for _, l := range s.levels {
			if e := s.get(n, l).firstErr(); e != nil {
				w("- %s %s: first error: `%v`\n", n, l, e)
				errLines++
			}
		}
	}
	if errLines > 0 {
		w("\n")
	}
	w("CPU during this section: this process %.2f cores (the broker included when it is kfake), other processes %.2f cores (a real broker included) on average (load average %s → %s).\n\n", s.cpu.selfCores, s.cpu.otherCores, s.cpu.loadAvgFrom, s.cpu.loadAvgTo)
}

func (res *results) markdown(c config) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Benchmarks\n\n")
	w("Generated by the harness in [`bench/`](bench/) — do not edit by hand; rerun it. ")
	w("Run on %s, took %v.\n\n", res.start.UTC().Format("2006-01-02 15:04 MST"), res.elapsed.Round(time.Second))
	w("```\n%s\n```\n\n", res.cmd)
	mode := "full"
	if c.short {
		mode = "-short"
	}
	w("Mode: %s; %d rounds; each in-process run %v, each Kafka run %v; medians over rounds, with min–max in small print. In every round the contenders run in a new random order; each is built afresh (Kafka: on new topics, with a new echo responder), warmed up (%d requests, then %v with 64 callers), run at both loads in random order, and closed, so that only the contender being measured is alive.\n\n", mode, c.rounds, c.memDur, c.kafkaDur, c.warmOps, c.warmDur)

	w("## Targets\n\n")
	w("Ratios come from this run: the ratio of the medians, and the range of the per-round ratios (the two contenders' runs of the same round).\n\n")
	w("| area | target | goal | measured | |\n|---|---|---|---|---|\n")
	for _, t := range res.targets() {
		verdict := "**met**"
		switch {
		case t.goal == "—":
			verdict = ""
		case math.IsNaN(t.r.med):
			verdict = "not measured"
		case !t.ok:
			verdict = "**missed**"
		}
		w("| %s | %s | %s | %s | %s |\n", t.area, t.what, t.goal, t.measured(), verdict)
	}
	w("\n")

	if c.svg != "" {
		link := c.svg
		if c.out != "" {
			if abs, err := filepath.Abs(c.svg); err == nil {
				if dir, err := filepath.Abs(filepath.Dir(c.out)); err == nil {
					if rel, err := filepath.Rel(dir, abs); err == nil {
						link = filepath.ToSlash(rel)
					}
				}
			}
		}
		w("## Latency chart\n\n![p50 (bar) and p99 (whisker) latency per contender, log scale](%s)\n\n", link)
	}

	if s := res.inproc; s != nil {
		w("## In-process: 100-byte echo, 1 caller and 64 concurrent callers\n\n")
		if s.err != nil {
			w("Not measured: %v\n\n", s.err)
		} else {
			w("| contender | 1 caller ns/op | p50 µs | p99 µs | 64 callers ns/op | req/s | p50 µs | p99 µs | p99.9 µs | max µs | mean µs | CPU ns/req, 64 callers | allocs/req, 64 callers | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
			for _, n := range s.names {
				q, p := s.get(n, "seq"), s.get(n, "par64")
				allocs := "—"
				if a := p.stat(mAlloc); !math.IsNaN(a.med) {
					allocs = cell(a, 1)
				}
				w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", n,
					cell(q.stat(mNsOp), 1), cell(q.stat(mP50), 1e3), cell(q.stat(mP99), 1e3),
					cell(p.stat(mNsOp), 1), cell(p.stat(mPerS), 1), cell(p.stat(mP50), 1e3), cell(p.stat(mP99), 1e3),
					cell(p.stat(mP999), 1e3), cell(p.stat(mMax), 1e3), cell(p.stat(mMean), 1e3),
					cell(p.stat(mCPU), 1), allocs, q.errs()+p.errs())
			}
			w("\n")
			for _, n := range s.names {
				w("- **%s**: %s\n", n, s.desc[n])
			}
			w("\nns/op is wall time per completed request over the run (for 64 callers, the inverse of throughput). Every request is timed (two clock reads, the same cost for every contender) into a histogram per caller, allocated before the run: percentiles are exact to within 0.8 %%, max and mean are exact; mean is measured, and agrees with 64 × ns/op (Little's law) to within the clock's cost and the run's start and end. A p50 far below the mean means unfair service: some callers get their requests through in bursts while others wait for whole scheduler time slices, which p99.9 and max show. allocs/req counts the heap allocations of the whole process (runtime.MemStats.Mallocs) per request. CPU ns/req is the CPU time of the whole process (callers, responders, transport) per request: less sensitive than wall time to other processes on the machine.\n\n")
			w("CPU during this section: this process %.2f cores, other processes %.2f cores on average (load average %s → %s).\n\n", s.cpu.selfCores, s.cpu.otherCores, s.cpu.loadAvgFrom, s.cpu.loadAvgTo)
		}
	}

	for _, s := range res.kafka {
		w("## %s: 100-byte echo, sequential and 64 in flight\n\n", s.title)
		if s.err != nil {
			w("Not measured: %v\n\n", s.err)
			continue
		}
		w("Every topic has %d partitions (replication factor 1); each contender has its own request and reply topics.\n\n", kafkaPartitions)
		counted := s.broker != "" && strings.HasPrefix(s.broker, "kfake")
		hdr := "| contender | seq p50 µs | seq p99 µs | seq req/s | 64 in flight req/s | p50 µs | p99 µs | CPU µs/req, 64 in flight |"
		sep := "|---|---|---|---|---|---|---|---|"
		if counted {
			hdr += " produce + fetch requests per round trip, 64 in flight |"
			sep += "---|"
		}
		w("%s errors |\n%s---|\n", hdr, sep)
		for _, n := range s.names {
			q, p := s.get(n, "seq"), s.get(n, "pipe64")
			w("| %s | %s | %s | %s | %s | %s | %s | %s |", n,
				cell(q.stat(mP50), 1e3), cell(q.stat(mP99), 1e3), cell(q.stat(mPerS), 1),
				cell(p.stat(mPerS), 1), cell(p.stat(mP50), 1e3), cell(p.stat(mP99), 1e3),
				cell(p.stat(mCPU), 1e3))
			if counted {
				w(" %s + %s |", fmtNum(p.stat(mProd).med), fmtNum(p.stat(mFetch).med))
			}
			w(" %d |\n", q.errs()+p.errs())
		}
		writeBrokerNotes(w, s, "The common echo responder (every contender but the syncbridge-e2e ones) is a franz-go client with `ProducerLinger(0)` that consumes the request topic and produces each value back to the topic in `kafka_replyTopic` with the `kafka_correlationId` header. Every latency is timed. kafka-go-default takes about a second per request (BatchTimeout 0 means 1 s), so its sequential runs are capped at a few requests. CPU µs/req is the CPU time of the whole benchmark process per request — requester, the common echo responder and, on kfake, the broker — so it compares contenders fairly even on a busy machine. On kfake the broker counts the produce and fetch requests it receives during each run (requester and echo responder together): fewer requests per round trip means fatter batches.")
	}

	res.bridgesMarkdown(w)

	if c.sections["scale"] {
		w("## Scale: syncbridge over the memory transport with N requests held in flight\n\n")
		if res.scaleErr != nil {
			w("Failed: %v\n\n", res.scaleErr)
		}
		if len(res.scale) > 0 {
			w("| in flight | Bridge.Go heap B/req | Bridge.Request heap B/req | + goroutine stack B/req | probe p50 µs | probe p99 µs | release→reply µs/req |\n|---|---|---|---|---|---|---|\n")
			for _, n := range scaleLevels {
				rs := res.scale[n]
				if len(rs) == 0 {
					continue
				}
				col := func(f func(scaleResult) float64, div float64) string {
					var v []float64
					for _, r := range rs {
						v = append(v, f(r))
					}
					return cell(summarize(v), div)
				}
				w("| %s | %s | %s | %s | %s | %s | %s |\n", group(fmt.Sprint(n)),
					col(func(r scaleResult) float64 { return r.heapPerGo }, 1),
					col(func(r scaleResult) float64 { return r.heapPerReq }, 1),
					col(func(r scaleResult) float64 { return r.stackPerReq }, 1),
					col(func(r scaleResult) float64 { return float64(r.probe.pct(.5)) }, 1e3),
					col(func(r scaleResult) float64 { return float64(r.probe.pct(.99)) }, 1e3),
					col(func(r scaleResult) float64 { return float64(r.drain) }, 1e3))
			}
			w("\n%d repetition(s). A holding responder (a consumer-group subscription on the memory transport) records each request's correlation ID in memory allocated beforehand and returns at once, so nothing piles up in the transport's queues; once it has seen all N — and `Stats().InFlight` and `Stats().Waiting` both say N, checked, not waited for — the heap (`runtime.MemStats.HeapAlloc` after two `runtime.GC()`) is compared with before the N requests started. First N `Bridge.Go` calls (no goroutine per request), then N goroutines blocked in `Bridge.Request` (heap, and goroutine stacks from `StackInuse`). While the N are held, %s sequential probe requests go through the same Bridge to an echo `syncbridge.Responder`: their p50/p99 show whether a large registry slows other requests. Then the holder releases all replies (8 goroutines publishing) and the time until every Call ended is divided by N. At 10 in flight the heap and stack deltas are a few KB, within the runtime's own noise (a stack freed by the GC can even make the stack delta negative); the larger levels are the ones to read. Now and then one repetition shows a large negative delta (memory of an earlier phase freed during the measurement, although the heap is collected until it settles before each reading); the median discards it, the min–max shows it.\n\n", len(res.scale[scaleLevels[0]]), group(fmt.Sprint(c.probeOps)))
			w("CPU during this section: this process %.2f cores, other processes %.2f cores on average (load average %s → %s).\n\n", res.scaleCPU.selfCores, res.scaleCPU.otherCores, res.scaleCPU.loadAvgFrom, res.scaleCPU.loadAvgTo)
		}
	}

	if notes, err := os.ReadFile("NOTES.md"); err == nil {
		w("%s\n", strings.TrimSpace(string(notes)))
		w("\n")
	}

	w("## Machine\n\n")
	w("| | |\n|---|---|\n")
	w("| Go | %s %s |\n", res.m.goVersion, res.m.osArch)
	w("| CPU | %s (%d logical CPUs) |\n", res.m.cpu, res.m.numCPU)
	w("| GOMAXPROCS | %d |\n", res.m.gomaxprocs)
	w("| syncbridge commit | %s |\n", res.m.commit)
	w("\nThe machine has 2 cores shared with other work; the CPU lines above say how busy the rest of the machine was. Go timers shorter than 1 ms fire after about 1.1 ms here.\n\n")
	w("## Peer versions\n\n| module | version |\n|---|---|\n")
	for _, p := range res.m.peers {
		w("| %s | %s |\n", p[0], p[1])
	}
	w("\nbenchstat is `go tool benchstat` from golang.org/x/perf, a tool dependency of bench/go.mod.\n\n")
	w("## How to run\n\n")
	w("From `bench/` (a separate Go module, so `go test ./...` at the root does not build it):\n\n")
	w("```\ngo run . -short                                   # under two minutes\ngo run . -out ../BENCHMARKS.md -svg latency.svg   # full run, writes this file\n")
	w("export KAFKA_PORT=19092 KAFKA_DATA=/tmp/sbbench-kafka-data   # a broker of its own, beside any test broker on 9092\n")
	w("../scripts/kafka start && KAFKA_BROKERS=127.0.0.1:19092 go run . -save results.json -out ../BENCHMARKS.md -svg latency.svg; ../scripts/kafka stop\n")
	w("go test -run '^$' -bench . -count 6 | tee new.txt; go tool benchstat new.txt\n```\n\n")
	w("With `KAFKA_BROKERS` set the Kafka section runs on that broker (with unique topics, deleted afterwards) and then on kfake again (`-kfake=false` skips that). `-only memory,kafka,scale` picks sections, `-contenders REGEXP` contenders; `-rounds`, `-memdur`, `-kafkadur` change the lengths. `-save results.json` keeps the numbers and `-render results.json` regenerates this file from them without measuring (this file's numbers are in [`bench/results.json`](bench/results.json)); the notes come from `bench/NOTES.md`.\n")
	return b.String()
}

// --- SVG chart ---

type bar struct {
	group, label string
	p50, p99     float64 // ns
}

func (res *results) bars() []bar {
	var bs []bar
	if s := res.inproc; s != nil && s.err == nil {
		for _, l := range s.levels {
			g := "in-process, 1 caller"
			if l != "seq" {
				g = "in-process, 64 callers"
			}
			for _, n := range s.names {
				ss := s.get(n, l)
				bs = append(bs, bar{g, n, ss.stat(mP50).med, ss.stat(mP99).med})
			}
		}
	}
	for _, s := range res.kafka {
		if s.err != nil {
			continue
		}
		short := "kfake"
		if !strings.HasPrefix(s.broker, "kfake") {
			short = "Apache Kafka"
		}
		for _, l := range s.levels {
			g := short + ", sequential"
			if l != "seq" {
				g = short + ", 64 in flight"
			}
			for _, n := range s.names {
				ss := s.get(n, l)
				bs = append(bs, bar{g, n, ss.stat(mP50).med, ss.stat(mP99).med})
			}
		}
	}
	if len(res.scale) > 0 {
		for _, n := range scaleLevels {
			rs := res.scale[n]
			if len(rs) == 0 {
				continue
			}
			var a, b []float64
			for _, r := range rs {
				a, b = append(a, float64(r.probe.pct(.5))), append(b, float64(r.probe.pct(.99)))
			}
			bs = append(bs, bar{"syncbridge probe, N held in flight", group(fmt.Sprint(n)) + " held", summarize(a).med, summarize(b).med})
		}
	}
	return bs
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

// svg draws p50 as a bar and p99 as a whisker with a dot, on a log scale.
func (res *results) svg() string {
	bs := res.bars()
	const (
		width   = 960
		left    = 170
		right   = 140
		top     = 50
		rowH    = 17
		groupH  = 26
		bottomH = 40
	)
	lo, hi := 1e3, 1e4 // ns
	for _, b := range bs {
		if b.p50 > 0 {
			lo = math.Min(lo, b.p50)
		}
		hi = math.Max(hi, math.Max(b.p50, b.p99))
	}
	lo = math.Pow(10, math.Floor(math.Log10(lo)))
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))
	plotW := float64(width - left - right)
	x := func(ns float64) float64 {
		if ns <= lo {
			return left
		}
		return left + plotW*math.Log10(ns/lo)/math.Log10(hi/lo)
	}
	groups := 0
	prev := ""
	for _, b := range bs {
		if b.group != prev {
			groups++
			prev = b.group
		}
	}
	height := top + groups*groupH + len(bs)*rowH + bottomH
	colors := []string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#9c755f"}
	colorOf := map[string]string{}
	var s strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&s, format, args...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="12">`+"\n", width, height, width, height)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="%d" y="22" font-size="15" font-weight="bold">Request/reply latency, 100-byte echo: p50 (bar) and p99 (whisker), log scale</text>`+"\n", left-150)
	p(`<text x="%d" y="40" fill="#555">medians over rounds; %s</text>`+"\n", left-150, xmlEscape(res.start.UTC().Format("2006-01-02")+", "+res.m.cpu+", GOMAXPROCS "+fmt.Sprint(res.m.gomaxprocs)))
	// decade grid
	plotTop, plotBottom := top, height-bottomH
	for d := lo; d <= hi*1.001; d *= 10 {
		for k := 1; k <= 9; k++ {
			v := d * float64(k)
			if v > hi*1.001 {
				break
			}
			xx := x(v)
			stroke, op := "#ddd", "1"
			if k == 1 {
				stroke = "#aaa"
			} else {
				op = "0.5"
			}
			p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" opacity="%s"/>`+"\n", xx, plotTop, xx, plotBottom, stroke, op)
			if k == 1 {
				p(`<text x="%.1f" y="%d" text-anchor="middle" fill="#333">%s</text>`+"\n", xx, plotBottom+16, durLabel(v))
			}
		}
	}
	y := top
	prev = ""
	ci := 0
	for _, b := range bs {
		if b.group != prev {
			y += groupH
			p(`<text x="8" y="%d" font-weight="bold" fill="#222">%s</text>`+"\n", y-8, xmlEscape(b.group))
			prev = b.group
		}
		col, ok := colorOf[b.label]
		if !ok {
			col = colors[ci%len(colors)]
			colorOf[b.label] = col
			ci++
		}
		cy := float64(y) + rowH/2
		p(`<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle" fill="#222">%s</text>`+"\n", left-6, cy, xmlEscape(b.label))
		if b.p50 > 0 {
			p(`<rect x="%d" y="%.1f" width="%.1f" height="%d" fill="%s"/>`+"\n", left, float64(y)+3, x(b.p50)-left, rowH-6, col)
			p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5"/>`+"\n", x(b.p50), cy, x(b.p99), cy, col)
			p(`<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x(b.p99), cy, col)
			p(`<text x="%.1f" y="%.1f" dominant-baseline="middle" font-size="10" fill="#444">%s / %s</text>`+"\n", x(b.p99)+6, cy, durLabel(b.p50), durLabel(b.p99))
		}
		y += rowH
	}
	p(`<text x="%d" y="%d" text-anchor="middle" fill="#333">latency (p50 / p99)</text>`+"\n", left+int(plotW/2), height-6)
	p("</svg>\n")
	return s.String()
}

func durLabel(ns float64) string {
	switch {
	case ns >= 1e9:
		return strings.TrimSuffix(fmt.Sprintf("%.3g", ns/1e9), ".0") + " s"
	case ns >= 1e6:
		return fmt.Sprintf("%.3g ms", ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%.3g µs", ns/1e3)
	default:
		return fmt.Sprintf("%.3g ns", ns)
	}
}
