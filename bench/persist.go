package main

import (
	"encoding/json"
	"errors"
	"os"
	"time"
)

// The results of a run can be saved (-save) and rendered again later
// (-render), so that BENCHMARKS.md can be regenerated, with new notes, from
// the very numbers it reports.

type jRun struct {
	Ops, Errs    int64
	Elapsed, CPU time.Duration
	P50, P99     time.Duration
	// P999, Max and Mean are zero in results saved before every request
	// was timed.
	P999, Max, Mean   time.Duration `json:",omitempty"`
	Err               string        `json:",omitempty"`
	Produces, Fetches int64
	// Mallocs is absent from results saved before it was counted.
	Mallocs *int64 `json:",omitempty"`
}

type jCPU struct {
	Wall             time.Duration
	SelfCores, Other float64
	LoadFrom, LoadTo string
}

type jSection struct {
	Kind, Title, Broker string
	Names, Levels       []string
	Desc                map[string]string
	Runs                map[string]map[string][]jRun
	CPU                 jCPU
	Err                 string `json:",omitempty"`
}

type jScale struct {
	N                                  int
	HeapPerGo, HeapPerReq, StackPerReq float64
	Probe                              jRun
	Drain                              time.Duration
}

type jConfig struct {
	Short                     bool
	Rounds                    int
	MemDur, KafkaDur, WarmDur time.Duration
	WarmOps                   int64
	ProbeOps, ScaleReps       int
	Sections                  map[string]bool
}

type jResults struct {
	Config   jConfig
	Machine  jMachine
	Cmd      string
	Start    time.Time
	Elapsed  time.Duration
	Inproc   *jSection `json:",omitempty"`
	Kafka    []*jSection
	Bridges  []*jSection `json:",omitempty"`
	Scale    map[int][]jScale
	ScaleCPU jCPU
	ScaleErr string `json:",omitempty"`
}

type jMachine struct {
	GoVersion, OSArch, CPU, Commit string
	NumCPU, GOMAXPROCS             int
	Peers                          [][2]string
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func stringErr(s string) error {
	if s == "" {
		return nil
	}
	return errors.New(s)
}

func toJRun(r run) jRun {
	return jRun{Ops: r.ops, Errs: r.errs, Elapsed: r.elapsed, CPU: r.cpu, P50: r.p50, P99: r.p99, P999: r.p999, Max: r.max, Mean: r.mean,
		Err: errString(r.firstErr), Produces: r.produces, Fetches: r.fetches, Mallocs: &r.mallocs}
}

func fromJRun(j jRun) run {
	mallocs := int64(-1)
	if j.Mallocs != nil {
		mallocs = *j.Mallocs
	}
	return run{mallocs: mallocs, ops: j.Ops, errs: j.Errs, elapsed: j.Elapsed, cpu: j.CPU, p50: j.P50, p99: j.P99, p999: j.P999, max: j.Max, mean: j.Mean, firstErr: stringErr(j.Err), produces: j.Produces, fetches: j.Fetches}
}

func toJCPU(u cpuUsage) jCPU {
	return jCPU{u.wall, u.selfCores, u.otherCores, u.loadAvgFrom, u.loadAvgTo}
}

func fromJCPU(j jCPU) cpuUsage {
	return cpuUsage{wall: j.Wall, selfCores: j.SelfCores, otherCores: j.Other, loadAvgFrom: j.LoadFrom, loadAvgTo: j.LoadTo}
}

func toJSection(s *section) *jSection {
	if s == nil {
		return nil
	}
	j := &jSection{Kind: s.kind, Title: s.title, Broker: s.broker, Names: s.names, Levels: s.levels, Desc: s.desc,
		Runs: map[string]map[string][]jRun{}, CPU: toJCPU(s.cpu), Err: errString(s.err)}
	for n, ls := range s.runs {
		j.Runs[n] = map[string][]jRun{}
		for l, ser := range ls {
			for _, r := range ser.runs {
				j.Runs[n][l] = append(j.Runs[n][l], toJRun(r))
			}
		}
	}
	return j
}

func fromJSection(j *jSection) *section {
	if j == nil {
		return nil
	}
	s := &section{kind: j.Kind, title: j.Title, broker: j.Broker, names: j.Names, levels: j.Levels, desc: j.Desc,
		runs: map[string]map[string]*series{}, cpu: fromJCPU(j.CPU), err: stringErr(j.Err)}
	for n, ls := range j.Runs {
		for l, rs := range ls {
			for _, r := range rs {
				ser := s.get(n, l)
				ser.runs = append(ser.runs, fromJRun(r))
			}
		}
	}
	return s
}

func (res *results) save(path string, c config) error {
	j := jResults{
		Config:  jConfig{c.short, c.rounds, c.memDur, c.kafkaDur, c.warmDur, c.warmOps, c.probeOps, c.scaleReps, c.sections},
		Machine: jMachine{res.m.goVersion, res.m.osArch, res.m.cpu, res.m.commit, res.m.numCPU, res.m.gomaxprocs, res.m.peers},
		Cmd:     res.cmd, Start: res.start, Elapsed: res.elapsed,
		Inproc:   toJSection(res.inproc),
		Scale:    map[int][]jScale{},
		ScaleCPU: toJCPU(res.scaleCPU), ScaleErr: errString(res.scaleErr),
	}
	for _, k := range res.kafka {
		j.Kafka = append(j.Kafka, toJSection(k))
	}
	for _, k := range res.bridges {
		j.Bridges = append(j.Bridges, toJSection(k))
	}
	for n, rs := range res.scale {
		for _, r := range rs {
			j.Scale[n] = append(j.Scale[n], jScale{r.n, r.heapPerGo, r.heapPerReq, r.stackPerReq, toJRun(r.probe), r.drain})
		}
	}
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// loadResults reads saved results, and the configuration they were measured with
// into c (keeping c's output paths).
func loadResults(path string, c *config) (*results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var j jResults
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, err
	}
	cf := j.Config
	c.short, c.rounds, c.memDur, c.kafkaDur, c.warmDur, c.warmOps, c.probeOps, c.scaleReps, c.sections =
		cf.Short, cf.Rounds, cf.MemDur, cf.KafkaDur, cf.WarmDur, cf.WarmOps, cf.ProbeOps, cf.ScaleReps, cf.Sections
	m := j.Machine
	res := &results{
		m:   machine{goVersion: m.GoVersion, osArch: m.OSArch, cpu: m.CPU, commit: m.Commit, numCPU: m.NumCPU, gomaxprocs: m.GOMAXPROCS, peers: m.Peers},
		cmd: j.Cmd, start: j.Start, elapsed: j.Elapsed,
		inproc:   fromJSection(j.Inproc),
		scale:    map[int][]scaleResult{},
		scaleCPU: fromJCPU(j.ScaleCPU), scaleErr: stringErr(j.ScaleErr),
	}
	for _, k := range j.Kafka {
		res.kafka = append(res.kafka, fromJSection(k))
	}
	for _, k := range j.Bridges {
		res.bridges = append(res.bridges, fromJSection(k))
	}
	for n, rs := range j.Scale {
		for _, r := range rs {
			res.scale[n] = append(res.scale[n], scaleResult{n: r.N, heapPerGo: r.HeapPerGo, heapPerReq: r.HeapPerReq, stackPerReq: r.StackPerReq, probe: fromJRun(r.Probe), drain: r.Drain})
		}
	}
	return res, nil
}
