package otel_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
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
		}, e.Tel.Option(), syncbridge.WithGroup(g))
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	b, err := syncbridge.New(context.Background(), tr, e.Tel.Option())
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
	send := e.Span(t, "send prices")
	if p := e.Span(t, "request prices"); send.Parent().SpanID() != p.SpanContext().SpanID() || attrs(p)["error.type"] != "" {
		t.Errorf("send span's parent %s, want the request span %s (error.type %q)", send.Parent().SpanID(), p.SpanContext().SpanID(), attrs(p)["error.type"])
	}
	groups := map[string]bool{}
	for _, s := range e.Spans("process prices") {
		if s.Parent().SpanID() != send.SpanContext().SpanID() {
			t.Errorf("process span of %s has parent %s, want the send span %s", attrs(s)["messaging.consumer.group.name"], s.Parent().SpanID(), send.SpanContext().SpanID())
		}
		groups[attrs(s)["messaging.consumer.group.name"]] = true
	}
	if fmt.Sprint(groups) != "map[prices.a:true prices.b:true]" {
		t.Errorf("process spans of groups %v, want prices.a and prices.b", groups)
	}
	if n := len(e.Spans("send " + syncbridge.DefaultReplyTopic)); n != 2 {
		t.Errorf("%d reply send spans, want 2", n)
	}
}
