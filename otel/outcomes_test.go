package otel_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
	sbotel "github.com/syncbridge/syncbridge/otel"
	"github.com/syncbridge/syncbridge/otel/internal/tracecheck"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// failing is a memory transport whose publishes to one topic fail.
type failing struct {
	*memory.Transport
	topic string
	err   error
}

func (f *failing) Publish(ctx context.Context, msg syncbridge.Message) error {
	if msg.Topic == f.topic {
		return f.err
	}
	return f.Transport.Publish(ctx, msg)
}

// checkError checks the status and error.type of the span named name.
func checkError(t *testing.T, e *env, name, want string) {
	t.Helper()
	s := e.Span(t, name)
	if got := attrs(s)["error.type"]; got != want {
		t.Errorf("%s: error.type %q, want %q", name, got, want)
	}
	if want != "" && s.Status().Code != codes.Error {
		t.Errorf("%s: status %v, want Error", name, s.Status())
	}
	if want == "" && s.Status().Code != codes.Unset {
		t.Errorf("%s: status %v, want Unset", name, s.Status())
	}
}

// The caller's and the responder's error types, for each way a request
// ends.
func TestErrorTypes(t *testing.T) {
	// The attribute sets' pieces, as tracecheck.CheckTrace has them.
	kafka, reqOp, sendOp, procOp := tracecheck.AttrSystem, tracecheck.AttrRequest, tracecheck.AttrSend, tracecheck.AttrProcess
	items, replies, group := tracecheck.AttrItems, tracecheck.AttrReplies, tracecheck.AttrGroup
	errType := func(s string) string { return "error.type=" + s + "," }
	fail := func(code string) syncbridge.ReplyHandler {
		return func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
			switch code {
			case "internal":
				return syncbridge.Message{}, errors.New("database down")
			case "panic":
				panic("boom")
			case "expired":
				<-ctx.Done()
				return syncbridge.Message{}, nil
			case "":
				return syncbridge.Message{Value: []byte("ok")}, nil
			}
			return syncbridge.Message{}, syncbridge.NewRemoteError(code, "details "+string(req.Value))
		}
	}
	for _, c := range []struct {
		name    string
		handler syncbridge.ReplyHandler
		// setup returns the transport, and a context for the request
		setup func(tr *memory.Transport) (syncbridge.Transport, context.Context, context.CancelFunc)
		// timeout, if set, is the request's, from just before Request (a
		// deadline set in setup could pass before Request on a busy machine)
		timeout time.Duration
		// bubble runs the case in a synctest bubble, for a case whose
		// request must reach the handler before its timeout passes, however
		// busy the machine. (A send there takes no time: its duration is
		// unknown and not recorded.)
		bubble  bool
		opts    []syncbridge.Option
		msg     syncbridge.Message
		before  func(b *syncbridge.Bridge) // before the request
		caller  string                     // the request span's error.type
		send    string                     // the send span's error.type; "-" for no send span
		process string                     // the process span's error.type; "-" for none
		reply   string                     // the reply send span's error.type; "-" for none
		metrics map[string]map[string]int64
	}{
		{
			name: "remote code", handler: fail("not_found"),
			caller: "not_found", process: "not_found",
			metrics: map[string]map[string]int64{
				// The request's send is there when the memory transport
				// acknowledged it before the reply came (see checkTrace).
				"messaging.client.operation.duration": {
					errType("not_found") + items + "," + reqOp + "," + kafka: 1,
					replies + "," + sendOp + "," + kafka:                     1,
				},
				"messaging.process.duration": {errType("not_found") + group + "," + items + "," + procOp + "," + kafka: 1},
			},
		},
		{
			name: "handler error", handler: fail("internal"),
			caller: "internal", process: "internal",
		},
		{
			name: "panic", handler: fail("panic"),
			caller: "panic", process: "panic",
		},
		{
			name: "invalid", handler: fail(""), msg: syncbridge.Message{Value: []byte("x")},
			caller: "invalid", send: "-", process: "-", reply: "-",
			metrics: map[string]map[string]int64{
				"messaging.client.operation.duration": {errType("invalid") + reqOp + "," + kafka: 1},
				"messaging.client.sent.messages":      {},
			},
		},
		{
			name: "no responders", handler: fail(""), msg: syncbridge.Message{Topic: "nobody"},
			opts:   []syncbridge.Option{syncbridge.WithFailFastNoResponders()},
			caller: "no_responders", send: "-", process: "-", reply: "-",
		},
		{
			name: "closed", handler: fail(""),
			before: func(b *syncbridge.Bridge) { b.Close() },
			caller: "closed", send: "-", process: "-", reply: "-",
		},
		{
			name: "canceled before sending", handler: fail(""),
			setup: func(tr *memory.Transport) (syncbridge.Transport, context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return tr, ctx, cancel
			},
			caller: "canceled", send: "-", process: "-", reply: "-",
		},
		{
			name: "no reply", handler: fail(""),
			setup: func(tr *memory.Transport) (syncbridge.Transport, context.Context, context.CancelFunc) {
				tr.SetFaults(func(*syncbridge.Message) memory.Fault { return memory.Drop })
				return tr, context.Background(), func() {}
			},
			timeout: 100 * time.Millisecond,
			caller:  "no_reply", process: "-", reply: "-",
			metrics: map[string]map[string]int64{
				"messaging.client.operation.duration": {
					errType("no_reply") + items + "," + reqOp + "," + kafka: 1,
					items + "," + sendOp + "," + kafka:                      1,
				},
				"messaging.client.sent.messages": {items + "," + sendOp + "," + kafka: 1},
			},
		},
		{
			name: "not sent", handler: fail(""),
			setup: func(tr *memory.Transport) (syncbridge.Transport, context.Context, context.CancelFunc) {
				f := &failing{Transport: tr, topic: "items", err: fmt.Errorf("broker says no: %w", syncbridge.ErrNotSent)}
				return f, context.Background(), func() {}
			},
			caller: "publish", send: "publish", process: "-", reply: "-",
			metrics: map[string]map[string]int64{
				"messaging.client.operation.duration": {
					errType("publish") + items + "," + reqOp + "," + kafka:  1,
					errType("publish") + items + "," + sendOp + "," + kafka: 1,
				},
				"messaging.client.sent.messages": {errType("publish") + items + "," + sendOp + "," + kafka: 1},
			},
		},
		{
			name: "deadline passed in the handler", handler: fail("expired"),
			timeout: 100 * time.Millisecond, bubble: true,
			caller: "no_reply", process: "expired", reply: "-",
			metrics: map[string]map[string]int64{
				"messaging.process.duration":     {errType("expired") + group + "," + items + "," + procOp + "," + kafka: 1},
				"messaging.client.sent.messages": {items + "," + sendOp + "," + kafka: 1},
			},
		},
		{
			name: "reply not published", handler: fail(""),
			setup: func(tr *memory.Transport) (syncbridge.Transport, context.Context, context.CancelFunc) {
				f := &failing{Transport: tr, topic: syncbridge.DefaultReplyTopic, err: errors.New("broker down")}
				return f, context.Background(), func() {}
			},
			timeout: 100 * time.Millisecond, bubble: true,
			caller: "no_reply", process: "publish", reply: "publish",
			metrics: map[string]map[string]int64{
				"messaging.client.sent.messages": {
					items + "," + sendOp + "," + kafka:                        1,
					errType("publish") + replies + "," + sendOp + "," + kafka: 1,
				},
			},
		},
	} {
		run := func(t *testing.T) {
			e := newEnv(t)
			mem := &memory.Transport{}
			defer mem.Close()
			var tr syncbridge.Transport = mem
			ctx := context.Background()
			if c.setup != nil {
				var cancel context.CancelFunc
				tr, ctx, cancel = c.setup(mem)
				defer cancel()
			}
			r, err := syncbridge.NewResponder(context.Background(), tr, "items", c.handler, e.Tel.Option())
			if err != nil {
				t.Fatal(err)
			}
			b, err := syncbridge.New(context.Background(), tr, append([]syncbridge.Option{e.Tel.Option()}, c.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if c.before != nil {
				c.before(b)
			}
			msg := c.msg
			if msg.Topic == "" && msg.Value == nil {
				msg = syncbridge.Message{Topic: "items", Value: []byte("itm-1")}
			}
			if c.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, c.timeout)
				defer cancel()
			}
			_, err = b.Request(ctx, msg)
			if (err == nil) != (c.caller == "") {
				t.Fatalf("Request: %v", err)
			}
			if err := r.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			name := "request " + msg.Topic
			if msg.Topic == "" {
				name = "request"
			}
			checkError(t, e, name, c.caller)
			for _, s := range []struct{ name, want string }{
				{"send items", c.send},
				{"process items", c.process},
				{"send " + syncbridge.DefaultReplyTopic, c.reply},
			} {
				if s.want == "-" {
					if n := len(e.Spans(s.name)); n != 0 {
						t.Errorf("%d spans %q, want none", n, s.name)
					}
					continue
				}
				checkError(t, e, s.name, s.want)
			}
			ms := e.Collect(t)
			for name, want := range c.metrics {
				if c.caller != "" && name == "messaging.client.operation.duration" {
					if _, ok := want[items+","+sendOp+","+kafka]; !ok {
						want = maps.Clone(want)
						if n := points(t, ms, name)[items+","+sendOp+","+kafka]; n == 1 {
							want[items+","+sendOp+","+kafka] = 1 // acknowledged before the reply came
						}
					}
				}
				checkPoints(t, ms, name, want)
			}
		}
		t.Run(c.name, func(t *testing.T) {
			if c.bubble {
				synctest.Test(t, run)
			} else {
				run(t)
			}
		})
	}
}

// A Bridge refusing a request for MaxInFlight makes a request span with
// error.type overloaded, and no send span.
func TestOverloaded(t *testing.T) {
	e := newEnv(t)
	tr := &memory.Transport{}
	defer tr.Close()
	tr.SetFaults(func(*syncbridge.Message) memory.Fault { return memory.Hold })
	b, err := syncbridge.New(context.Background(), tr, e.Tel.Option(), syncbridge.WithMaxInFlight(1))
	if err != nil {
		t.Fatal(err)
	}
	first := b.Go(context.Background(), syncbridge.Message{Topic: "items"})
	if _, err := b.Request(context.Background(), syncbridge.Message{Topic: "items"}); !errors.Is(err, syncbridge.ErrOverloaded) {
		t.Fatalf("second request: %v, want ErrorTypeOverloaded", err)
	}
	b.Close()
	<-first.Done()
	var got []string
	for _, s := range e.Spans("request items") {
		got = append(got, attrs(s)["error.type"])
	}
	if fmt.Sprint(got) != "[overloaded closed]" {
		t.Errorf("request spans' error types %v, want [overloaded closed]", got)
	}
	if n := len(e.Spans("send items")); n != 1 {
		t.Errorf("%d send spans, want 1 (the first request's)", n)
	}
	checkPoints(t, e.Collect(t), "messaging.client.operation.duration", map[string]int64{
		"error.type=closed,messaging.destination.name=items,messaging.operation.name=request,messaging.system=kafka":     1,
		"error.type=overloaded,messaging.destination.name=items,messaging.operation.name=request,messaging.system=kafka": 1,
		// The first request was sent (held by the transport), then closed.
		"messaging.destination.name=items,messaging.operation.name=send,messaging.operation.type=send,messaging.system=kafka": 1,
	})
}

// Dropped replies and skipped requests are counted by reason; a skipped
// request makes a process span in its caller's trace.
func TestDroppedAndSkipped(t *testing.T) {
	e := newEnv(t)
	tr := &memory.Transport{}
	defer tr.Close()
	sig := newSignal()
	r, err := syncbridge.NewResponder(context.Background(), tr, "items", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		t.Error("the handler was called for a skipped request")
		return syncbridge.Message{}, nil
	}, e.Tel.Option(), syncbridge.WithHooks(sig))
	if err != nil {
		t.Fatal(err)
	}
	b, err := syncbridge.New(context.Background(), tr, e.Tel.Option(), syncbridge.WithHooks(sig))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	// A reply without a correlation ID, and one for another Bridge.
	h := syncbridge.DefaultHeaderNames()
	for _, m := range []syncbridge.Message{
		{Topic: syncbridge.DefaultReplyTopic},
		{Topic: syncbridge.DefaultReplyTopic, Headers: []syncbridge.Header{{Key: h.CorrelationID, Value: []byte("not-one-of-ours")}}},
	} {
		if err := tr.Publish(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	// A request whose caller's deadline passed, carrying its caller's trace
	// context.
	ctx, parent := e.StartParent(context.Background())
	req := syncbridge.Message{Topic: "items", Headers: []syncbridge.Header{
		{Key: h.CorrelationID, Value: []byte("abc")},
		{Key: h.ReplyTopic, Value: []byte(syncbridge.DefaultReplyTopic)},
		{Key: h.Deadline, Value: []byte(strconv.FormatInt(time.Now().Add(-time.Second).UnixMilli(), 10))},
	}}
	propagation.TraceContext{}.Inject(ctx, sbotel.HeaderCarrier{Headers: &req.Headers})
	parent.End()
	if err := tr.Publish(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	// And one without routing headers.
	if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "items"}); err != nil {
		t.Fatal(err)
	}
	drops := map[syncbridge.DropReason]int{}
	skips := map[syncbridge.SkipReason]int{}
	for range 2 {
		drops[<-sig.dropped]++
		skips[<-sig.skipped]++
	}
	r.Close()
	if fmt.Sprint(drops) != fmt.Sprint(map[syncbridge.DropReason]int{syncbridge.DropMalformed: 1, syncbridge.DropForeign: 1}) {
		t.Errorf("dropped %v", drops)
	}

	ms := e.Collect(t)
	checkPoints(t, ms, sbotel.DroppedName, map[string]int64{
		"messaging.destination.name=syncbridge.replies,messaging.system=kafka,syncbridge.reason=foreign":   1,
		"messaging.destination.name=syncbridge.replies,messaging.system=kafka,syncbridge.reason=malformed": 1,
	})
	checkPoints(t, ms, sbotel.SkippedName, map[string]int64{
		"messaging.destination.name=items,messaging.system=kafka,syncbridge.reason=expired":   1,
		"messaging.destination.name=items,messaging.system=kafka,syncbridge.reason=malformed": 1,
	})
	checkPoints(t, ms, "messaging.client.consumed.messages", map[string]int64{})

	var expired []trace.SpanContext
	for _, s := range e.Spans("process items") {
		if s.Status().Code != codes.Error {
			t.Errorf("skipped request's span has status %v", s.Status())
		}
		if attrs(s)["error.type"] == "expired" {
			expired = append(expired, s.Parent())
		}
	}
	if len(expired) != 1 || expired[0].SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("expired request's process span parents %v, want one: the caller's %s", expired, parent.SpanContext().SpanID())
	}
}
