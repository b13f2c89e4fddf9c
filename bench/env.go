package main

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// machine describes where the benchmark ran.
type machine struct {
	goVersion  string
	osArch     string
	cpu        string
	numCPU     int
	gomaxprocs int
	commit     string
	peers      [][2]string // module path, version
}

// peerModules are the modules whose versions the report lists.
var peerModules = []string{
	"github.com/nats-io/nats-server/v2",
	"github.com/nats-io/nats.go",
	"github.com/ThreeDotsLabs/watermill",
	"github.com/segmentio/kafka-go",
	"github.com/twmb/franz-go",
	"github.com/twmb/franz-go/pkg/kfake",
	"github.com/twmb/franz-go/pkg/kadm",
	"golang.org/x/perf",
}

func describeMachine() machine {
	m := machine{
		goVersion:  runtime.Version(),
		osArch:     runtime.GOOS + "/" + runtime.GOARCH,
		cpu:        cpuModel(),
		numCPU:     runtime.NumCPU(),
		gomaxprocs: runtime.GOMAXPROCS(0),
		commit:     gitCommit(),
	}
	deps := map[string]string{}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			v := d.Version
			if d.Replace != nil {
				v = "=> " + d.Replace.Path + " " + d.Replace.Version
			}
			deps[d.Path] = v
		}
	}
	// benchstat is a tool of this module (go.mod tool directive), not
	// linked into the binary: read its version from go.mod.
	if _, ok := deps["golang.org/x/perf"]; !ok {
		deps["golang.org/x/perf"] = goModVersion("golang.org/x/perf")
	}
	for _, p := range peerModules {
		v := deps[p]
		if v == "" {
			v = "(not linked)"
		}
		m.peers = append(m.peers, [2]string{p, v})
	}
	return m
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)BENCHMARKS.md", ":(top,exclude)bench/results.json", ":(top,exclude)bench/latency.svg").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += " (work tree has uncommitted changes)"
	}
	return c
}

func goModVersion(path string) string {
	b, err := os.ReadFile("go.mod")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == path {
			return f[1]
		}
		if len(f) >= 3 && f[0] == "require" && f[1] == path {
			return f[2]
		}
	}
	return "unknown"
}

// cpuMeter measures how busy the machine was during a phase, and how much of
// that was this process: the rest is other processes sharing the cores.
type cpuMeter struct {
	wall      time.Time
	busy      uint64 // jiffies, all CPUs
	self      time.Duration
	loadStart string
}

func startCPUMeter() cpuMeter {
	return cpuMeter{wall: time.Now(), busy: busyJiffies(), self: selfCPU(), loadStart: loadavg()}
}

// cpuUsage is what a cpuMeter saw.
type cpuUsage struct {
	wall        time.Duration
	selfCores   float64 // average cores used by this process
	otherCores  float64 // average cores used by everything else
	loadAvgFrom string
	loadAvgTo   string
}

func (c cpuMeter) stop() cpuUsage {
	wall := time.Since(c.wall)
	busy := float64(busyJiffies()-c.busy) / 100 // USER_HZ is 100 on Linux
	self := (selfCPU() - c.self).Seconds()
	u := cpuUsage{wall: wall, loadAvgFrom: c.loadStart, loadAvgTo: loadavg()}
	if wall > 0 {
		u.selfCores = self / wall.Seconds()
		u.otherCores = max(0, busy-self) / wall.Seconds()
	}
	return u
}

func busyJiffies() uint64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy uint64
	// user nice system idle iowait irq softirq steal guest guest_nice:
	// count user, nice, system, irq and softirq.
	for _, i := range []int{1, 2, 3, 6, 7} {
		if i < len(f) {
			n, _ := strconv.ParseUint(f[i], 10, 64)
			busy += n
		}
	}
	return busy
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
