package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/syncbridge/syncbridge"
	sbkafka "github.com/syncbridge/syncbridge/kafka"
)

// The bridges section (issue 11, part 3): what it costs when many Bridges
// share one reply topic. In the default routing mode every Bridge reads
// every reply and drops the ones meant for others; pinned Bridges
// (syncbridge.WithReplyPartitions) read only their own partitions.

// bridgesPartitions is the partition count of the request and reply topics
// of the bridges section: enough for 16 pinned Bridges.
const bridgesPartitions = 16

// bridgesNames are the configurations, in table order: routing mode and
// number of Bridges. default-N and pinned-N give each Bridge a Transport of
// its own, as N processes would have; shared-16 puts 16 Bridges on one
// Transport, as one process with many Bridges would.
var bridgesNames = []string{"default-1", "default-4", "default-16", "shared-16", "pinned-1", "pinned-4", "pinned-16"}

// bridgesConfig parses a bridges configuration name.
func bridgesConfig(name string) (mode string, n int, err error) {
	mode, num, ok := strings.Cut(name, "-")
	if ok {
		n, err = strconv.Atoi(num)
	}
	if !ok || err != nil || n < 1 || n > bridgesPartitions || (mode != "default" && mode != "shared" && mode != "pinned") {
		return "", 0, fmt.Errorf("unknown bridges configuration %q", name)
	}
	return mode, n, nil
}

// rrBridges spreads requests over Bridges in turn.
type rrBridges struct {
	bs    []*syncbridge.Bridge
	topic string
	next  atomic.Uint64
}

func (r *rrBridges) Request(ctx context.Context, p []byte) ([]byte, error) {
	b := r.bs[(r.next.Add(1)-1)%uint64(len(r.bs))]
	reply, err := b.Request(ctx, syncbridge.Message{Topic: r.topic, Value: p})
	if err != nil {
		return nil, err
	}
	return reply.Value, nil
}

// newBridges builds one bridges configuration on fresh topics: its Bridges
// and one syncbridge.Responder (WithConcurrentHandlers, on a Transport of
// its own), the same for every configuration.
func (e *kafkaEnv) newBridges(name string) (_ *contender, err error) {
	mode, n, err := bridgesConfig(name)
	if err != nil {
		return nil, err
	}
	req, rep, err := e.topicsN(name, bridgesPartitions)
	if err != nil {
		return nil, fmt.Errorf("topics: %w", err)
	}
	var closers []func() error
	closeAll := func() error {
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i]())
		}
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	rt, err := sbkafka.New(e.brokers)
	if err != nil {
		return nil, err
	}
	closers = append(closers, rt.Close)
	resp, err := syncbridge.NewResponder(context.Background(), rt, req, echoHandler,
		syncbridge.WithGroup(req+".responders"), syncbridge.WithConcurrentHandlers())
	if err != nil {
		return nil, err
	}
	closers = append(closers, resp.Close)
	rr := &rrBridges{topic: req}
	var shared *sbkafka.Transport
	for i := range n {
		t := shared
		if t == nil {
			if t, err = sbkafka.New(e.brokers); err != nil {
				return nil, err
			}
			closers = append(closers, t.Close)
			if mode == "shared" {
				shared = t
			}
		}
		opts := []syncbridge.Option{syncbridge.WithReplyTopic(rep)}
		if mode == "pinned" {
			var ps []int32
			for p := i; p < bridgesPartitions; p += n {
				ps = append(ps, int32(p))
			}
			opts = append(opts, syncbridge.WithReplyPartitions(ps...))
		}
		b, err := syncbridge.New(context.Background(), t, opts...)
		if err != nil {
			return nil, err
		}
		closers = append(closers, b.Close)
		rr.bs = append(rr.bs, b)
	}
	desc := map[string]string{
		"default": fmt.Sprintf("%d Bridge(s), each on its own Transport (as %d processes), default routing: each reads every reply partition", n, n),
		"shared":  fmt.Sprintf("%d Bridges on one Transport (one process), default routing: one shared reader, each record handed to every Bridge", n),
		"pinned":  fmt.Sprintf("%d Bridge(s), each on its own Transport, pinned with WithReplyPartitions to %d of the %d reply partitions", n, bridgesPartitions/n, bridgesPartitions),
	}[mode]
	c := &contender{name: name, desc: desc, r: rr, close: closeAll}
	if e.fake != nil {
		c.brokerCounts = func() (int64, int64) { return e.produces.Load(), e.fetches.Load() }
	}
	return c, nil
}

// runBridges measures the bridges configurations on kfake or the real
// broker.
func runBridges(c config, real bool) *section {
	return runOnBroker(c, real, &section{kind: "bridges", names: c.pick(bridgesNames)}, "Many Bridges on one reply topic, on ",
		func(e *kafkaEnv) func(string) (*contender, error) { return e.newBridges })
}

// bridgesTargets are the Targets rows of the bridges sections.
func (res *results) bridgesTargets() []target {
	var ts []target
	for _, s := range res.bridges {
		if s.err != nil {
			continue
		}
		area := "many Bridges, " + s.broker
		r := pairRatio(s.get("default-16", "pipe64"), s.get("default-1", "pipe64"), mCPU)
		ts = append(ts, target{area: area, what: "default routing: CPU per request with 16 Bridges (16 Transports) ÷ with 1, 64 in flight", goal: "≤ 2×", r: r, ok: r.med <= 2})
		r = pairRatio(s.get("shared-16", "pipe64"), s.get("default-1", "pipe64"), mCPU)
		ts = append(ts, target{area: area, what: "(for information) default routing, 16 Bridges on one Transport: CPU per request ÷ 1 Bridge, 64 in flight", goal: "—", r: r, ok: true})
		r = pairRatio(s.get("pinned-16", "pipe64"), s.get("pinned-1", "pipe64"), mCPU)
		ts = append(ts, target{area: area, what: "(for information) pinned: CPU per request with 16 Bridges ÷ with 1, 64 in flight", goal: "—", r: r, ok: true})
	}
	return ts
}

// bridgesMarkdown writes the bridges sections of the report.
func (res *results) bridgesMarkdown(w func(format string, args ...any)) {
	for _, s := range res.bridges {
		w("## %s: 100-byte echo, sequential and 64 in flight\n\n", s.title)
		if s.err != nil {
			w("Not measured: %v\n\n", s.err)
			continue
		}
		w("Request and reply topics have %d partitions (replication factor 1), fresh for each configuration. The requests are spread over the Bridges in turn; one syncbridge Responder (WithConcurrentHandlers, on a Transport of its own) answers them all, the same in every configuration, so what changes from row to row is the Bridges' side.\n\n", bridgesPartitions)
		counted := strings.HasPrefix(s.broker, "kfake")
		hdr := "| configuration | seq p50 µs | 64 in flight req/s | p50 µs | p99 µs | CPU µs/req, 64 in flight | CPU ÷ 1 Bridge of the same mode |"
		sep := "|---|---|---|---|---|---|---|"
		if counted {
			hdr += " produce + fetch requests per round trip |"
			sep += "---|"
		}
		w("%s errors |\n%s---|\n", hdr, sep)
		for _, n := range s.names {
			mode, _, err := bridgesConfig(n)
			if err != nil {
				continue
			}
			base := mode + "-1"
			if mode == "shared" {
				base = "default-1"
			}
			q, p := s.get(n, "seq"), s.get(n, "pipe64")
			rel := "—"
			if _, ok := s.runs[base]; ok {
				rel = fmt.Sprintf("%.2f×", pairRatio(p, s.get(base, "pipe64"), mCPU).med)
			}
			w("| %s | %s | %s | %s | %s | %s | %s |", n,
				cell(q.stat(mP50), 1e3), cell(p.stat(mPerS), 1), cell(p.stat(mP50), 1e3), cell(p.stat(mP99), 1e3),
				cell(p.stat(mCPU), 1e3), rel)
			if counted {
				w(" %s + %s |", fmtNum(p.stat(mProd).med), fmtNum(p.stat(mFetch).med))
			}
			w(" %d |\n", q.errs()+p.errs())
		}
		writeBrokerNotes(w, s, "CPU µs/req is the CPU time of the whole benchmark process per request: Bridges, Responder and, on kfake, the broker (which then also pays for every Bridge's fetches).")
	}
}
