package syncbridge_test

// Stress tests of the error contract: many requests whose ends race each
// other (reply, cancel, deadline, the transport's verdict, Close,
// Shutdown), with invariants checked on every outcome.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

// outcomeLog collects the outcomes of requests and what the responder saw.
type outcomeLog struct {
	mu      sync.Mutex
	errs    []error
	notSent []string // payloads of requests that returned ErrPublish
	seen    map[string]bool
}

func newOutcomeLog() *outcomeLog {
	return &outcomeLog{seen: map[string]bool{}}
}

func (l *outcomeLog) saw(payload string) {
	l.mu.Lock()
	l.seen[payload] = true
	l.mu.Unlock()
}

func (l *outcomeLog) add(payload string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err)
	if errors.Is(err, syncbridge.ErrPublish) {
		l.notSent = append(l.notSent, payload)
	}
}

// check checks the invariants once every request has ended and the
// responder has stopped: Stats count each outcome once, in the field its
// error says; nothing in flight; no request that returned ErrPublish
// reached the responder.
func (l *outcomeLog) check(t *testing.T, b *syncbridge.Bridge, n int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) != n {
		t.Errorf("%d outcomes for %d requests", len(l.errs), n)
	}
	checkStatsMatch(t, b, l.errs)
	if st := b.Stats(); outcomes(st) != uint64(n) {
		t.Errorf("stats %+v: %d outcomes for %d requests", st, outcomes(st), n)
	}
	ran := 0
	for _, p := range l.notSent {
		if l.seen[p] {
			ran++
			if ran <= 3 {
				t.Errorf("%s returned ErrPublish and reached the responder", p)
			}
		}
	}
	if ran > 0 {
		t.Errorf("%d of %d ErrPublish requests reached the responder", ran, len(l.notSent))
	}
}

// callChecks checks a Call's own invariants while it may be ending: Done
// closes, and Result then always says the same outcome, which a Cancel
// after the end does not change. (Result may show the outcome a moment
// before Done is closed: end lets the Call's watchers go first.)
func callChecks(t *testing.T, c *syncbridge.Call) (*syncbridge.Message, error) {
	done := c.Done()
	<-done
	if c.Done() != done {
		t.Error("Done returned another channel")
	}
	r1, e1 := c.Result()
	r2, e2 := c.Result()
	if r1 != r2 || e1 != e2 || e1 == syncbridge.ErrPending {
		t.Errorf("Result after Done: %v, %v then %v, %v", r1, e1, r2, e2)
	}
	c.Cancel() // after the end: nothing changes
	if r3, e3 := c.Result(); r3 != r1 || e3 != e1 {
		t.Errorf("Cancel after the end changed the outcome: %v to %v", e1, e3)
	}
	return r1, e1
}

// request runs request i on b in one of several ways, ending it in one of
// several ways, and logs its outcome.
func request(t *testing.T, b *syncbridge.Bridge, log *outcomeLog, i int, rng *rand.Rand) {
	payload := fmt.Sprintf("request %d", i)
	msg := syncbridge.Message{Topic: "req", Value: []byte(payload)}
	var ctx context.Context
	var cancel context.CancelFunc
	switch rng.IntN(5) {
	case 0: // cancelled at a random moment
		ctx, cancel = context.WithCancel(context.Background())
		time.AfterFunc(time.Duration(rng.IntN(3000))*time.Microsecond, cancel)
	case 1: // a short deadline
		ctx, cancel = context.WithTimeout(context.Background(), time.Duration(rng.IntN(3000))*time.Microsecond)
	case 2: // ended already
		ctx, cancel = context.WithCancel(context.Background())
		cancel()
	case 3: // no deadline: the Bridge's default timeout
		ctx, cancel = context.WithCancel(context.Background())
	default: // long enough for a reply
		ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	}
	defer cancel()
	var err error
	switch rng.IntN(5) {
	case 0:
		_, err = b.Request(ctx, msg)
	case 1:
		_, err = callChecks(t, b.Go(ctx, msg))
	case 2: // Cancel, twice, from two goroutines, at a random moment
		c := b.Go(ctx, msg)
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			spins := rng.IntN(4)
			go func() {
				defer wg.Done()
				for range spins {
					runtime.Gosched()
				}
				c.Cancel()
			}()
		}
		_, err = callChecks(t, c)
		wg.Wait()
	case 3:
		var g *syncbridge.Gathered
		g, err = b.Gather(ctx, msg, syncbridge.GatherOptions{Count: 1 + rng.IntN(2)})
		if g == nil {
			t.Errorf("Gather returned nil (%v)", err)
		} else if err == nil && g.Len() == 0 {
			t.Errorf("Gather: no error and no reply (%v)", g.Stop)
		}
	default: // Wait with its own context, then the Call
		c := b.Go(ctx, msg)
		wctx, wcancel := context.WithCancel(context.Background())
		wcancel()
		if _, werr := c.Wait(wctx); werr != context.Canceled {
			if _, rerr := c.Result(); rerr == syncbridge.ErrPending {
				t.Errorf("Wait with an ended ctx on a Call in progress: %v", werr)
			}
		}
		_, err = callChecks(t, c)
	}
	log.add(payload, err)
}

// stress runs n requests, at most conc at a time, each with a random end
// (request), and Closes the Bridge (byClose) or Shuts it down with a 1 ms
// bound at a random point in the last quarter; each(i, wg), when not nil,
// runs before request i and may start goroutines on wg. It returns once
// every request ended, with the Bridge closed.
func stress(t *testing.T, b *syncbridge.Bridge, log *outcomeLog, rng *rand.Rand, n, conc int, byClose bool, each func(i int, wg *sync.WaitGroup)) {
	stopAt := n*3/4 + rng.IntN(n/4)
	var wg sync.WaitGroup
	sem := make(chan struct{}, conc)
	for i := range n {
		if each != nil {
			each(i, &wg)
		}
		if i == stopAt {
			wg.Go(func() {
				if byClose {
					b.Close()
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
				defer cancel()
				b.Shutdown(ctx)
			})
		}
		sem <- struct{}{}
		seed := rng.Uint64()
		wg.Go(func() {
			defer func() { <-sem }()
			request(t, b, log, i, rand.New(rand.NewPCG(seed, 1)))
		})
	}
	wg.Wait()
	b.Close()
}

// TestStressMemory: requests on the memory transport, with its faults
// (drop, duplicate, hold and release), small queues, random ends, and a
// Bridge Close or Shutdown in the middle.
func TestStressMemory(t *testing.T) {
	for round := range 4 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			rng := rand.New(rand.NewPCG(seed, uint64(round)))
			t.Logf("seed %d", seed)
			tr := &memory.Transport{QueueSize: 4, Partitions: 2}
			defer tr.Close()
			log := newOutcomeLog()
			var fmu sync.Mutex
			frng := rand.New(rand.NewPCG(rng.Uint64(), 2))
			tr.SetFaults(func(m *syncbridge.Message) memory.Fault {
				fmu.Lock()
				defer fmu.Unlock()
				switch x := frng.IntN(100); {
				case x < 5:
					return memory.Drop
				case x < 10:
					return memory.Duplicate
				case x < 20:
					return memory.Hold
				}
				return memory.Deliver
			})
			var opts []syncbridge.Option
			if round%2 == 1 {
				opts = append(opts, syncbridge.WithConcurrentHandlers())
			}
			r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
				log.saw(string(req.Value))
				if len(req.Value)%3 == 0 {
					return syncbridge.Message{}, syncbridge.NewRemoteError("odd", "")
				}
				return syncbridge.Message{Value: req.Value}, nil
			}, opts...)
			if err != nil {
				t.Fatal(err)
			}
			b, err := syncbridge.New(context.Background(), tr, syncbridge.WithDefaultTimeout(5*time.Millisecond), syncbridge.WithMaxInFlight(64))
			if err != nil {
				t.Fatal(err)
			}
			const n = 2000
			stress(t, b, log, rng, n, 96, round%2 == 0, func(i int, wg *sync.WaitGroup) {
				if i%50 == 0 {
					wg.Go(func() { tr.Release(ctxTimeout(t, time.Second)) }) // what was held: late, reordered
				}
			})
			tr.SetFaults(nil)
			tr.Release(ctxTimeout(t, time.Second)) // the responder may still get them
			r.Close()
			log.check(t, b, n)
			st := b.Stats()
			t.Logf("%+v", st)
		})
	}
}

// chaosAsync is an AsyncPublisher whose verdicts on "req" come late, from
// another goroutine, in random order: each request is either delivered at
// once (the verdict, later, is nil or a maybe-sent error: a reply can
// beat it) or held (the verdict is "not sent", given at a random moment
// or when the context ends, whichever first; never delivered).
type chaosAsync struct {
	*memory.Transport
	mu      sync.Mutex
	rng     *rand.Rand
	pending []func()      // verdicts to give
	kick    chan struct{} // capacity 1: pending is not empty
}

func (c *chaosAsync) PublishAsync(ctx context.Context, m syncbridge.Message, done func(error)) {
	if m.Topic != "req" {
		done(c.Transport.Publish(ctx, m))
		return
	}
	c.mu.Lock()
	x := c.rng.IntN(4)
	c.mu.Unlock()
	var once sync.Once
	verdict := func(err error) func() { return func() { once.Do(func() { done(err) }) } }
	switch x {
	case 0, 1: // delivered; acknowledged (or not) later
		if err := c.Transport.Publish(context.Background(), m); err != nil {
			done(err)
			return
		}
		v := verdict(nil)
		if x == 1 {
			v = verdict(errors.New("ack lost: the request may have been written"))
		}
		c.later(v)
	default: // held, then dropped: certainly not sent
		stop := context.AfterFunc(ctx, func() {
			verdict(fmt.Errorf("dropped: %w (%w)", ctx.Err(), syncbridge.ErrNotSent))()
		})
		if x == 2 {
			c.later(func() {
				stop()
				verdict(fmt.Errorf("refused: %w", syncbridge.ErrNotSent))()
			})
		}
	}
}

func (c *chaosAsync) later(f func()) {
	c.mu.Lock()
	c.pending = append(c.pending, f)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// run gives the pending verdicts, in random order, until stop; then the
// rest.
func (c *chaosAsync) run(stop <-chan struct{}) {
	for {
		select {
		case <-c.kick:
		case <-stop:
			c.flush(true)
			return
		}
		c.flush(false)
	}
}

func (c *chaosAsync) flush(all bool) {
	for {
		c.mu.Lock()
		if len(c.pending) == 0 {
			c.mu.Unlock()
			return
		}
		i := c.rng.IntN(len(c.pending))
		f := c.pending[i]
		c.pending[i] = c.pending[len(c.pending)-1]
		c.pending = c.pending[:len(c.pending)-1]
		c.mu.Unlock()
		if !all {
			runtime.Gosched() // let replies and cancels race the verdict
		}
		f()
	}
}

// TestStressAsyncVerdicts: the same requests as TestStressMemory
// over an AsyncPublisher whose verdicts race the replies, the cancels, the
// deadlines and Close.
func TestStressAsyncVerdicts(t *testing.T) {
	for round := range 4 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			rng := rand.New(rand.NewPCG(seed, uint64(round)))
			t.Logf("seed %d", seed)
			tr := &memory.Transport{QueueSize: 8, Partitions: 2}
			defer tr.Close()
			ca := &chaosAsync{Transport: tr, rng: rand.New(rand.NewPCG(seed, 3)), kick: make(chan struct{}, 1)}
			stop, stopped := make(chan struct{}), make(chan struct{})
			go func() { ca.run(stop); close(stopped) }()
			log := newOutcomeLog()
			r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
				log.saw(string(req.Value))
				return syncbridge.Message{Value: req.Value}, nil
			}, syncbridge.WithConcurrentHandlers())
			if err != nil {
				t.Fatal(err)
			}
			b, err := syncbridge.New(context.Background(), ca, syncbridge.WithDefaultTimeout(5*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			const n = 1500
			stress(t, b, log, rng, n, 64, round%2 == 0, nil)
			close(stop)
			<-stopped
			r.Close()
			log.check(t, b, n)
			t.Logf("%+v", b.Stats())
		})
	}
}
