package otel_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"
)

// One request makes one trace from the caller to the responder and back:
// request -> send -> process -> send (reply), with the attributes of the
// messaging conventions, and the metrics of each step.
func TestTraceAcrossMemory(t *testing.T) {
	e := newEnv(t)
	tr := &memory.Transport{}
	defer tr.Close()
	// The request is held until Go returned, so that the transport's
	// acknowledgement comes before the reply, as on Kafka: on the memory
	// transport the reply may otherwise overtake it, and the send span's
	// end and duration are then unknown (see OnRequestEnd).
	tr.SetFaults(func(m *syncbridge.Message) memory.Fault {
		if m.Topic == "items" {
			return memory.Hold
		}
		return memory.Deliver
	})
	checkTrace(t, e, tr, func() {
		if n, err := tr.Release(context.Background()); n != 1 || err != nil {
			t.Fatalf("Release = %d, %v; want 1, nil", n, err)
		}
	})
}

// checkTrace makes a request to "items" over tr, instrumented on both
// sides, and checks its trace and metrics. sent, when not nil, runs once
// Go returned; then the request was acknowledged before its reply came,
// and the checks that depend on it are made.
func checkTrace(t *testing.T, e *env, tr syncbridge.Transport, sent func()) {
	t.Helper()
	type seen struct {
		span        trace.SpanContext
		traceparent string
		partition   int32
		offset      int64
	}
	handled := make(chan seen, 1)
	r, err := syncbridge.NewResponder(context.Background(), tr, "items", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		tp, _ := req.Header("traceparent")
		handled <- seen{trace.SpanContextFromContext(ctx), string(tp), req.Partition, req.Offset}
		return syncbridge.Message{Value: []byte("taken down")}, nil
	}, e.tel.Option())
	if err != nil {
		t.Fatal(err)
	}
	b, err := syncbridge.New(context.Background(), tr, e.tel.Option())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	ctx, parent := e.testParent(context.Background())
	call := b.Go(ctx, syncbridge.Message{Topic: "items", Key: []byte("itm-7"), Value: []byte("take down")})
	if sent != nil {
		sent()
	}
	wctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reply, err := call.Wait(wctx)
	if err != nil {
		t.Fatal(err)
	}
	parent.End()
	// The responder's spans end once its reply is published: Shutdown
	// waits for that.
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := <-handled
	id := call.ID()

	req := e.span(t, "request items")
	send := e.span(t, "send items")
	proc := e.span(t, "process items")
	replySend := e.span(t, "send "+syncbridge.DefaultReplyTopic)

	// One trace; each span's parent is the one before it.
	traceID := parent.SpanContext().TraceID()
	for _, s := range []struct {
		name   string
		span   trace.SpanContext
		parent trace.SpanContext
		want   trace.SpanContext
		kind   trace.SpanKind
		remote bool
	}{
		{"request", req.SpanContext(), req.Parent(), parent.SpanContext(), trace.SpanKindClient, false},
		{"send", send.SpanContext(), send.Parent(), req.SpanContext(), trace.SpanKindProducer, false},
		{"process", proc.SpanContext(), proc.Parent(), send.SpanContext(), trace.SpanKindConsumer, true},
		{"reply send", replySend.SpanContext(), replySend.Parent(), proc.SpanContext(), trace.SpanKindProducer, false},
	} {
		if s.span.TraceID() != traceID {
			t.Errorf("%s span in trace %s, want %s", s.name, s.span.TraceID(), traceID)
		}
		if s.parent.SpanID() != s.want.SpanID() || s.parent.TraceID() != s.want.TraceID() {
			t.Errorf("%s span's parent is %s, want %s", s.name, s.parent.SpanID(), s.want.SpanID())
		}
		if s.parent.IsRemote() != s.remote {
			t.Errorf("%s span's parent remote = %v, want %v", s.name, s.parent.IsRemote(), s.remote)
		}
	}
	kinds := map[string]trace.SpanKind{"request": req.SpanKind(), "send": send.SpanKind(), "process": proc.SpanKind(), "reply send": replySend.SpanKind()}
	wantKinds := map[string]trace.SpanKind{"request": trace.SpanKindClient, "send": trace.SpanKindProducer, "process": trace.SpanKindConsumer, "reply send": trace.SpanKindProducer}
	if fmt.Sprint(kinds) != fmt.Sprint(wantKinds) {
		t.Errorf("span kinds %v, want %v", kinds, wantKinds)
	}

	// The handler's context carries the process span; the request carried
	// the send span's context.
	if h.span.SpanID() != proc.SpanContext().SpanID() {
		t.Errorf("the handler's context has span %s, want the process span %s", h.span.SpanID(), proc.SpanContext().SpanID())
	}
	if want := fmt.Sprintf("00-%s-%s-01", traceID, send.SpanContext().SpanID()); h.traceparent != want {
		t.Errorf("request traceparent %q, want %q", h.traceparent, want)
	}
	tp, _ := reply.Header("traceparent")
	if want := fmt.Sprintf("00-%s-%s-01", traceID, replySend.SpanContext().SpanID()); string(tp) != want {
		t.Errorf("reply traceparent %q, want %q", tp, want)
	}
	// The request span links to the reply's creation context.
	if ls := req.Links(); len(ls) != 1 || ls[0].SpanContext.SpanID() != replySend.SpanContext().SpanID() {
		t.Errorf("request span links %v, want one to the reply's send span %s", ls, replySend.SpanContext().SpanID())
	}

	// Timing: each child within its parent.
	if send.StartTime().Before(req.StartTime()) || send.EndTime().After(req.EndTime()) {
		t.Errorf("send span [%v, %v] outside the request span [%v, %v]", send.StartTime(), send.EndTime(), req.StartTime(), req.EndTime())
	}
	if sent != nil && proc.StartTime().Before(send.EndTime()) {
		t.Errorf("process span starts at %v, before the send span's end %v", proc.StartTime(), send.EndTime())
	}
	if replySend.StartTime().Before(proc.StartTime()) || replySend.EndTime().After(proc.EndTime()) {
		t.Errorf("reply send span outside the process span")
	}

	part := strconv.Itoa(int(h.partition))
	checkAttrs(t, req, map[string]string{
		"messaging.system": "kafka", "messaging.operation.name": "request", "messaging.operation.type": "-",
		"messaging.destination.name": "items", "messaging.message.conversation_id": id,
		"messaging.kafka.message.key": "itm-7", "messaging.message.body.size": "9", "error.type": "-",
	})
	checkAttrs(t, send, map[string]string{
		"messaging.system": "kafka", "messaging.operation.name": "send", "messaging.operation.type": "send",
		"messaging.destination.name": "items", "messaging.message.conversation_id": id,
		"messaging.kafka.message.key": "itm-7", "messaging.destination.partition.id": "-", "error.type": "-",
	})
	checkAttrs(t, proc, map[string]string{
		"messaging.system": "kafka", "messaging.operation.name": "process", "messaging.operation.type": "process",
		"messaging.destination.name": "items", "messaging.destination.partition.id": part,
		"messaging.kafka.offset": strconv.FormatInt(h.offset, 10), "messaging.consumer.group.name": "items.responders",
		"messaging.message.conversation_id": id, "messaging.kafka.message.key": "itm-7", "error.type": "-",
	})
	checkAttrs(t, replySend, map[string]string{
		"messaging.system": "kafka", "messaging.operation.name": "send", "messaging.operation.type": "send",
		"messaging.destination.name": syncbridge.DefaultReplyTopic, "messaging.message.conversation_id": id,
		"messaging.message.body.size": "10", "error.type": "-",
	})
	for _, s := range e.sr.Ended() {
		if s.Status().Code != codes.Unset {
			t.Errorf("span %s has status %v", s.Name(), s.Status())
		}
	}

	ms := e.collect(t)
	const (
		kafka   = "messaging.system=kafka"
		reqOp   = "messaging.operation.name=request"
		sendOp  = "messaging.operation.name=send,messaging.operation.type=send"
		procOp  = "messaging.operation.name=process,messaging.operation.type=process"
		items   = "messaging.destination.name=items"
		replies = "messaging.destination.name=" + syncbridge.DefaultReplyTopic
		group   = "messaging.consumer.group.name=items.responders"
	)
	// Attribute sets print sorted by key: consumer.group, destination,
	// operation.name, operation.type, system.
	durations := map[string]int64{
		items + "," + reqOp + "," + kafka:    1,
		items + "," + sendOp + "," + kafka:   1,
		replies + "," + sendOp + "," + kafka: 1,
	}
	if sent == nil && points(t, ms, "messaging.client.operation.duration")[items+","+sendOp+","+kafka] == 0 {
		// The reply came before the acknowledgement: no send duration.
		delete(durations, items+","+sendOp+","+kafka)
	}
	checkPoints(t, ms, "messaging.client.operation.duration", durations)
	checkPoints(t, ms, "messaging.process.duration", map[string]int64{
		group + "," + items + "," + procOp + "," + kafka: 1,
	})
	checkPoints(t, ms, "messaging.client.sent.messages", map[string]int64{
		items + "," + sendOp + "," + kafka:   1,
		replies + "," + sendOp + "," + kafka: 1,
	})
	checkPoints(t, ms, "messaging.client.consumed.messages", map[string]int64{
		group + "," + items + "," + procOp + "," + kafka: 1,
		replies + "," + procOp + "," + kafka:             1,
	})
	for name, want := range map[string]string{
		"messaging.client.operation.duration": "s", "messaging.process.duration": "s",
		"messaging.client.sent.messages": "{message}", "messaging.client.consumed.messages": "{message}",
	} {
		if got := unit(ms, name); got != want {
			t.Errorf("%s unit %q, want %q", name, got, want)
		}
	}
	// The histograms have the conventions' buckets, 5 ms to 10 s.
	for _, m := range ms {
		if h, ok := m.Data.(metricdata.Histogram[float64]); ok {
			for _, p := range h.DataPoints {
				if got := fmt.Sprint(p.Bounds); got != "[0.005 0.01 0.025 0.05 0.075 0.1 0.25 0.5 0.75 1 2.5 5 7.5 10]" {
					t.Errorf("%s buckets %s", m.Name, got)
				}
			}
		}
	}
	// Never a correlation ID, a key or a partition in a metric.
	for _, v := range attrValues(ms) {
		if v == id || v == "itm-7" {
			t.Errorf("metric attribute value %q", v)
		}
	}
}

// A Gather is one request span; the process span of every responder that
// answered is a child of its send span.
func TestGatherTrace(t *testing.T) {
	e := newEnv(t)
	tr := &memory.Transport{}
	defer tr.Close()
	var rs []*syncbridge.Responder
	for _, g := range []string{"prices.a", "prices.b"} {
		r, err := syncbridge.NewResponder(context.Background(), tr, "prices", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
			return syncbridge.Message{Value: []byte(g)}, nil
		}, e.tel.Option(), syncbridge.WithGroup(g))
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	b, err := syncbridge.New(context.Background(), tr, e.tel.Option())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g, err := b.Gather(ctx, syncbridge.Message{Topic: "prices"}, syncbridge.GatherOptions{Count: 2})
	if err != nil || g.Len() != 2 {
		t.Fatalf("Gather: %v, %v", g, err)
	}
	for _, r := range rs {
		r.Shutdown(context.Background())
	}
	send := e.span(t, "send prices")
	if p := e.span(t, "request prices"); send.Parent().SpanID() != p.SpanContext().SpanID() || attrs(p)["error.type"] != "" {
		t.Errorf("send span's parent %s, want the request span %s (error.type %q)", send.Parent().SpanID(), p.SpanContext().SpanID(), attrs(p)["error.type"])
	}
	groups := map[string]bool{}
	for _, s := range e.spans("process prices") {
		if s.Parent().SpanID() != send.SpanContext().SpanID() {
			t.Errorf("process span of %s has parent %s, want the send span %s", attrs(s)["messaging.consumer.group.name"], s.Parent().SpanID(), send.SpanContext().SpanID())
		}
		groups[attrs(s)["messaging.consumer.group.name"]] = true
	}
	if fmt.Sprint(groups) != "map[prices.a:true prices.b:true]" {
		t.Errorf("process spans of groups %v, want prices.a and prices.b", groups)
	}
	if n := len(e.spans("send " + syncbridge.DefaultReplyTopic)); n != 2 {
		t.Errorf("%d reply send spans, want 2", n)
	}
}
