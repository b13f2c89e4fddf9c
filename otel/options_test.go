package otel_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
	sbotel "github.com/syncbridge/syncbridge/otel"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
)

// requestCodes makes one request per code, each answered with an error
// reply of that code, and returns the error.type of each request's span.
func requestCodes(t *testing.T, e *env, codes []string) []string {
	t.Helper()
	tr := &memory.Transport{}
	defer tr.Close()
	r, err := syncbridge.NewResponder(context.Background(), tr, "items", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		return syncbridge.Message{}, syncbridge.NewRemoteError(string(req.Value), "")
	}, e.Tel.Option())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := syncbridge.New(context.Background(), tr, e.Tel.Option())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var got []string
	for _, code := range codes {
		e.SR.Reset()
		if _, err := b.Request(context.Background(), syncbridge.Message{Topic: "items", Value: []byte(code)}); err == nil {
			t.Fatalf("code %q: no error", code)
		}
		got = append(got, attrs(e.Span(t, "request items"))["error.type"])
	}
	return got
}

// Remote error codes are reported as themselves while they are few and
// plain; past that, as _OTHER.
func TestErrorCodesBounded(t *testing.T) {
	e := newEnv(t)
	var codes, want []string
	for i := range 60 {
		codes = append(codes, fmt.Sprintf("code_%d", i))
		if i < 50 {
			want = append(want, codes[i])
		} else {
			want = append(want, "_OTHER")
		}
	}
	// Codes seen already stay; odd codes never count.
	codes = append(codes, "code_3", "has space", strings.Repeat("x", 65), "internal", "panic")
	want = append(want, "code_3", "_OTHER", "_OTHER", "internal", "panic")
	got := requestCodes(t, e, codes)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("error types\n got %v\nwant %v", got, want)
	}
	// The metric has as many error types: 50 codes, _OTHER, internal and panic.
	n := 0
	for k := range points(t, e.Collect(t), "messaging.client.operation.duration") {
		if strings.Contains(k, "messaging.operation.name=request") {
			n++
		}
	}
	if n != 50+3 {
		t.Errorf("%d request duration series, want 53", n)
	}
}

// WithErrorCodes makes the codes given the only ones reported, with
// internal and panic.
func TestWithErrorCodes(t *testing.T) {
	e := newEnv(t, sbotel.WithErrorCodes("not_found", "conflict"))
	got := requestCodes(t, e, []string{"not_found", "gone", "conflict", "internal", "panic"})
	if want := "[not_found _OTHER conflict internal panic]"; fmt.Sprint(got) != want {
		t.Errorf("error types %v, want %v", got, want)
	}
}

// WithSystem sets messaging.system; messaging.kafka.* attributes are set
// only for Kafka.
func TestWithSystem(t *testing.T) {
	e := newEnv(t, sbotel.WithSystem("memory"))
	requestCodes(t, e, []string{"x"})
	s := e.Span(t, "request items")
	if got := attrs(s)["messaging.system"]; got != "memory" {
		t.Errorf("messaging.system %q, want memory", got)
	}
	for _, s := range e.SR.Ended() {
		for k := range attrs(s) {
			if strings.HasPrefix(k, "messaging.kafka.") {
				t.Errorf("span %s has %s", s.Name(), k)
			}
		}
	}
}

// requestHeaders returns the headers the responder received.
func requestHeaders(t *testing.T, tel *sbotel.Telemetry) []syncbridge.Header {
	t.Helper()
	tr := &memory.Transport{}
	defer tr.Close()
	got := make(chan []syncbridge.Header, 1)
	r, err := syncbridge.NewResponder(context.Background(), tr, "items", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		got <- req.Headers
		return syncbridge.Message{}, nil
	}, tel.Option())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := syncbridge.New(context.Background(), tr, tel.Option())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Request(context.Background(), syncbridge.Message{Topic: "items"}); err != nil {
		t.Fatal(err)
	}
	return <-got
}

func hasHeader(hs []syncbridge.Header, key string) bool {
	for _, h := range hs {
		if h.Key == key {
			return true
		}
	}
	return false
}

// Without WithPropagators, the global propagator is used: with none set,
// nothing is added, as with otelhttp.
func TestGlobalPropagator(t *testing.T) {
	e := newEnv(t)
	// The global propagator cannot be restored to its initial state: leave
	// one that propagates nothing, as that state does.
	defer otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator())
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator())
	tel := sbotel.New(sbotel.WithTracerProvider(e.TP))
	if hs := requestHeaders(t, tel); hasHeader(hs, "traceparent") {
		t.Errorf("traceparent sent with a global propagator that propagates nothing: %v", hs)
	}
	otel.SetTextMapPropagator(propagation.TraceContext{})
	tel = sbotel.New(sbotel.WithTracerProvider(e.TP))
	if hs := requestHeaders(t, tel); !hasHeader(hs, "traceparent") {
		t.Errorf("no traceparent with the global W3C propagator: %v", hs)
	}
}

// A trace context a request already carries (passed on from another
// message, say) is replaced: the request's send span is its creation
// context.
func TestTraceparentReplaced(t *testing.T) {
	e := newEnv(t)
	tr := &memory.Transport{}
	defer tr.Close()
	got := make(chan []syncbridge.Header, 1)
	r, err := syncbridge.NewResponder(context.Background(), tr, "items", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		got <- req.Headers
		return syncbridge.Message{}, nil
	}, e.Tel.Option())
	if err != nil {
		t.Fatal(err)
	}
	b, err := syncbridge.New(context.Background(), tr, e.Tel.Option())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	old := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	hs := []syncbridge.Header{{Key: "traceparent", Value: []byte(old)}}
	if _, err := b.Request(context.Background(), syncbridge.Message{Topic: "items", Headers: hs}); err != nil {
		t.Fatal(err)
	}
	r.Shutdown(context.Background())
	if string(hs[0].Value) != old {
		t.Errorf("the caller's header was modified: %q", hs[0].Value)
	}
	var tps []string
	for _, h := range <-got {
		if h.Key == "traceparent" {
			tps = append(tps, string(h.Value))
		}
	}
	send := e.Span(t, "send items").SpanContext()
	want := fmt.Sprintf("00-%s-%s-01", send.TraceID(), send.SpanID())
	if len(tps) != 1 || tps[0] != want {
		t.Errorf("traceparent headers %v, want [%s]", tps, want)
	}
	if p := e.Span(t, "process items").Parent(); p.SpanID() != send.SpanID() {
		t.Errorf("process span's parent %s, want the send span %s", p.SpanID(), send.SpanID())
	}
}

// ObserveBridge and ObserveResponder report the requests in flight and in
// progress, summed over what they observe, until unregistered.
func TestObserve(t *testing.T) {
	e := newEnv(t)
	tr := &memory.Transport{}
	defer tr.Close()
	started := make(chan struct{})
	release := make(chan struct{})
	r, err := syncbridge.NewResponder(context.Background(), tr, "items", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		started <- struct{}{}
		<-release
		return syncbridge.Message{}, nil
	}, e.Tel.Option(), syncbridge.WithConcurrentHandlers())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var calls []*syncbridge.Call
	for i := range 2 {
		b, err := syncbridge.New(context.Background(), tr, e.Tel.Option())
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		reg, err := e.Tel.ObserveBridge(b)
		if err != nil {
			t.Fatal(err)
		}
		defer reg.Unregister()
		for range i + 1 {
			calls = append(calls, b.Go(context.Background(), syncbridge.Message{Topic: "items"}))
		}
	}
	reg, err := e.Tel.ObserveResponder(r)
	if err != nil {
		t.Fatal(err)
	}
	for range calls {
		<-started
	}
	ms := e.Collect(t)
	checkPoints(t, ms, sbotel.InFlightName, map[string]int64{"messaging.system=kafka": 3})
	checkPoints(t, ms, sbotel.InProgressName, map[string]int64{"messaging.system=kafka": 3})
	close(release)
	for _, c := range calls {
		if _, err := c.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	r.Shutdown(context.Background())
	ms = e.Collect(t)
	checkPoints(t, ms, sbotel.InFlightName, map[string]int64{"messaging.system=kafka": 0})
	checkPoints(t, ms, sbotel.InProgressName, map[string]int64{"messaging.system=kafka": 0})
	if err := reg.Unregister(); err != nil {
		t.Fatal(err)
	}
	checkPoints(t, e.Collect(t), sbotel.InProgressName, map[string]int64{})
}

// The carrier reads the first header of a key, and replaces it rather
// than adding a second.
func TestHeaderCarrier(t *testing.T) {
	hs := []syncbridge.Header{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}, {Key: "a", Value: []byte("3")}}
	shared := hs[0].Value
	c := sbotel.HeaderCarrier{Headers: &hs}
	if got := c.Get("a"); got != "1" {
		t.Errorf("Get(a) = %q, want 1", got)
	}
	if got := c.Get("z"); got != "" {
		t.Errorf("Get(z) = %q, want empty", got)
	}
	c.Set("a", "4")
	c.Set("c", "5")
	if got := fmt.Sprint(c.Keys()); got != "[a b a c]" {
		t.Errorf("Keys = %s", got)
	}
	if got := c.Get("a") + c.Get("c"); got != "45" {
		t.Errorf("after Set: a and c = %q, want 45", got)
	}
	if string(shared) != "1" {
		t.Errorf("Set wrote into the old value's memory: %q", shared)
	}
}

// Whatever a message's headers hold, the hooks neither panic nor fail the
// request: the responder's extracting from the request, the caller's
// from the reply (which echoes the request's headers).
func FuzzHeaders(f *testing.F) {
	f.Add("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate", "a=b")
	f.Add("traceparent", "00-0af7651916cd43dd8448eb211c80319c-00000000000000000-01", "tracestate", ",,,=")
	f.Add("traceparent", "ff-zz", "baggage", "k=v;%%%")
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	e := newEnv(f, sbotel.WithPropagators(prop))
	tr := &memory.Transport{}
	defer tr.Close()
	b, err := syncbridge.New(context.Background(), tr, e.Tel.Option())
	if err != nil {
		f.Fatal(err)
	}
	defer b.Close()
	raw := make(chan struct{}, 1)
	r, err := syncbridge.NewResponder(context.Background(), tr, "items", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		if _, ok := req.Header("fuzz-raw"); ok {
			raw <- struct{}{}
		}
		return syncbridge.Message{Headers: req.Headers}, nil
	}, e.Tel.Option())
	if err != nil {
		f.Fatal(err)
	}
	defer r.Close()
	h := syncbridge.DefaultHeaderNames()
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		// As published by a caller without syncbridge: the responder's
		// hook extracts from these very headers.
		hs := []syncbridge.Header{{Key: k1, Value: []byte(v1)}, {Key: k2, Value: []byte(v2)}}
		req := syncbridge.Message{Topic: "items", Headers: append([]syncbridge.Header{
			{Key: h.CorrelationID, Value: []byte("fuzz")},
			{Key: h.ReplyTopic, Value: []byte("fuzz.replies")},
			{Key: "fuzz-raw"},
		}, hs...)}
		if err := tr.Publish(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		<-raw
		// Through the Bridge, whose hook replaces traceparent.
		if _, err := b.Request(context.Background(), syncbridge.Message{Topic: "items", Headers: hs}); err != nil {
			t.Fatal(err)
		}
	})
}
