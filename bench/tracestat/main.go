// Command tracestat summarises a Go execution trace of the in-process
// benchmarks: how long goroutines waited to run once runnable (scheduling
// delay), by role (caller, worker, floor responder) and by who made them
// runnable; how long each caller's request cycles took (from one reply to
// the next: one request each, in a closed loop); the GC mark phases; and
// the gaps in which a thread of the process ran a goroutine without
// emitting any event for over 200 µs — the OS had descheduled it — and how
// many slow request cycles those gaps and GC phases explain.
//
//	cd bench
//	go test -run '^$' -bench 'Memory/syncbridge/par64' -benchtime 300000x -trace /tmp/t.trace
//	go run ./tracestat /tmp/t.trace
//
// It reads the trace format of Go 1.22 and later (golang.org/x/exp/trace).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/exp/trace"
)

// role names what a goroutine is, from the functions on its stacks.
func role(s trace.Stack) string {
	for f := range s.Frames() {
		switch fn := f.Func; {
		case strings.Contains(fn, "bench.drive.func"):
			return "caller"
		case strings.Contains(fn, "(*group).run"):
			return "worker"
		case strings.Contains(fn, "floor.New.func"):
			return "floor responder"
		case strings.Contains(fn, "runtime.gcBgMarkWorker"):
			return "gc"
		}
	}
	return ""
}

type gstate struct {
	role          string
	runnableSince trace.Time
	wokenBy       string
}

type interval struct{ a, b trace.Time }

func (i interval) len() time.Duration { return time.Duration(i.b - i.a) }

type dist []time.Duration

func (d dist) String() string {
	if len(d) == 0 {
		return "none"
	}
	slices.Sort(d)
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	q := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	return fmt.Sprintf("n=%d total=%v mean=%v p50=%v p99=%v p99.9=%v max=%v",
		len(d), sum.Round(time.Microsecond), sum/time.Duration(len(d)), q(.5), q(.99), q(.999), d[len(d)-1])
}

func main() {
	slow := flag.Duration("slow", 0, "a request cycle at least this long is slow (default: 5 × the mean cycle)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: tracestat [-slow d] trace-file")
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	r, err := trace.NewReader(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var (
		gs          = map[trace.GoID]*gstate{}
		delay       = map[string]dist{}
		threadLast  = map[trace.ThreadID]trace.Time{}
		threadGo    = map[trace.ThreadID]trace.GoID{}
		gaps, marks []interval
		markStart   trace.Time
		cycleStart  = map[trace.GoID]trace.Time{}
		cycles      []interval
		first, last trace.Time
	)
	get := func(id trace.GoID) *gstate {
		g := gs[id]
		if g == nil {
			g = &gstate{}
			gs[id] = g
		}
		return g
	}
	for {
		ev, err := r.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if first == 0 {
			first = ev.Time()
		}
		last = ev.Time()
		th := ev.Thread()
		if th != trace.NoThread {
			if id := threadGo[th]; id != 0 && threadLast[th] != 0 && get(id).role != "gc" {
				if ev.Time()-threadLast[th] > trace.Time(200*time.Microsecond) {
					gaps = append(gaps, interval{threadLast[th], ev.Time()})
				}
			}
			threadLast[th] = ev.Time()
		}
		switch ev.Kind() {
		case trace.EventRangeBegin:
			if ev.Range().Name == "GC concurrent mark phase" {
				markStart = ev.Time()
			}
		case trace.EventRangeEnd:
			if ev.Range().Name == "GC concurrent mark phase" && markStart != 0 {
				marks = append(marks, interval{markStart, ev.Time()})
				markStart = 0
			}
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			id := st.Resource.Goroutine()
			from, to := st.Goroutine()
			g := get(id)
			if g.role == "" {
				g.role = role(st.Stack)
			}
			if g.role == "" {
				g.role = role(ev.Stack())
			}
			if th != trace.NoThread {
				if to == trace.GoRunning {
					threadGo[th] = id
				} else if from == trace.GoRunning && threadGo[th] == id {
					threadGo[th] = 0
				}
			}
			switch {
			case to == trace.GoRunnable && from != trace.GoRunnable:
				g.runnableSince = ev.Time()
				switch w := ev.Goroutine(); {
				case from == trace.GoRunning:
					g.wokenBy = "itself (yield or preemption)"
				case w == trace.NoGoroutine:
					g.wokenBy = "the runtime"
				default:
					g.wokenBy = get(w).role
					if g.wokenBy == "" {
						g.wokenBy = "another goroutine"
					}
				}
				if g.role == "caller" && (g.wokenBy == "worker" || g.wokenBy == "floor responder") {
					if s, ok := cycleStart[id]; ok {
						cycles = append(cycles, interval{s, ev.Time()})
					}
					cycleStart[id] = ev.Time()
				}
			case to == trace.GoRunning && g.runnableSince != 0:
				r := g.role
				if r == "" {
					r = "other"
				}
				k := r + " made runnable by " + g.wokenBy
				delay[k] = append(delay[k], time.Duration(ev.Time()-g.runnableSince))
				g.runnableSince = 0
			}
		}
	}
	span := time.Duration(last - first)
	var markTime time.Duration
	for _, m := range marks {
		markTime += m.len()
	}
	fmt.Printf("trace: %v; %d GC mark phases, %v in all\n", span.Round(time.Millisecond), len(marks), markTime.Round(time.Microsecond))
	var total time.Duration
	keys := make([]string, 0, len(delay))
	for k, d := range delay {
		keys = append(keys, k)
		for _, x := range d {
			total += x
		}
	}
	slices.Sort(keys)
	fmt.Println("\nscheduling delay (runnable → running):")
	for _, k := range keys {
		d := delay[k]
		if len(d) < 20 {
			continue
		}
		var s time.Duration
		for _, x := range d {
			s += x
		}
		fmt.Printf("  %-55s %5.1f %% of all delay\n      %v\n", k, 100*float64(s)/float64(total), d)
	}
	var gd dist
	for _, g := range gaps {
		gd = append(gd, g.len())
	}
	fmt.Printf("\nthread gaps (a goroutine running, no event for > 200 µs: the thread was descheduled): %v\n", gd)
	var cd dist
	for _, c := range cycles {
		cd = append(cd, c.len())
	}
	fmt.Printf("\ncaller request cycles (reply to reply): %v\n", cd)
	if len(cd) == 0 {
		return
	}
	var sum time.Duration
	for _, x := range cd {
		sum += x
	}
	lim := *slow
	if lim == 0 {
		lim = 5 * sum / time.Duration(len(cd))
	}
	overlaps := func(c interval, ivs []interval) bool {
		for _, g := range ivs {
			if g.a < c.b && g.b > c.a {
				return true
			}
		}
		return false
	}
	n, inMark, inGap, inBoth := 0, 0, 0, 0
	for _, c := range cycles {
		if c.len() < lim {
			continue
		}
		n++
		m, g := overlaps(c, marks), overlaps(c, gaps)
		switch {
		case m && g:
			inBoth++
		case m:
			inMark++
		case g:
			inGap++
		}
	}
	fmt.Printf("cycles ≥ %v: %d (%.2f %%); overlapping a GC mark phase only %d, a thread gap only %d, both %d, neither %d\n",
		lim.Round(time.Microsecond), n, 100*float64(n)/float64(len(cycles)), inMark, inGap, inBoth, n-inMark-inGap-inBoth)
}
