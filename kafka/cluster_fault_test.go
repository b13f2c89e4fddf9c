package kafka_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

// Fault tests on a real three-broker cluster (scripts/kafka cluster start):
// KAFKA_BROKERS lists its brokers, KAFKA_REPLICATION=3, and
// KAFKA_CLUSTER_CTL is a command that takes "kill N" and "start-node N"
// (scripts/kafka cluster), node N being broker ID N.

// clusterCtl runs the cluster control command with args, or skips the test
// when there is none.
func clusterCtl(t *testing.T) func(args ...string) {
	ctl := os.Getenv("KAFKA_CLUSTER_CTL")
	if ctl == "" || !newEnvIsReal() {
		t.Skip("set KAFKA_CLUSTER_CTL (and KAFKA_BROKERS) to run the fault tests on a real cluster")
	}
	return func(args ...string) {
		t.Helper()
		start := time.Now()
		cmd := exec.Command("sh", "-c", ctl+" "+strings.Join(args, " "))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", ctl, args, err, out)
		}
		t.Logf("cluster %v took %v", args, time.Since(start).Round(time.Millisecond))
	}
}

// adminClient is a franz-go client for looking at the cluster.
func adminClient(t *testing.T, brokers []string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// leadersOf returns the leader of every partition of topic.
func leadersOf(t *testing.T, cl *kgo.Client, topic string) map[int32]int32 {
	t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int32]int32)
	for _, tp := range res.Topics {
		for _, p := range tp.Partitions {
			out[p.Partition] = p.Leader
		}
	}
	return out
}

// coordinatorOf returns the broker coordinating group.
func coordinatorOf(t *testing.T, cl *kgo.Client, group string) int32 {
	t.Helper()
	req := kmsg.NewPtrFindCoordinatorRequest()
	req.CoordinatorKey = group
	req.CoordinatorKeys = []string{group}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Coordinators) > 0 {
		return res.Coordinators[0].NodeID
	}
	return res.NodeID
}

// electPreferred moves every partition's leadership back to its preferred
// replica, as the broker's own leader rebalancing would after a while.
func electPreferred(t *testing.T, cl *kgo.Client) {
	t.Helper()
	req := kmsg.NewPtrElectLeadersRequest()
	req.ElectionType = 0
	req.TimeoutMillis = 20000
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := req.RequestWith(ctx, cl); err != nil {
		t.Fatal(err)
	}
}

// watchRecovery polls the metadata of topics every 100 ms from the moment
// it is called, and returns a channel that gets the time at which every
// partition of topics was first seen led by a broker other than dead, with
// dead out of its ISR: when the cluster itself has recovered from dead's
// loss (the controller fenced it, shrank the ISRs and elected new
// leaders), whatever its clients do. The channel is closed without a value
// if that is not seen before ctx ends.
func watchRecovery(ctx context.Context, cl *kgo.Client, dead int32, topics ...string) <-chan time.Time {
	out := make(chan time.Time, 1)
	go func() {
		defer close(out)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			req := kmsg.NewPtrMetadataRequest()
			for _, topic := range topics {
				rt := kmsg.NewMetadataRequestTopic()
				rt.Topic = kmsg.StringPtr(topic)
				req.Topics = append(req.Topics, rt)
			}
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			res, err := req.RequestWith(rctx, cl)
			seen := time.Now()
			cancel()
			if err == nil && recovered(res, dead, len(topics)) {
				out <- seen
				return
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// recovered says whether every partition of the n topics of res has a live
// leader (not dead) and an ISR without dead.
func recovered(res *kmsg.MetadataResponse, dead int32, n int) bool {
	if len(res.Topics) != n {
		return false
	}
	for _, tp := range res.Topics {
		if tp.ErrorCode != 0 || len(tp.Partitions) == 0 {
			return false
		}
		for _, p := range tp.Partitions {
			if p.ErrorCode != 0 || p.Leader < 0 || p.Leader == dead || slices.Contains(p.ISR, dead) {
				return false
			}
		}
	}
	return true
}

// restoreCluster waits, once the test is done, until every partition of
// every topic has all its replicas in sync and is led by its preferred
// replica (electing them once all are in sync): the state the fault tests
// start from. A broker back from a kill catches up for a while, and until
// it has, acks=all writes to the partitions it follows wait for it, which
// would count against the next test.
func restoreCluster(t *testing.T, cl *kgo.Client) {
	t.Cleanup(func() {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			res, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl) // every topic
			if err == nil {
				inSync, preferred := true, true
				for _, tp := range res.Topics {
					for _, p := range tp.Partitions {
						inSync = inSync && len(p.ISR) == len(p.Replicas)
						preferred = preferred && len(p.Replicas) > 0 && p.Leader == p.Replicas[0]
					}
				}
				if inSync && preferred {
					t.Logf("the cluster is back in its initial state (every replica in sync, preferred leaders) %v after the test", time.Since(start).Round(10*time.Millisecond))
					return
				}
				if inSync {
					electPreferred(t, cl)
				}
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				t.Errorf("the cluster did not get back to every replica in sync and preferred leaders within 2 minutes: %v", err)
				return
			}
		}
	})
}

// clReq is one request of the cluster load.
type clReq struct {
	start, end time.Time
	deadline   time.Time
	partition  int32
	err        error
	misrouted  bool
	payload    string
}

// clLoad sends requests through bridges, pinned round robin to the
// partitions of topic, until stopped, and keeps every outcome.
type clLoad struct {
	mu   sync.Mutex // protects reqs
	reqs []clReq
	stop chan struct{}
	wg   sync.WaitGroup
}

func startClLoad(bridges []*syncbridge.Bridge, topic string, parts int32, workers int, timeout time.Duration) *clLoad {
	l := &clLoad{stop: make(chan struct{})}
	var seq atomic.Int64
	for w := range workers {
		b := bridges[w%len(bridges)]
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				i := seq.Add(1)
				p := int32(i % int64(parts))
				payload := fmt.Sprintf("req-%d", i)
				r := clReq{start: time.Now(), partition: p, payload: payload}
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				r.deadline, _ = ctx.Deadline()
				reply, err := b.Request(ctx, syncbridge.Message{Topic: topic, Partition: p, UsePartition: true, Value: []byte(payload)})
				cancel()
				r.end, r.err = time.Now(), err
				if err == nil && string(reply.Value) != payload {
					r.misrouted = true
				}
				l.mu.Lock()
				l.reqs = append(l.reqs, r)
				l.mu.Unlock()
			}
		})
	}
	return l
}

func (l *clLoad) halt() []clReq {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	sort.Slice(l.reqs, func(i, j int) bool { return l.reqs[i].start.Before(l.reqs[j].start) })
	return l.reqs
}

// TestClusterLeaderKill kills, with SIGKILL and under load, the broker that
// leads the most request and reply partitions (the responders' group
// coordinator if it is among the leaders with the most), brings it back,
// and moves leadership back to it. It prints the figures of issue 9: how
// many requests failed and when, whether live leaders kept serving, and
// what the return of the broker cost.
func TestClusterLeaderKill(t *testing.T) {
	ctl := clusterCtl(t)
	e := newEnv(t)
	const parts = 6
	requests, replies := e.topic(t, parts), e.topic(t, parts)
	group := "leaderkill-" + requests
	ctx := testCtx(t, 10*time.Minute)
	admin := adminClient(t, e.brokers)
	restoreCluster(t, admin)

	var (
		hmu     sync.Mutex // protects handled
		handled = make(map[string][]handling)
	)
	trace := newClTrace()
	topts := clTransportOpts(t)
	for i := range 2 {
		handler := func(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
			hmu.Lock()
			handled[string(req.Value)] = append(handled[string(req.Value)], handling{at: time.Now(), responder: i, partition: req.Partition, offset: req.Offset})
			hmu.Unlock()
			return syncbridge.Message{Value: req.Value}, nil
		}
		r, err := syncbridge.NewResponder(ctx, e.transport(t, topts...), requests, handler, syncbridge.WithGroup(group), syncbridge.WithConcurrentHandlers(), syncbridge.WithHooks(trace))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
	}
	var bridges []*syncbridge.Bridge
	for range 2 {
		b, err := syncbridge.New(ctx, e.transport(t, topts...), syncbridge.WithReplyTopic(replies), syncbridge.WithHooks(trace))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		bridges = append(bridges, b)
	}
	// Every partition answers before the fault.
	for p := range int32(parts) {
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		_, err := bridges[0].Request(rctx, syncbridge.Message{Topic: requests, Partition: p, UsePartition: true, Value: fmt.Appendf(nil, "warm-%d", p)})
		cancel()
		if err != nil {
			t.Fatalf("warm-up on partition %d: %v", p, err)
		}
	}

	reqLeaders, repLeaders := leadersOf(t, admin, requests), leadersOf(t, admin, replies)
	coord := coordinatorOf(t, admin, group)
	lead := make(map[int32]int)
	for _, l := range reqLeaders {
		lead[l]++
	}
	for _, l := range repLeaders {
		lead[l]++
	}
	victim := int32(-1)
	for b, n := range lead {
		if victim < 0 || n > lead[victim] || (n == lead[victim] && b == coord) {
			victim = b
		}
	}
	var liveParts []int32
	for p, l := range reqLeaders {
		if l != victim {
			liveParts = append(liveParts, p)
		}
	}
	slices.Sort(liveParts)
	t.Logf("victim: broker %d leads %d of %d request and reply partitions; group coordinator: broker %d; request partitions led by others: %v",
		victim, lead[victim], 2*parts, coord, liveParts)

	const timeout = 2 * time.Second
	load := startClLoad(bridges, requests, parts, 16, timeout)
	phase := func(d time.Duration) {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	phase(3 * time.Second)
	kill := time.Now()
	ctl("kill", fmt.Sprint(victim))
	t.Logf("killed broker %d at %s", victim, kill.Format("15:04:05.000"))
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	clusterBack := watchRecovery(wctx, admin, victim, requests, replies)
	phase(20 * time.Second)
	recoveredAt, clusterRecovered := <-clusterBack
	wcancel()
	restart := time.Now()
	ctl("start-node", fmt.Sprint(victim))
	answered := time.Now()
	electPreferred(t, admin)
	elected := time.Now()
	phase(10 * time.Second)
	reqs := load.halt()

	var (
		n, failed, misrouted, overdue      int
		firstFail, lastFail                time.Duration = -1, -1
		after5s, liveFailed, restartFailed int
		afterRecovery                      int
		worstLate                          time.Duration
	)
	live := make(map[int32]bool)
	for _, p := range liveParts {
		live[p] = true
	}
	for _, r := range reqs {
		n++
		if r.misrouted {
			misrouted++
			continue
		}
		if late := r.end.Sub(r.deadline); late > worstLate {
			worstLate = late
		}
		if r.end.After(r.deadline.Add(time.Second)) {
			overdue++
		}
		if r.err == nil {
			continue
		}
		failed++
		if r.start.Before(kill.Add(-timeout)) {
			t.Errorf("a request failed before the kill: %v", r.err)
			continue
		}
		if r.start.Before(restart) {
			if d := r.end.Sub(kill); firstFail < 0 || d < firstFail {
				firstFail = d
			}
			if d := r.start.Sub(kill); d > lastFail {
				lastFail = d
			}
			if !r.start.Before(kill.Add(5 * time.Second)) {
				after5s++
			}
			if clusterRecovered && !r.start.Before(recoveredAt.Add(time.Second)) {
				afterRecovery++
			}
			if live[r.partition] {
				liveFailed++
			}
		} else {
			restartFailed++
		}
	}
	byPart := make(map[int32][]string)
	hmu.Lock()
	for _, r := range reqs {
		if r.err != nil && !r.misrouted {
			mark := ""
			if len(handled[r.payload]) > 0 {
				mark = "h" // the Responder handled it: its reply was lost or late
			}
			byPart[r.partition] = append(byPart[r.partition], fmt.Sprintf("%+.2fs%s", r.start.Sub(kill).Seconds(), mark))
			if clVerbose() {
				t.Logf("failed %s p%d: started %+.3fs, %s; %v", r.payload, r.partition, r.start.Sub(kill).Seconds(), trace.describe(r.payload, kill, handled[r.payload]), r.err)
			}
		}
	}
	hmu.Unlock()
	for p := range int32(parts) {
		if len(byPart[p]) > 0 {
			t.Logf("partition %d (leader %d): %d failed, started at %v after the kill (h: handled by a Responder)", p, reqLeaders[p], len(byPart[p]), byPart[p])
		}
	}
	hmu.Lock()
	dups := 0
	for payload, hs := range handled {
		if len(hs) > 1 {
			dups++
			// Where each copy came from: the same partition and offset is a
			// redelivery, two offsets a request written twice.
			t.Logf("handled twice: %s: %s", payload, trace.describe(payload, kill, hs))
		}
	}
	hmu.Unlock()
	t.Logf("%d requests (timeout %v) over %v: %d failed, %d misrouted, %d ended later than deadline + 1s (latest: deadline %+v)",
		n, timeout, reqs[len(reqs)-1].end.Sub(reqs[0].start).Round(time.Second), failed, misrouted, overdue, worstLate.Round(time.Millisecond))
	if firstFail >= 0 {
		t.Logf("after the kill: failures from +%v to +%v (requests started then); %d failed of those started 5 s or more after the kill (must be 0); %d failed on request partitions led by live brokers %v",
			firstFail.Round(10*time.Millisecond), lastFail.Round(10*time.Millisecond), after5s, liveFailed, liveParts)
	} else {
		t.Logf("after the kill: no request failed")
	}
	// How long each partition went without a reply after the kill: the
	// longest gap between two successful requests' ends.
	for p := range int32(parts) {
		var last, gapFrom, gapTo time.Time
		for _, r := range reqs {
			if r.partition != p || r.err != nil || r.misrouted || r.end.Before(kill.Add(-time.Second)) || r.end.After(restart) {
				continue
			}
			if !last.IsZero() && r.end.Sub(last) > gapTo.Sub(gapFrom) {
				gapFrom, gapTo = last, r.end
			}
			if r.end.After(last) {
				last = r.end
			}
		}
		kind := "live leader"
		if !live[p] {
			kind = "the killed broker"
		}
		t.Logf("partition %d (led by %s): no reply from %+.2fs to %+.2fs after the kill (%.2fs)", p, kind, gapFrom.Sub(kill).Seconds(), gapTo.Sub(kill).Seconds(), gapTo.Sub(gapFrom).Seconds())
	}
	t.Logf("the broker's return (answering %v after the restart began) and leadership moving back (election took %v): %d failed (target 0); requests handled twice: %d (target 0)",
		answered.Sub(restart).Round(time.Millisecond), elected.Sub(answered).Round(time.Millisecond), restartFailed, dups)
	trace.mu.Lock()
	dupReplies := slices.Clone(trace.dupReplies)
	trace.mu.Unlock()
	for _, payload := range dupReplies {
		hmu.Lock()
		hs := handled[payload]
		hmu.Unlock()
		t.Logf("reply received twice: %s: %s", payload, trace.describe(payload, kill, hs))
	}
	for i, b := range bridges {
		t.Logf("bridge %d: %+v", i, b.Stats())
	}
	if misrouted != 0 || overdue != 0 {
		t.Errorf("%d misrouted and %d requests later than deadline + 1s, want 0 and 0", misrouted, overdue)
	}
	// Until the controller fences the dead broker (broker.session.timeout.ms,
	// 4 s in scripts/kafka), it stays leader of its partitions and in every
	// ISR: no partition's high watermark moves, so no request can be read
	// by a Responder, on any partition, whatever the client (and acks=all
	// produce requests wait too). Once the cluster has recovered (new
	// leaders, the dead broker out of every ISR), the client finds the new
	// leaders (the metadata is looked up every RetryBackoff while a leader
	// is down) and every request started 1 s or more after that succeeds.
	if !clusterRecovered {
		t.Fatalf("the cluster did not recover within 20 s of the kill: every partition of %s and %s led by a live broker, broker %d out of every ISR", requests, replies, victim)
	}
	t.Logf("the cluster recovered (new leaders, broker %d out of every ISR) %v after the kill; requests started 1 s or more after that: %d failed (target 0)",
		victim, recoveredAt.Sub(kill).Round(10*time.Millisecond), afterRecovery)
	if afterRecovery != 0 {
		t.Errorf("%d requests started 1 s or more after the cluster recovered (+%v) failed, want 0", afterRecovery, recoveredAt.Sub(kill).Round(10*time.Millisecond))
	}
	// Issue 9's target, every request started 5 s or more after the kill,
	// holds wherever the cluster itself recovers within 4 s (scripts/kafka's
	// fresh cluster: 4 s session timeout). On a slower cluster (hundreds of
	// partitions on two cores, or the killed node also the active KRaft
	// controller: 6.7-7.9 s measured) the line above is the client's part.
	if recoveredAt.Sub(kill) <= 4*time.Second && after5s != 0 {
		t.Errorf("%d requests started 5 s or more after the kill failed, want 0 (the cluster recovered at +%v)", after5s, recoveredAt.Sub(kill).Round(10*time.Millisecond))
	}
	// The idempotent producer writes no request or reply twice, and no
	// Responder handles a request twice across the kill, the return and the
	// leadership moving back.
	if dups != 0 || len(dupReplies) != 0 {
		t.Errorf("%d requests handled twice and %d replies received twice, want 0 and 0", dups, len(dupReplies))
	}
}

// handling is one handler call for a request of the cluster load.
type handling struct {
	at        time.Time
	responder int
	partition int32
	offset    int64
}

// clVerbose says whether the cluster fault tests describe every failed
// request (KAFKA_FAULT_VERBOSE=1).
func clVerbose() bool { return os.Getenv("KAFKA_FAULT_VERBOSE") == "1" }

// clTransportOpts returns the options of the cluster tests' Transports: a
// debug log to the file KAFKA_FAULT_LOG names, if any.
func clTransportOpts(t *testing.T) []kafka.Option {
	path := os.Getenv("KAFKA_FAULT_LOG")
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return []kafka.Option{kafka.Logger(slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug - 4})))}
}

// clTrace keeps, per request payload, what the hooks of the Bridges and
// Responders saw of it.
type clTrace struct {
	mu         sync.Mutex // protects evs, dupReplies
	evs        map[string][]clEvent
	dupReplies []string // payloads whose reply a Bridge got twice
}

type clEvent struct {
	at   time.Time
	what string
}

func newClTrace() *clTrace { return &clTrace{evs: make(map[string][]clEvent)} }

func (c *clTrace) add(payload, what string) {
	c.mu.Lock()
	c.evs[payload] = append(c.evs[payload], clEvent{time.Now(), what})
	c.mu.Unlock()
}

// OnRequestEnd notes when the transport answered the request's publish,
// and how the request ended.
func (c *clTrace) OnRequestEnd(info *syncbridge.RequestInfo) {
	if info.Message == nil {
		return
	}
	payload := string(info.Message.Value)
	c.mu.Lock()
	// PublishDuration ends with the transport's answer: an acknowledgement,
	// or an error (at the deadline for a request still being sent).
	if info.PublishDuration > 0 {
		c.evs[payload] = append(c.evs[payload], clEvent{info.Start.Add(info.PublishDuration), "publish answered"})
	} else {
		c.evs[payload] = append(c.evs[payload], clEvent{time.Now(), "publish not answered"})
	}
	c.evs[payload] = append(c.evs[payload], clEvent{time.Now(), "request " + info.Outcome.String()})
	c.mu.Unlock()
}

// OnHandleEnd notes the reply's publishing.
func (c *clTrace) OnHandleEnd(info *syncbridge.HandleInfo) {
	c.add(string(info.Request.Value), fmt.Sprintf("handled from p%d@%d, reply published (err %v)", info.Request.Partition, info.Request.Offset, info.ReplyErr))
}

// OnDroppedReply notes replies the Bridges dropped.
func (c *clTrace) OnDroppedReply(reason syncbridge.DropReason, msg *syncbridge.Message) {
	if reason == syncbridge.DropForeign {
		return
	}
	if reason == syncbridge.DropDuplicate {
		c.mu.Lock()
		c.dupReplies = append(c.dupReplies, string(msg.Value))
		c.mu.Unlock()
	}
	c.add(string(msg.Value), fmt.Sprintf("reply dropped (%v) from reply p%d@%d", reason, msg.Partition, msg.Offset))
}

// describe says what happened to payload, times relative to t0.
func (c *clTrace) describe(payload string, t0 time.Time, hs []handling) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	evs := slices.Clone(c.evs[payload])
	for _, h := range hs {
		evs = append(evs, clEvent{h.at, fmt.Sprintf("handled by responder %d from p%d@%d", h.responder, h.partition, h.offset)})
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].at.Before(evs[j].at) })
	parts := make([]string, len(evs))
	for i, e := range evs {
		parts[i] = fmt.Sprintf("%+.3fs %s", e.at.Sub(t0).Seconds(), e.what)
	}
	return strings.Join(parts, "; ")
}
