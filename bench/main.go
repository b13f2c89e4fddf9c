// Command bench compares syncbridge with a hand-written floor, NATS,
// Watermill, franz-go and kafka-go on request/reply latency and throughput,
// measures how its memory and latency scale with requests in flight, and
// writes BENCHMARKS.md with a latency chart.
//
// Usage, from bench/:
//
//	go run . -short                          # under two minutes
//	go run . -out ../BENCHMARKS.md -svg latency.svg
//	KAFKA_BROKERS=127.0.0.1:9092 go run . …  # Kafka on a real broker too
//
// The same contenders run as testing.B benchmarks (bench_test.go):
//
//	go test -run '^$' -bench . -count 6 | go tool benchstat -
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// config is what the flags select.
type config struct {
	short     bool
	rounds    int
	memDur    time.Duration // one in-process run
	kafkaDur  time.Duration // one Kafka run
	warmOps   int64         // sequential warm-up requests per contender instance
	warmDur   time.Duration // then this long with 64 callers
	probeOps  int           // sequential probe requests per scale level
	scaleReps int           // repetitions of the scale measurement
	sections  map[string]bool
	kfake     bool // run Kafka on kfake even when KAFKA_BROKERS is set
	filter    *regexp.Regexp
	out, svg  string
}

func main() {
	var (
		c        config
		sections string
	)
	flag.BoolVar(&c.short, "short", false, "quick run: 3 rounds, short runs (under two minutes)")
	flag.IntVar(&c.rounds, "rounds", 0, "shuffled rounds per contender and load (default 6, or 3 with -short)")
	flag.DurationVar(&c.memDur, "memdur", 0, "length of one in-process run (default 2s, or 500ms with -short)")
	flag.DurationVar(&c.kafkaDur, "kafkadur", 0, "length of one Kafka run (default 3s, or 700ms with -short)")
	flag.StringVar(&sections, "only", "memory,kafka,bridges,scale", "comma-separated sections to run: memory, kafka, bridges (many Bridges on one reply topic), scale")
	flag.BoolVar(&c.kfake, "kfake", true, "with KAFKA_BROKERS set, also run the Kafka section on kfake")
	filter := flag.String("contenders", "", "run only the contenders whose names match this regular expression")
	flag.StringVar(&c.out, "out", "", "write the Markdown report to this file (it is always printed)")
	flag.StringVar(&c.svg, "svg", "", "write the latency chart to this SVG file (linked from -out relative to it)")
	save := flag.String("save", "", "also save the results as JSON to this file")
	render := flag.String("render", "", "run nothing: render the report from results saved with -save")
	flag.Parse()
	if *filter != "" {
		re, err := regexp.Compile(*filter)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: -contenders:", err)
			os.Exit(2)
		}
		c.filter = re
	}
	c.sections = map[string]bool{}
	for _, s := range strings.Split(sections, ",") {
		c.sections[strings.TrimSpace(s)] = true
	}
	def := func(v *time.Duration, full, short time.Duration) {
		if *v == 0 {
			*v = full
			if c.short {
				*v = short
			}
		}
	}
	def(&c.memDur, 2*time.Second, 500*time.Millisecond)
	def(&c.kafkaDur, 3*time.Second, 700*time.Millisecond)
	if c.rounds == 0 {
		c.rounds = 6
		if c.short {
			c.rounds = 3
		}
	}
	c.probeOps, c.scaleReps, c.warmOps, c.warmDur = 20000, 3, 200, 300*time.Millisecond
	if c.short {
		c.probeOps, c.scaleReps, c.warmOps, c.warmDur = 5000, 1, 100, 150*time.Millisecond
	}
	cmd := "cd bench && "
	if kb := os.Getenv("KAFKA_BROKERS"); kb != "" {
		cmd += "KAFKA_BROKERS=" + kb + " "
	}
	cmd += "go run ." + argString(os.Args[1:])
	var (
		res *results
		err error
	)
	if *render != "" {
		res, err = loadResults(*render, &c)
	} else {
		res, err = runAll(c, cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if *save != "" {
		if err := res.save(*save, c); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
	md := res.markdown(c)
	fmt.Print(md)
	if c.svg != "" {
		if err := os.WriteFile(c.svg, []byte(res.svg()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
	if c.out != "" {
		if err := os.WriteFile(c.out, []byte(md), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
}

// pick returns the names that -contenders selects.
func (c config) pick(names []string) []string {
	if c.filter == nil {
		return names
	}
	var out []string
	for _, n := range names {
		if c.filter.MatchString(n) {
			out = append(out, n)
		}
	}
	return out
}

func argString(args []string) string {
	var b strings.Builder
	for _, a := range args {
		b.WriteByte(' ')
		b.WriteString(a)
	}
	return b.String()
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// series is one contender at one load, over the rounds.
type series struct {
	runs []run
}

// stat is a median with its spread over rounds.
type stat struct{ med, lo, hi float64 }

func (s *series) stat(f func(run) float64) stat {
	var v []float64
	for _, r := range s.runs {
		v = append(v, f(r))
	}
	return summarize(v)
}

func summarize(v []float64) stat {
	if len(v) == 0 {
		return stat{}
	}
	v = append([]float64(nil), v...)
	sortFloats(v)
	m := v[len(v)/2]
	if len(v)%2 == 0 {
		m = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return stat{med: m, lo: v[0], hi: v[len(v)-1]}
}

func (s *series) errs() int64 {
	var n int64
	for _, r := range s.runs {
		n += r.errs
	}
	return n
}

func (s *series) firstErr() error {
	for _, r := range s.runs {
		if r.firstErr != nil {
			return r.firstErr
		}
	}
	return nil
}

// section is a set of contenders measured at two loads in shuffled rounds.
type section struct {
	kind   string // "in-process" or "Kafka", for the log
	title  string
	broker string // Kafka sections: what the broker was
	names  []string
	desc   map[string]string
	levels []string // "seq", then the concurrent level
	runs   map[string]map[string]*series
	cpu    cpuUsage
	err    error // why the section could not run
}

func (s *section) get(name, level string) *series {
	if s.runs[name] == nil {
		s.runs[name] = map[string]*series{}
	}
	if s.runs[name][level] == nil {
		s.runs[name][level] = &series{}
	}
	return s.runs[name][level]
}

// results is everything one invocation measured.
type results struct {
	m        machine
	cmd      string
	start    time.Time
	elapsed  time.Duration
	inproc   *section
	kafka    []*section
	bridges  []*section // many Bridges on one reply topic
	scale    map[int][]scaleResult
	scaleCPU cpuUsage
	scaleErr error
}

func runAll(c config, cmd string) (*results, error) {
	res := &results{m: describeMachine(), cmd: cmd, start: time.Now(), scale: map[int][]scaleResult{}}
	logf("bench: %d rounds; in-process runs of %v, Kafka runs of %v", c.rounds, c.memDur, c.kafkaDur)
	if c.sections["memory"] {
		res.inproc = runInproc(c)
	}
	if c.sections["kafka"] {
		real := os.Getenv("KAFKA_BROKERS") != ""
		if real {
			res.kafka = append(res.kafka, runKafka(c, true))
		}
		if !real || c.kfake {
			res.kafka = append(res.kafka, runKafka(c, false))
		}
	}
	if c.sections["bridges"] {
		real := os.Getenv("KAFKA_BROKERS") != ""
		if real {
			res.bridges = append(res.bridges, runBridges(c, true))
		}
		if !real || c.kfake {
			res.bridges = append(res.bridges, runBridges(c, false))
		}
	}
	if c.sections["scale"] {
		runScale(c, res)
	}
	res.elapsed = time.Since(res.start)
	logf("bench: done in %v", res.elapsed.Round(time.Second))
	return res, nil
}

// warm sends requests until n succeed in a row, or the limit passes.
func warm(r requester, n int64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		w := drive(r, load{callers: 1, maxOps: n, timeout: limit})
		if w.errs == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("warm-up: %d of %d requests failed, first: %w", w.errs, n, w.firstErr)
		}
		time.Sleep(100 * time.Millisecond) // a broker still electing leaders: back off
	}
}

// measure runs a section: in each round, every contender in a new random
// order is built afresh, warmed up, run at each load (in random order), and
// closed, so that only the contender being measured is alive (no idle
// clients of the others polling the same broker).
func measure(c config, s *section, build func(name string) (*contender, error), loadFor func(ct *contender, level string) load) {
	meter := startCPUMeter()
	defer func() { s.cpu = meter.stop() }()
	names := slices.Clone(s.names)
	levels := slices.Clone(s.levels)
	for round := range c.rounds {
		rand.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
		for _, n := range names {
			ct, err := build(n)
			for try := 1; err != nil && try < 3; try++ {
				logf("%s: %v; trying again", n, err)
				time.Sleep(time.Second)
				ct, err = build(n)
			}
			if err != nil {
				s.err = fmt.Errorf("%s: %w", n, err)
				return
			}
			s.desc[n] = ct.desc
			nWarm := c.warmOps
			if ct.maxSeq > 0 {
				nWarm = 1
			}
			if err := warm(ct.r, nWarm, time.Minute); err != nil {
				ct.close()
				s.err = fmt.Errorf("%s: %w", n, err)
				return
			}
			if ct.maxSeq == 0 {
				drive(ct.r, load{callers: 64, dur: c.warmDur})
			}
			rand.Shuffle(len(levels), func(i, j int) { levels[i], levels[j] = levels[j], levels[i] })
			for _, l := range levels {
				r := driveCounting(ct, loadFor(ct, l))
				s.get(n, l).runs = append(s.get(n, l).runs, r)
				logf("%s round %d %-16s %-6s %9.0f ns/op %8.0f req/s  p50 %-10v p99 %-10v p99.9 %-10v max %-10v mean %-10v errors %d", s.kind, round+1, n, l, r.nsPerOp(), r.perSec(), r.p50, r.p99, r.p999, r.max, r.mean, r.errs)
			}
			if err := ct.close(); err != nil {
				logf("%s: close: %v", n, err)
			}
		}
	}
}

// driveCounting is drive, recording the broker requests made meanwhile.
func driveCounting(ct *contender, l load) run {
	if ct.brokerCounts == nil {
		r := drive(ct.r, l)
		r.produces, r.fetches = -1, -1
		return r
	}
	p0, f0 := ct.brokerCounts()
	r := drive(ct.r, l)
	p1, f1 := ct.brokerCounts()
	r.produces, r.fetches = p1-p0, f1-f0
	return r
}

func runInproc(c config) *section {
	s := &section{
		kind:   "in-process",
		title:  "In-process",
		names:  c.pick(inprocNames),
		desc:   map[string]string{},
		levels: []string{"seq", "par64"},
		runs:   map[string]map[string]*series{},
	}
	measure(c, s, newInproc, func(_ *contender, level string) load {
		l := load{callers: 1, dur: c.memDur}
		if level == "par64" {
			l.callers = 64
		}
		return l
	})
	return s
}

func runKafka(c config, real bool) *section {
	return runOnBroker(c, real, &section{kind: "Kafka", names: c.pick(kafkaNames)}, "Kafka on ",
		func(e *kafkaEnv) func(string) (*contender, error) { return e.newKafka })
}

// runOnBroker measures the contenders of s (kind and names set) on kfake
// or, when real, on the broker at KAFKA_BROKERS; build gives the
// contenders' constructor on the broker, titled titlePrefix + the broker.
// Sequential runs of a contender with maxSeq are capped at maxSeq requests.
func runOnBroker(c config, real bool, s *section, titlePrefix string, build func(*kafkaEnv) func(string) (*contender, error)) *section {
	s.title = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(titlePrefix), " on"), ",") // until the broker is known
	s.desc = map[string]string{}
	s.levels = []string{"seq", "pipe64"}
	s.runs = map[string]map[string]*series{}
	saved := os.Getenv("KAFKA_BROKERS")
	if !real {
		os.Unsetenv("KAFKA_BROKERS")
		defer os.Setenv("KAFKA_BROKERS", saved)
	}
	env, err := startKafka()
	if err != nil {
		s.err = err
		return s
	}
	defer env.close()
	s.broker = env.label
	s.title = titlePrefix + env.label
	logf("%s section on %s", s.kind, env.label)
	measure(c, s, build(env), func(ct *contender, level string) load {
		l := load{callers: 1, dur: c.kafkaDur}
		if level == "pipe64" {
			l.callers = 64
		} else if ct.maxSeq > 0 {
			l.dur, l.maxOps = 0, ct.maxSeq
			if c.short {
				l.maxOps = min(3, ct.maxSeq)
			}
		}
		return l
	})
	return s
}

func runScale(c config, res *results) {
	meter := startCPUMeter()
	defer func() { res.scaleCPU = meter.stop() }()
	for rep := range c.scaleReps {
		for _, n := range scaleLevels {
			r, err := scaleOnce(n, c.probeOps)
			if err != nil {
				res.scaleErr = fmt.Errorf("%d in flight: %w", n, err)
				return
			}
			res.scale[n] = append(res.scale[n], r)
			logf("scale rep %d %6d in flight: Go %5.0f B/req  Request %5.0f B heap + %5.0f B stack  probe p50 %v p99 %v  drain %v/req",
				rep+1, n, r.heapPerGo, r.heapPerReq, r.stackPerReq, r.probe.pct(.5), r.probe.pct(.99), r.drain)
		}
	}
}
