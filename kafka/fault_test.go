package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

// Bridge-level fault tests: the broker restarts under load, a Responder of
// a group goes away under load, and replies arrive twice or too late. Each
// runs on kfake, and on the real broker at KAFKA_BROKERS.

// ftPick returns onKfake, or onReal on a real broker, whose restarts and
// rebalances are slower.
func ftPick(onKfake, onReal time.Duration) time.Duration {
	if newEnvIsReal() {
		return onReal
	}
	return onKfake
}

// ftWatch is state guarded by a mutex, whose changes wake the goroutines
// waiting for a condition on it.
type ftWatch struct {
	mu      sync.Mutex    // protects changed, and the owner's state
	changed chan struct{} // closed on the next change; nil when nobody waits
}

// update changes the state with f and wakes the waiters.
func (w *ftWatch) update(f func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f()
	if w.changed != nil {
		close(w.changed)
		w.changed = nil
	}
}

// read calls f with the state locked.
func (w *ftWatch) read(f func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f()
}

// await waits until cond, called with the state locked, holds, for at most
// d. It reports whether cond held.
func (w *ftWatch) await(cond func() bool, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		w.mu.Lock()
		if cond() {
			w.mu.Unlock()
			return true
		}
		if w.changed == nil {
			w.changed = make(chan struct{})
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return false
		}
	}
}

// ftOutcome is how one request ended.
type ftOutcome int

const (
	ftOK        ftOutcome = iota // its own reply
	ftFailed                     // ErrNoReply or ErrPublish, with context.DeadlineExceeded
	ftMisrouted                  // a reply, but not its own
	ftOther                      // any other error
)

var ftOutcomeNames = [...]string{"ok", "failed", "misrouted", "other"}

func (o ftOutcome) String() string { return ftOutcomeNames[o] }

// ftRecord is one request and how it ended.
type ftRecord struct {
	payload string
	start   time.Time
	took    time.Duration
	outcome ftOutcome
	err     error
}

func (r ftRecord) end() time.Time { return r.start.Add(r.took) }

// ftRequest sends payload to topic through b with its own deadline, and
// says how it ended.
func ftRequest(b *syncbridge.Bridge, topic, payload string, timeout time.Duration) ftRecord {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	reply, err := b.Request(ctx, syncbridge.Message{Topic: topic, Value: []byte(payload)})
	cancel()
	r := ftRecord{payload: payload, start: start, took: time.Since(start), err: err}
	switch {
	case err == nil && string(reply.Value) == payload:
		r.outcome = ftOK
	case err == nil:
		r.outcome = ftMisrouted
		r.err = fmt.Errorf("got the reply %q", reply.Value)
	case (errors.Is(err, syncbridge.ErrNoReply) || errors.Is(err, syncbridge.ErrPublish)) && errors.Is(err, context.DeadlineExceeded):
		r.outcome = ftFailed
	default:
		r.outcome = ftOther
	}
	return r
}

// ftLoad sends requests with distinct payloads from several goroutines
// through one Bridge, each with its own deadline, and records every one.
type ftLoad struct {
	b       *syncbridge.Bridge
	topic   string
	timeout time.Duration // each request's deadline
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup

	w    ftWatch
	recs []ftRecord // guarded by w.mu
}

// newFtLoad returns a load, stopped when the test ends at the latest.
func newFtLoad(t *testing.T, b *syncbridge.Bridge, topic string, timeout time.Duration) *ftLoad {
	l := &ftLoad{b: b, topic: topic, timeout: timeout, stop: make(chan struct{})}
	t.Cleanup(l.halt)
	return l
}

// start starts n goroutines, each sending one request after the other
// until halt.
func (l *ftLoad) start(n int) {
	for w := range n {
		l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				r := ftRequest(l.b, l.topic, fmt.Sprintf("caller %d request %d", w, i), l.timeout)
				l.w.update(func() { l.recs = append(l.recs, r) })
				if r.outcome == ftOther {
					return // such errors may come at once: do not spin on them
				}
			}
		})
	}
}

// halt stops the load and waits for the requests in flight to end.
func (l *ftLoad) halt() {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// await waits until n requests matching match ended, for at most d.
func (l *ftLoad) await(match func(ftRecord) bool, n int, d time.Duration) bool {
	seen, got := 0, 0
	return l.w.await(func() bool {
		for ; seen < len(l.recs); seen++ {
			if match(l.recs[seen]) {
				got++
			}
		}
		return got >= n
	}, d)
}

// records returns the requests that ended so far.
func (l *ftLoad) records() []ftRecord {
	var recs []ftRecord
	l.w.read(func() { recs = append(recs, l.recs...) })
	return recs
}

// check fails the test for every request that got another's reply, failed
// with an unexpected error, or ended later than its deadline plus grace.
// It returns the number of requests per outcome.
func (l *ftLoad) check(t *testing.T, grace time.Duration) (counts [len(ftOutcomeNames)]int) {
	t.Helper()
	reported := 0
	report := func(format string, args ...any) {
		t.Helper()
		if reported++; reported <= 10 {
			t.Errorf(format, args...)
		}
	}
	var slowest time.Duration
	for _, r := range l.records() {
		counts[r.outcome]++
		slowest = max(slowest, r.took)
		switch r.outcome {
		case ftMisrouted, ftOther:
			report("%q: %v: %v", r.payload, r.outcome, r.err)
		}
		if r.took > l.timeout+grace {
			report("%q ended %v after it started (%v, %v), past its deadline of %v plus %v", r.payload, r.took.Round(time.Millisecond), r.outcome, r.err, l.timeout, grace)
		}
	}
	if reported > 10 {
		t.Errorf("... and %d more", reported-10)
	}
	t.Logf("%d requests: %d ok, %d failed at their deadline, %d misrouted, %d other errors; slowest took %v",
		counts[ftOK]+counts[ftFailed]+counts[ftMisrouted]+counts[ftOther], counts[ftOK], counts[ftFailed], counts[ftMisrouted], counts[ftOther], slowest.Round(time.Millisecond))
	return counts
}

// ftBatch sends n requests at once through b and fails the test unless
// each gets its own reply.
func ftBatch(t *testing.T, b *syncbridge.Bridge, topic string, n int, timeout time.Duration) {
	t.Helper()
	recs := make([]ftRecord, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { recs[i] = ftRequest(b, topic, fmt.Sprintf("batch request %d", i), timeout) })
	}
	wg.Wait()
	failed := 0
	for _, r := range recs {
		if r.outcome != ftOK {
			if failed++; failed <= 5 {
				t.Errorf("%q: %v after %v: %v", r.payload, r.outcome, r.took.Round(time.Millisecond), r.err)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d requests of the batch failed", failed, n)
	}
}

// ftRestartable returns a broker that the test can stop and start again on
// the same address, keeping its data, and n topics of 4 partitions on it.
// On a real broker it runs KAFKA_STOP_CMD and KAFKA_START_CMD, and skips the
// test when they are not set.
func ftRestartable(t *testing.T, n int) (e *env, topics []string, down, up func()) {
	t.Helper()
	if newEnvIsReal() {
		stopCmd, startCmd := os.Getenv("KAFKA_STOP_CMD"), os.Getenv("KAFKA_START_CMD")
		if stopCmd == "" || startCmd == "" {
			t.Skip("set KAFKA_STOP_CMD and KAFKA_START_CMD to restart the real broker")
		}
		e = newEnv(t)
		for range n {
			topics = append(topics, e.topic(t, 4))
		}
		run := func(cmd string) error {
			if out, err := exec.Command("sh", "-c", cmd).CombinedOutput(); err != nil {
				return fmt.Errorf("%s: %w\n%s", cmd, err, out)
			}
			return nil
		}
		stopped := false
		// Leave the broker running for the tests that follow.
		t.Cleanup(func() {
			if stopped {
				if err := run(startCmd); err != nil {
					t.Error(err)
				}
			}
		})
		down = func() {
			t.Helper()
			stopped = true
			if err := run(stopCmd); err != nil {
				t.Fatal(err)
			}
		}
		up = func() {
			t.Helper()
			if err := run(startCmd); err != nil {
				t.Fatal(err)
			}
			stopped = false
		}
		return e, topics, down, up
	}
	dir, port := t.TempDir(), freePort(t)
	for i := range n {
		topics = append(topics, fmt.Sprintf("fault.%d", i))
	}
	start := func() *kfake.Cluster {
		t.Helper()
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir), kfake.SeedTopics(4, topics...))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c, running := start(), true
	// Registered before any Transport: runs after they are closed.
	t.Cleanup(func() {
		if running {
			c.Close()
		}
	})
	e = &env{brokers: []string{fmt.Sprintf("127.0.0.1:%d", port)}}
	down = func() { c.Close(); running = false }
	up = func() { c = start(); running = true }
	return e, topics, down, up
}

// The broker stops while requests are in flight and comes back: every
// request ends with its own reply or, no later than its deadline, with
// ErrNoReply or ErrPublish and context.DeadlineExceeded; once the broker is
// back, the same Bridge and Responder serve requests again.
func TestBridgeBrokerRestart(t *testing.T) {
	e, topics, down, up := ftRestartable(t, 2)
	requests, replies := topics[0], topics[1]
	var (
		timeout  = ftPick(5*time.Second, 10*time.Second) // each request's
		grace    = ftPick(time.Second, 2*time.Second)    // allowed past it
		recovery = ftPick(30*time.Second, 90*time.Second)
	)
	const callers = 8

	// The responder's process and the caller's, each with its Transport.
	resp := newResponder(t, e.transport(t), requests, "restart-"+requests)
	b := newBridge(t, e.transport(t), syncbridge.WithReplyTopic(replies))
	if r := ftRequest(b, requests, "warm-up", ftPick(30*time.Second, 60*time.Second)); r.outcome != ftOK {
		t.Fatalf("warm-up request: %v: %v", r.outcome, r.err)
	}

	l := newFtLoad(t, b, requests, timeout)
	l.start(callers)
	isOK := func(r ftRecord) bool { return r.outcome == ftOK }
	if !l.await(isOK, 100, 30*time.Second) {
		l.halt()
		l.check(t, grace)
		t.Fatal("the load did not get 100 replies in 30s with the broker up")
	}

	downAt := time.Now()
	down()
	downTook := time.Since(downAt)
	// Requests in flight when the broker stopped, and those sent while it
	// is down, end at their deadlines.
	isFailed := func(r ftRecord) bool { return r.outcome == ftFailed }
	if !l.await(isFailed, callers, 2*timeout+grace) {
		l.halt()
		l.check(t, grace)
		t.Fatalf("%d callers did not see a request fail within %v of the broker stopping", callers, 2*timeout+grace)
	}

	upAt := time.Now()
	up()
	upTook := time.Since(upAt)
	// The same Bridge gets replies again: the callers keep retrying until
	// a request sent after the broker came back succeeds.
	if !l.await(func(r ftRecord) bool { return r.outcome == ftOK && r.start.After(upAt) }, 1, recovery) {
		l.halt()
		l.check(t, grace)
		t.Fatalf("no request sent after the broker came back got its reply within %v", recovery)
	}
	l.halt()

	counts := l.check(t, grace)
	var inFlightFailed, recovered int
	firstOK := time.Duration(-1)
	for _, r := range l.records() {
		if r.start.Before(downAt) && r.end().After(downAt) && r.outcome == ftFailed {
			inFlightFailed++
		}
		if r.outcome == ftOK && r.end().After(upAt) {
			recovered++
			if d := r.end().Sub(upAt); firstOK < 0 || d < firstOK {
				firstOK = d
			}
		}
	}
	if counts[ftFailed] == 0 {
		t.Error("no request failed while the broker was down")
	}
	t.Logf("stop took %v, start %v; %d requests in flight at the stop failed; first reply %v after the start began, %d replies after it",
		downTook.Round(time.Millisecond), upTook.Round(time.Millisecond), inFlightFailed, firstOK.Round(time.Millisecond), recovered)
	// up returns once the broker answers: replies must flow again within
	// 2 s of that (the group keeps its member ID and generation).
	afterAnswer := firstOK - upTook
	t.Logf("replies flow again %v after the broker answered (target: 2s)", afterAnswer.Round(time.Millisecond))
	if e.real && afterAnswer > 2*time.Second {
		t.Errorf("replies flowed again %v after the broker answered, want 2s at most", afterAnswer.Round(time.Millisecond))
	}

	// Then a batch of requests through the same Bridge all succeed.
	ftBatch(t, b, requests, 64, ftPick(10*time.Second, 30*time.Second))
	t.Logf("bridge %+v; responder %+v", b.Stats(), resp.Stats())
}

// ftServed counts the requests each Responder of a group handled.
type ftServed struct {
	w       ftWatch
	handled map[string]int // by responder; guarded by w.mu
	killed  bool           // the victim is closing; guarded by w.mu
	taken   map[int32]bool // partitions the survivor served since killed; guarded by w.mu
}

func (s *ftServed) handler(name string) syncbridge.ReplyHandler {
	return func(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		s.w.update(func() {
			s.handled[name]++
			if s.killed && name == "survivor" {
				s.taken[req.Partition] = true
			}
		})
		return syncbridge.Message{Value: req.Value}, nil
	}
}

func (s *ftServed) count(name string) (n int) {
	s.w.read(func() { n = s.handled[name] })
	return n
}

// Two Responders of one group, each on its own Transport as two processes
// would be, serve a steady load; one goes away mid-load. The survivor takes
// its partitions over: requests in flight meanwhile get their replies or
// fail at their deadline, and every request sent after the takeover gets
// its own reply.
//
// close: the victim is closed, leaving the group: the takeover is a
// rebalance away, and no request fails (asserted). crash (kfake only): the victim's last commit and its
// LeaveGroup fail, as if its process died: the coordinator hands its
// partitions over only once its session timed out, and the survivor
// re-handles what it had not committed.
func TestResponderFailover(t *testing.T) {
	t.Run("close", func(t *testing.T) { ftFailover(t, false) })
	t.Run("crash", func(t *testing.T) { ftFailover(t, true) })
}

func ftFailover(t *testing.T, crash bool) {
	e := newEnv(t)
	if crash && e.cluster == nil {
		t.Skip("the crash is simulated with kfake faults (the victim's LeaveGroup and commits fail): kfake only")
	}
	const partitions = 4
	requests, replies := e.topic(t, partitions), e.topic(t, 4)
	group := "failover-" + requests
	var (
		timeout = ftPick(10*time.Second, 20*time.Second)
		grace   = ftPick(time.Second, 2*time.Second)
		// Bounds the takeover: a rebalance, or after a crash the session
		// timeout (kafka.DefaultSessionTimeout) and a rebalance.
		takeover = ftPick(20*time.Second, 30*time.Second)
	)
	s := &ftServed{handled: make(map[string]int), taken: make(map[int32]bool)}
	responder := func(name string) (*syncbridge.Responder, func()) {
		tr := e.transport(t, kafka.ClientID(name))
		r, err := syncbridge.NewResponder(context.Background(), tr, requests, s.handler(name), syncbridge.WithGroup(group))
		if err != nil {
			t.Fatal(err)
		}
		stop := func() { _ = r.Close(); _ = tr.Close() }
		t.Cleanup(stop)
		return r, stop
	}
	victim, kill := responder("victim")
	survivor, _ := responder("survivor")
	b := newBridge(t, e.transport(t), syncbridge.WithReplyTopic(replies))

	l := newFtLoad(t, b, requests, timeout)
	l.start(8)
	// Both Responders have partitions and have handled requests.
	if !s.w.await(func() bool { return s.handled["victim"] >= 20 && s.handled["survivor"] >= 20 }, 60*time.Second) {
		l.halt()
		l.check(t, grace)
		t.Fatalf("the responders did not both handle 20 requests in 60s: victim %d, survivor %d", s.count("victim"), s.count("survivor"))
	}

	var leaves *kfake.FaultHandle
	if crash {
		var victimID string
		info := e.cluster.GroupInfo(group)
		for _, m := range info.Members {
			if m.ClientID == "victim" {
				victimID = m.MemberID
			}
		}
		if victimID == "" {
			t.Fatalf("no member of group %s has client ID victim: %+v", group, info.Members)
		}
		leaves = e.cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.LeaveGroup}, Group: group, Resource: victimID, Count: -1})
		commits := e.cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Group: group, Count: -1, When: func(r kmsg.Request) bool {
			oc, ok := r.(*kmsg.OffsetCommitRequest)
			return ok && oc.MemberID == victimID
		}})
		defer leaves.Remove()
		defer commits.Remove()
	}
	var survivorBefore int
	s.w.update(func() { s.killed, survivorBefore = true, s.handled["survivor"] })
	killAt := time.Now()
	kill()
	closeTook := time.Since(killAt)
	victimHandled := victim.Stats().Handled
	if crash && leaves.Hits() == 0 {
		t.Error("the victim did not try to leave the group: the crash simulation missed")
	}

	// The survivor serves every partition.
	if !s.w.await(func() bool { return len(s.taken) == partitions }, takeover) {
		l.halt()
		l.check(t, grace)
		var taken int
		s.w.read(func() { taken = len(s.taken) })
		t.Fatalf("%v after the victim was closed, the survivor serves %d of %d partitions", takeover, taken, partitions)
	}
	takenAt := time.Now()
	// Steady state again: requests sent after the takeover get replies.
	const after = 200
	if !l.await(func(r ftRecord) bool { return r.outcome == ftOK && r.start.After(takenAt) }, after, 60*time.Second) {
		l.halt()
		l.check(t, grace)
		t.Fatalf("the load did not get %d replies in 60s after the takeover", after)
	}
	l.halt()

	l.check(t, grace)
	var duringTakeover, failedDuring int
	for _, r := range l.records() {
		switch {
		case r.start.After(takenAt):
			if r.outcome != ftOK {
				t.Errorf("%q, sent %v after the takeover: %v: %v", r.payload, r.start.Sub(takenAt).Round(time.Millisecond), r.outcome, r.err)
			}
		case r.end().After(killAt):
			duringTakeover++
			if r.outcome == ftFailed {
				failedDuring++
			}
		}
	}
	if !crash && failedDuring != 0 {
		// Close answers what it handled and commits it; what it had not
		// handled goes to the survivor, well within the deadline.
		t.Errorf("%d of the %d requests that overlapped the victim's Close failed at their deadline", failedDuring, duringTakeover)
	}
	if n := victim.Stats().Handled; n != victimHandled {
		t.Errorf("the victim handled %d requests after Close returned", n-victimHandled)
	}
	survivorAfter := s.count("survivor") - survivorBefore
	if survivorAfter == 0 {
		t.Error("the survivor handled no request after the victim was closed")
	}
	st := b.Stats()
	if d := st.Dropped; d.Malformed != 0 || d.Foreign != 0 || d.Unknown != 0 {
		t.Errorf("the bridge dropped replies as malformed, foreign or unknown: %+v", d)
	}
	t.Logf("victim handled %d and closed in %v; survivor took over %v after the close began and handled %d since; %d requests overlapped the takeover, %d of them failed at their deadline",
		victimHandled, closeTook.Round(time.Millisecond), takenAt.Sub(killAt).Round(time.Millisecond), survivorAfter, duringTakeover, failedDuring)
	t.Logf("bridge %+v; survivor %+v", st, survivor.Stats())
}

// ftDrop is a reply a Bridge dropped.
type ftDrop struct {
	reason syncbridge.DropReason
	id     string // its correlation ID
}

// ftDrops is a DroppedReplyHook that passes every drop on to a channel.
type ftDrops struct{ ch chan ftDrop }

func (d *ftDrops) OnDroppedReply(reason syncbridge.DropReason, msg *syncbridge.Message) {
	id, _ := msg.Header(syncbridge.DefaultHeaderNames().CorrelationID)
	select {
	case d.ch <- ftDrop{reason, string(id)}:
	default: // hooks must not block; Stats still counts it
	}
}

// next returns the next drop, failing the test after d.
func (d *ftDrops) next(t *testing.T, dur time.Duration) ftDrop {
	t.Helper()
	select {
	case got := <-d.ch:
		return got
	case <-time.After(dur):
		t.Fatalf("no reply dropped within %v", dur)
		return ftDrop{}
	}
}

// A reply delivered twice is dropped as a duplicate, and a reply that
// arrives after its caller gave up is dropped as late; both are counted.
func TestDuplicateAndLateRepliesOnKafka(t *testing.T) {
	e := newEnv(t)
	dupRequests, lateRequests, replies := e.topic(t, 2), e.topic(t, 2), e.topic(t, 2)
	names := syncbridge.DefaultHeaderNames()
	wait := ftPick(20*time.Second, 60*time.Second) // bounds waits for a delivery
	rtr := e.transport(t)                          // the responder side
	drops := &ftDrops{ch: make(chan ftDrop, 64)}
	b := newBridge(t, e.transport(t), syncbridge.WithReplyTopic(replies), syncbridge.WithHooks(drops))

	// replyTo builds a reply to req as a responder would: to the topic it
	// names, echoing its correlation ID.
	replyTo := func(t *testing.T, req *syncbridge.Message, value string) syncbridge.Message {
		t.Helper()
		id, ok := req.Header(names.CorrelationID)
		topic, ok2 := req.Header(names.ReplyTopic)
		if !ok || !ok2 {
			t.Fatalf("request without correlation or reply-topic header: %+v", req.Headers)
		}
		return syncbridge.Message{Topic: string(topic), Value: []byte(value), Headers: []syncbridge.Header{{Key: names.CorrelationID, Value: id}}}
	}
	publish := func(t *testing.T, m syncbridge.Message) {
		t.Helper()
		if err := rtr.Publish(testCtx(t, wait), m); err != nil {
			t.Fatal(err)
		}
	}
	expectDrop := func(t *testing.T, want syncbridge.DropReason, id string) {
		t.Helper()
		if got := drops.next(t, wait); got.reason != want || got.id != id {
			t.Errorf("dropped %v reply %s, want %v reply %s", got.reason, got.id, want, id)
		}
	}

	t.Run("duplicate", func(t *testing.T) {
		// A responder of our own, reading requests as a group member.
		got := make(chan syncbridge.Message, 4)
		sub, err := rtr.Subscribe(testCtx(t, wait), syncbridge.SubscribeConfig{Topic: dupRequests, Group: "dup-" + dupRequests}, func(_ context.Context, m syncbridge.Message) { got <- m })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		call := b.Go(testCtx(t, wait), syncbridge.Message{Topic: dupRequests, Value: []byte("dup")})
		defer call.Cancel()
		var req syncbridge.Message
		select {
		case req = <-got:
		case <-time.After(wait):
			t.Fatalf("the request did not arrive in %v", wait)
		}
		reply := replyTo(t, &req, "dup reply")
		publish(t, reply)
		r, err := call.Wait(testCtx(t, wait))
		if err != nil || string(r.Value) != "dup reply" {
			t.Fatalf("Call = %v, %v; want the reply", r, err)
		}
		publish(t, reply) // the same reply again, as a redelivery would
		expectDrop(t, syncbridge.DropDuplicate, call.ID())
		if st := b.Stats(); st.Dropped.Duplicate != 1 || st.Replies != 1 {
			t.Errorf("stats %+v, want 1 reply and 1 duplicate", st)
		}
	})

	t.Run("late", func(t *testing.T) {
		// A Responder whose handler, for a "late" request, waits until the
		// test lets it reply.
		entered := make(chan syncbridge.Message, 4)
		release := make(chan struct{})
		done := make(chan struct{})
		resp, err := syncbridge.NewResponder(context.Background(), rtr, lateRequests, func(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
			if string(req.Value) == "late" {
				entered <- *req
				select {
				case <-release:
				case <-done:
				}
			}
			return syncbridge.Message{Value: req.Value}, nil
		}, syncbridge.WithGroup("late-"+lateRequests))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Close()
		defer close(done) // before Close, which waits for the handler
		let := func() {
			t.Helper()
			select {
			case release <- struct{}{}:
			case <-time.After(wait):
				t.Fatal("the handler is not waiting")
			}
		}
		// Requests with one key go to one partition, which the Responder
		// serves in order: a reply to the next request means it is done
		// with the one before.
		key := []byte("one partition")
		request := func(value string) {
			t.Helper()
			r, err := b.Request(testCtx(t, wait), syncbridge.Message{Topic: lateRequests, Key: key, Value: []byte(value)})
			if err != nil || string(r.Value) != value {
				t.Fatalf("Request(%q) = %v, %v", value, r, err)
			}
		}
		request("warm-up") // the Responder has joined its group

		// 1. The caller's deadline passes while the handler runs.
		deadline := ftPick(2*time.Second, 3*time.Second)
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		_, err = b.Request(ctx, syncbridge.Message{Topic: lateRequests, Key: key, Value: []byte("late")})
		cancel()
		took := time.Since(start)
		if !errors.Is(err, syncbridge.ErrNoReply) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Request = %v, want ErrNoReply and context.DeadlineExceeded", err)
		}
		if took > deadline+time.Second {
			t.Errorf("Request with a %v deadline took %v", deadline, took)
		}
		var req syncbridge.Message
		select {
		case req = <-entered:
		case <-time.After(wait):
			t.Fatal("the request was not handled")
		}
		let()
		request("after the deadline")
		// The Responder publishes a reply bounded by its caller's
		// deadline: past it, it does not send the reply at all, and counts
		// it as expired.
		if rs := resp.Stats(); rs.ReplyExpired != 1 || rs.ReplyFailed != 0 {
			t.Errorf("responder %+v, want 1 reply expired (the caller's deadline had passed), none failed", rs)
		}
		// A responder that does not heed the deadline (another client, or
		// a clock behind ours) sends it anyway: the Bridge drops it as late.
		publish(t, replyTo(t, &req, "late"))
		id, _ := req.Header(names.CorrelationID)
		expectDrop(t, syncbridge.DropLate, string(id))

		// 2. The caller cancels while the handler runs, long before the
		// deadline: the Responder's reply arrives and is dropped as late.
		call := b.Go(testCtx(t, wait), syncbridge.Message{Topic: lateRequests, Key: key, Value: []byte("late")})
		select {
		case <-entered:
		case <-time.After(wait):
			t.Fatal("the request was not handled")
		}
		call.Cancel()
		// The Call ends once the transport's verdict on the request is in:
		// with an asynchronous publish, the handler may run before the
		// acknowledgement arrives.
		select {
		case <-call.Done():
		case <-time.After(wait):
			t.Fatal("the cancelled Call did not end")
		}
		if _, err := call.Result(); !errors.Is(err, syncbridge.ErrNoReply) || !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Call = %v, want ErrNoReply and context.Canceled", err)
		}
		let()
		expectDrop(t, syncbridge.DropLate, call.ID())

		st := b.Stats()
		if st.Dropped.Late != 2 || st.TimedOut != 1 || st.Canceled != 1 {
			t.Errorf("stats %+v, want 2 late replies dropped, 1 request timed out and 1 cancelled", st)
		}
		if rs := resp.Stats(); rs.Handled != 4 || rs.ReplyExpired != 1 {
			t.Errorf("responder %+v, want 4 handled, 1 reply expired", rs)
		}
	})

	st := b.Stats()
	if d := st.Dropped; d.Malformed != 0 || d.Foreign != 0 || d.Unknown != 0 {
		t.Errorf("the bridge dropped replies as malformed, foreign or unknown: %+v", d)
	}
}
