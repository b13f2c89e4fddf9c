package transporttest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
)

// echo is a reply handler that answers with the request's value.
func echo(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
	return syncbridge.Message{Value: req.Value}, nil
}

func newBridge(t *testing.T, tr syncbridge.Transport, opts ...syncbridge.Option) *syncbridge.Bridge {
	t.Helper()
	b, err := syncbridge.New(context.Background(), tr, opts...)
	if err != nil {
		t.Fatalf("syncbridge.New: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Bridge.Close: %v", err)
		}
	})
	return b
}

func newResponder(t *testing.T, tr syncbridge.Transport, topic string, h syncbridge.ReplyHandler, opts ...syncbridge.Option) *syncbridge.Responder {
	t.Helper()
	r, err := syncbridge.NewResponder(context.Background(), tr, topic, h, opts...)
	if err != nil {
		t.Fatalf("syncbridge.NewResponder: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Responder.Close: %v", err)
		}
	})
	return r
}

func testBridgeRequestReply(t *testing.T, s Setup) {
	tr, requests, replies := s.New(t), s.Topic(t), s.Topic(t)
	deadlines := make(chan time.Time, 2)
	newResponder(t, tr, requests, func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		d, _ := ctx.Deadline()
		deadlines <- d
		if string(req.Value) == "fail" {
			return syncbridge.Message{}, syncbridge.NewRemoteError("not_found", "no such item")
		}
		return syncbridge.Message{Value: append([]byte("re: "), req.Value...), Headers: []syncbridge.Header{{Key: "h", Value: []byte{0}}}}, nil
	})
	b := newBridge(t, tr, syncbridge.WithReplyTopic(replies))
	ctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
	defer cancel()
	reply, err := b.Request(ctx, syncbridge.Message{Topic: requests, Value: []byte("hello")})
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	// The handler's context carries the caller's deadline, to the
	// millisecond the header carries.
	want, _ := ctx.Deadline()
	if got := <-deadlines; !got.Equal(time.UnixMilli(want.UnixMilli())) {
		t.Errorf("handler deadline %v, want the caller's %v", got, want)
	}
	if string(reply.Value) != "re: hello" {
		t.Errorf("reply %q, want %q", reply.Value, "re: hello")
	}
	if v, ok := reply.Header("h"); !ok || len(v) != 1 || v[0] != 0 {
		t.Errorf("reply header h = %q, %v; want \\x00", v, ok)
	}
	_, err = b.Request(ctx, syncbridge.Message{Topic: requests, Value: []byte("fail")})
	var re *syncbridge.RemoteError
	if !errors.As(err, &re) || re.Code != "not_found" || re.Description != "no such item" {
		t.Errorf("Request of a failing handler: %v, want RemoteError not_found", err)
	}
}

// load sends n requests with distinct payloads from c concurrent callers
// spread over bridges, and checks that each gets its own reply.
func load(t *testing.T, bridges []*syncbridge.Bridge, topic string, n, c int, timeout time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, c)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := bridges[w%len(bridges)]
			for i := range next {
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				want := fmt.Sprintf("request %d from caller %d", i, w)
				reply, err := b.Request(ctx, syncbridge.Message{Topic: topic, Value: []byte(want)})
				cancel()
				if err != nil {
					errs <- fmt.Errorf("request %d: %w", i, err)
					return
				}
				if string(reply.Value) != want {
					errs <- fmt.Errorf("request %d: misrouted: got reply %q, want %q", i, reply.Value, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// foreignCounter is a DroppedReplyHook counting foreign replies.
type foreignCounter struct{ ch chan struct{} }

func (f foreignCounter) OnDroppedReply(r syncbridge.DropReason, _ *syncbridge.Message) {
	if r == syncbridge.DropForeign {
		f.ch <- struct{}{}
	}
}

func testBridgeShared(t *testing.T, s Setup) {
	tr, requests, replies := s.New(t), s.Topic(t), s.Topic(t)
	newResponder(t, tr, requests, echo)
	newResponder(t, tr, requests, echo)
	const n = 1000
	foreign := foreignCounter{make(chan struct{}, 3*n)}
	var bridges []*syncbridge.Bridge
	for range 3 {
		bridges = append(bridges, newBridge(t, tr, syncbridge.WithReplyTopic(replies), syncbridge.WithHooks(foreign)))
	}
	load(t, bridges, requests, n, 24, s.Timeout)
	for _, b := range bridges {
		if st := b.Stats(); st.Waiting != 0 || st.InFlight != 0 {
			t.Errorf("after the load: %d waiting, %d in flight, want 0", st.Waiting, st.InFlight)
		}
	}
	// Every Bridge reads every reply: each reply is foreign to two of them.
	// The others may still be reading the last replies: wait for them.
	deadline := time.After(s.Timeout)
	for i := range 2 * n {
		select {
		case <-foreign.ch:
		case <-deadline:
			t.Fatalf("%d foreign replies dropped, want %d", i, 2*n)
		}
	}
	select {
	case <-foreign.ch:
		t.Errorf("more than %d foreign replies dropped", 2*n)
	default:
	}
}

func testBridgePinned(t *testing.T, s Setup) {
	tr, requests, replies := s.New(t), s.Topic(t), s.Topic(t)
	newResponder(t, tr, requests, echo)
	var bridges []*syncbridge.Bridge
	for i := range 2 {
		bridges = append(bridges, newBridge(t, tr, syncbridge.WithReplyTopic(replies), syncbridge.WithReplyPartitions(int32(i))))
	}
	load(t, bridges, requests, 500, 16, s.Timeout)
	for i, b := range bridges {
		if d := b.Stats().Dropped; d != (syncbridge.DroppedReplies{}) {
			t.Errorf("pinned bridge %d dropped replies %v, want none: it reads only its own partition", i, d)
		}
	}
}

func testBridgeConcurrent(t *testing.T, s Setup) {
	tr, requests, replies := s.New(t), s.Topic(t), s.Topic(t)
	newResponder(t, tr, requests, echo, syncbridge.WithConcurrentHandlers())
	b := newBridge(t, tr, syncbridge.WithReplyTopic(replies))
	load(t, []*syncbridge.Bridge{b}, requests, 1000, 32, s.Timeout)
}

// testBridgeGather: one request, answered by three responders of three
// groups; Gather collects one reply from each, and stops by count, by a
// quiet gap, or at the deadline, returning what arrived.
func testBridgeGather(t *testing.T, s Setup) {
	tr, requests, replies := s.New(t), s.Topic(t), s.Topic(t)
	for i := range 3 {
		newResponder(t, tr, requests, func(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
			if i == 2 {
				return syncbridge.Message{}, syncbridge.NewRemoteError("busy", "")
			}
			return syncbridge.Message{Value: fmt.Appendf(nil, "%s from %d", req.Value, i)}, nil
		}, syncbridge.WithGroup(fmt.Sprintf("g%d", i)))
	}
	b := newBridge(t, tr, syncbridge.WithReplyTopic(replies))
	check := func(g *syncbridge.Gathered, want string) {
		t.Helper()
		got := map[string]bool{}
		for _, r := range g.Replies {
			got[string(r.Value)] = true
		}
		if len(g.Replies) != 2 || !got[want+" from 0"] || !got[want+" from 1"] || len(g.Errors) != 1 || g.Errors[0].Code != "busy" {
			t.Errorf("gathered %d replies %v and errors %v, want 2 replies to %q and 1 error", len(g.Replies), got, g.Errors, want)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
	defer cancel()
	g, err := b.Gather(ctx, syncbridge.Message{Topic: requests, Value: []byte("count")}, syncbridge.GatherOptions{Count: 3})
	if err != nil {
		t.Fatalf("Gather by count: %v", err)
	}
	if g.Stop != syncbridge.GatherCount {
		t.Errorf("stopped by %v, want count", g.Stop)
	}
	check(g, "count")

	g, err = b.Gather(ctx, syncbridge.Message{Topic: requests, Value: []byte("quiet")}, syncbridge.GatherOptions{Count: 10, Quiet: s.Timeout / 30})
	if err != nil {
		t.Fatalf("Gather by quiet gap: %v", err)
	}
	if g.Stop != syncbridge.GatherQuiet {
		t.Errorf("stopped by %v, want quiet", g.Stop)
	}
	check(g, "quiet")

	short, cancel2 := context.WithTimeout(context.Background(), s.Timeout/30)
	defer cancel2()
	g, err = b.Gather(short, syncbridge.Message{Topic: s.Topic(t), Value: []byte("nobody")}, syncbridge.GatherOptions{})
	if !errors.Is(err, syncbridge.ErrNoReply) || !errors.Is(err, context.DeadlineExceeded) || g == nil || g.Len() != 0 || g.Stop != syncbridge.GatherDeadline {
		t.Errorf("Gather with no responder: %+v, %v; want an empty result stopped by the deadline, and ErrNoReply", g, err)
	}
	if st := b.Stats(); st.Replies != 2 || st.TimedOut != 1 || st.Waiting != 0 || st.InFlight != 0 {
		t.Errorf("stats %+v, want 2 gatherings with replies, 1 timed out, nothing waiting", st)
	}
}
