package syncbridge_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

// replyTap subscribes to a reply topic of tr and returns the replies it
// receives.
func replyTap(t *testing.T, tr *memory.Transport, topic string) <-chan syncbridge.Message {
	t.Helper()
	got := make(chan syncbridge.Message, 16)
	sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: topic}, func(_ context.Context, m syncbridge.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	return got
}

// failOn answers "echo:" + value, or a RemoteError for values starting with
// "fail".
func failOn(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
	if bytes.HasPrefix(req.Value, []byte("fail")) {
		return syncbridge.Message{}, syncbridge.NewRemoteError("refused", "no: "+string(req.Value))
	}
	return syncbridge.Message{Value: append([]byte("echo:"), req.Value...)}, nil
}

// nestReply is what a NestJS ClientKafka reads from a reply.
type nestReply struct {
	disposed bool            // kafka_nest-is-disposed present: the observable completes
	err      map[string]any  // kafka_nest-err, decoded as NestJS's KafkaParser does (JSON object)
	rawErr   []byte          // kafka_nest-err as sent
	hasErr   bool            // kafka_nest-err present
	value    []byte          // the reply's value
	part     int32           // the partition it was written to
	corr     []byte          // kafka_correlationId
	headers  map[string]bool // every header name
}

func readNest(t *testing.T, m syncbridge.Message) nestReply {
	t.Helper()
	r := nestReply{value: m.Value, part: m.Partition, headers: map[string]bool{}}
	for _, h := range m.Headers {
		r.headers[h.Key] = true
	}
	if v, ok := m.Header(syncbridge.NestIsDisposedHeader); ok {
		r.disposed = true
		if !bytes.Equal(v, []byte{0}) {
			t.Errorf("kafka_nest-is-disposed = %x, want 00 as NestJS sends it", v)
		}
	}
	if v, ok := m.Header(syncbridge.NestErrHeader); ok {
		r.hasErr, r.rawErr = true, v
		if err := json.Unmarshal(v, &r.err); err != nil {
			t.Errorf("kafka_nest-err %q is not a JSON object: %v", v, err)
		}
	}
	r.corr, _ = m.Header("kafka_correlationId")
	return r
}

// TestResponderAnswersNestJSCaller: a request written as NestJS's
// ClientKafka writes it (correlation ID as a string, reply partition as
// decimal ASCII) is answered on that partition, with the headers that
// complete the caller's observable, and errors as NestJS reads them.
func TestResponderAnswersNestJSCaller(t *testing.T) {
	for _, d := range []syncbridge.Dialect{syncbridge.DialectAuto, syncbridge.DialectNestJS, syncbridge.DialectSpring} {
		t.Run(d.String(), func(t *testing.T) {
			tr := &memory.Transport{Partitions: 4}
			defer tr.Close()
			r, err := syncbridge.NewResponder(context.Background(), tr, "nest.req", failOn, syncbridge.WithDialect(d))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			replies := replyTap(t, tr, "nest.req.reply")
			send := func(id, value string) nestReply {
				t.Helper()
				err := tr.Publish(context.Background(), syncbridge.Message{Topic: "nest.req", Value: []byte(value), Headers: []syncbridge.Header{
					{Key: "kafka_correlationId", Value: []byte(id)},
					{Key: "kafka_replyTopic", Value: []byte("nest.req.reply")},
					{Key: "kafka_replyPartition", Value: []byte("3")},
				}})
				if err != nil {
					t.Fatal(err)
				}
				m := <-replies
				nr := readNest(t, m)
				if nr.part != 3 {
					t.Errorf("reply on partition %d, want 3 (decimal \"3\")", nr.part)
				}
				if string(nr.corr) != id {
					t.Errorf("correlation %q, want %q", nr.corr, id)
				}
				return nr
			}
			ok := send("b9e3c4a1-0b7e-4c1f-9a53-2f1d3e4c5b6a", "hello")
			if string(ok.value) != "echo:hello" {
				t.Errorf("value %q, want echo:hello", ok.value)
			}
			bad := send("c0ffee00-0b7e-4c1f-9a53-2f1d3e4c5b6a", "fail-1")
			if d == syncbridge.DialectSpring {
				if ok.disposed || bad.disposed || bad.hasErr {
					t.Errorf("DialectSpring reply carries NestJS headers: %v %v", ok.headers, bad.headers)
				}
			} else {
				if !ok.disposed || ok.hasErr {
					t.Errorf("success reply: disposed %v, error %v; want disposed, no error", ok.disposed, ok.hasErr)
				}
				if !bad.disposed || !bad.hasErr {
					t.Fatalf("error reply: disposed %v, error %q; want both", bad.disposed, bad.rawErr)
				}
				want := map[string]any{"status": "error", "message": "no: fail-1", "code": "refused"}
				if len(bad.err) != len(want) || bad.err["status"] != want["status"] || bad.err["message"] != want["message"] || bad.err["code"] != want["code"] {
					t.Errorf("kafka_nest-err = %v, want %v", bad.err, want)
				}
			}
			// syncbridge's own error headers are there in every dialect.
			if !bad.headers["syncbridge_errorCode"] || !bad.headers["syncbridge_errorDescription"] {
				t.Errorf("error reply headers %v lack syncbridge's", bad.headers)
			}
		})
	}
}

// TestResponderAutoDialect: in DialectAuto only NestJS-written requests get
// NestJS's headers; a Spring-written request (4-byte partition) or one
// without a partition does not. With DialectNestJS every reply has them.
func TestResponderAutoDialect(t *testing.T) {
	tests := []struct {
		dialect  syncbridge.Dialect
		part     []byte // nil: no partition header
		wantPart int32
		wantNest bool
	}{
		{syncbridge.DialectAuto, []byte{0, 0, 0, 2}, 2, false},
		{syncbridge.DialectAuto, nil, -1, false},
		{syncbridge.DialectAuto, []byte("2"), 2, true},
		{syncbridge.DialectAuto, []byte("12"), 12, true},
		{syncbridge.DialectNestJS, []byte{0, 0, 0, 2}, 2, true},
		{syncbridge.DialectNestJS, nil, -1, true},
		{syncbridge.DialectSpring, []byte("1"), 1, false},
	}
	for _, tc := range tests {
		tr := &memory.Transport{Partitions: 16}
		r, err := syncbridge.NewResponder(context.Background(), tr, "req", echo, syncbridge.WithDialect(tc.dialect))
		if err != nil {
			t.Fatal(err)
		}
		replies := replyTap(t, tr, "replies")
		hdrs := []syncbridge.Header{{Key: "kafka_correlationId", Value: []byte("id")}, {Key: "kafka_replyTopic", Value: []byte("replies")}}
		if tc.part != nil {
			hdrs = append(hdrs, syncbridge.Header{Key: "kafka_replyPartition", Value: tc.part})
		}
		if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "req", Value: []byte("v"), Headers: hdrs}); err != nil {
			t.Fatal(err)
		}
		m := <-replies
		nr := readNest(t, m)
		if nr.disposed != tc.wantNest {
			t.Errorf("%v, partition %q: NestJS headers %v, want %v", tc.dialect, tc.part, nr.disposed, tc.wantNest)
		}
		if tc.wantPart >= 0 && m.Partition != tc.wantPart {
			t.Errorf("%v, partition %q: reply on %d, want %d", tc.dialect, tc.part, m.Partition, tc.wantPart)
		}
		r.Close()
		tr.Close()
	}
}

// TestBridgeDialectPartition: a pinned Bridge writes its reply partition as
// 4 bytes big-endian (Spring's form) by default and as decimal ASCII with
// DialectNestJS; a syncbridge Responder reads both and replies there.
func TestBridgeDialectPartition(t *testing.T) {
	tests := []struct {
		dialect syncbridge.Dialect
		want    []byte
	}{
		{syncbridge.DialectAuto, []byte{0, 0, 0, 5}},
		{syncbridge.DialectSpring, []byte{0, 0, 0, 5}},
		{syncbridge.DialectNestJS, []byte("5")},
	}
	for _, tc := range tests {
		t.Run(tc.dialect.String(), func(t *testing.T) {
			tr := &memory.Transport{Partitions: 8}
			defer tr.Close()
			seen := make(chan []byte, 1)
			r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
				v, _ := req.Header("kafka_replyPartition")
				seen <- bytes.Clone(v)
				return syncbridge.Message{Value: req.Value}, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			b, err := syncbridge.New(context.Background(), tr, syncbridge.WithReplyPartitions(5), syncbridge.WithDialect(tc.dialect))
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			reply, err := b.Request(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req", Value: []byte("x")})
			if err != nil {
				t.Fatal(err)
			}
			if got := <-seen; !bytes.Equal(got, tc.want) {
				t.Errorf("kafka_replyPartition = %q, want %q", got, tc.want)
			}
			if reply.Partition != 5 {
				t.Errorf("reply on partition %d, want 5", reply.Partition)
			}
		})
	}
}

// TestBridgeReadsNestJSErrors: replies written the way a NestJS responder
// writes them reach a syncbridge caller as *RemoteError (kafka_nest-err) or
// as success (kafka_nest-is-disposed alone), without any option.
func TestBridgeReadsNestJSErrors(t *testing.T) {
	tests := []struct {
		name     string
		headers  []syncbridge.Header // besides the correlation ID
		wantErr  bool
		code     string
		desc     string
		rawValue string
	}{
		{name: "success", headers: []syncbridge.Header{{Key: "kafka_nest-is-disposed", Value: []byte{0}}}, rawValue: "pong"},
		{name: "RpcException(string)", headers: []syncbridge.Header{{Key: "kafka_nest-err", Value: []byte(`{"status":"error","message":"item not found"}`)}, {Key: "kafka_nest-is-disposed", Value: []byte{0}}},
			wantErr: true, code: syncbridge.CodeInternal, desc: "item not found"},
		{name: "RpcException(object)", headers: []syncbridge.Header{{Key: "kafka_nest-err", Value: []byte(`{"code":"not_found","message":"no item 7","details":{"id":7}}`)}},
			wantErr: true, code: "not_found", desc: "no item 7"},
		{name: "numeric code", headers: []syncbridge.Header{{Key: "kafka_nest-err", Value: []byte(`{"code":404,"message":"gone"}`)}},
			wantErr: true, code: "404", desc: "gone"},
		{name: "validation messages", headers: []syncbridge.Header{{Key: "kafka_nest-err", Value: []byte(`{"statusCode":400,"message":["a must be a string"]}`)}},
			wantErr: true, code: syncbridge.CodeInternal, desc: `{"statusCode":400,"message":["a must be a string"]}`},
		{name: "no handler (plain string)", headers: []syncbridge.Header{{Key: "kafka_nest-err", Value: []byte("There is no matching message handler defined in the remote service.")}},
			wantErr: true, code: syncbridge.CodeInternal, desc: "There is no matching message handler defined in the remote service."},
		{name: "syncbridge headers win", headers: []syncbridge.Header{{Key: "kafka_nest-err", Value: []byte(`{"code":"x","message":"y"}`)}, {Key: "syncbridge_errorCode", Value: []byte("refused")}, {Key: "syncbridge_errorDescription", Value: []byte("exact")}},
			wantErr: true, code: "refused", desc: "exact"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := &memory.Transport{}
			defer tr.Close()
			// A stand-in NestJS responder, writing raw headers.
			sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "nest", Group: "g"}, func(ctx context.Context, m syncbridge.Message) {
				id, _ := m.Header("kafka_correlationId")
				to, _ := m.Header("kafka_replyTopic")
				hdrs := append([]syncbridge.Header{{Key: "kafka_correlationId", Value: id}}, tc.headers...)
				var v []byte
				if tc.rawValue != "" {
					v = []byte(tc.rawValue)
				}
				if err := tr.Publish(ctx, syncbridge.Message{Topic: string(to), Value: v, Headers: hdrs}); err != nil {
					t.Error(err)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			b, err := syncbridge.New(context.Background(), tr)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			reply, err := b.Request(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "nest", Value: []byte("ping")})
			var re *syncbridge.RemoteError
			if !tc.wantErr {
				if err != nil || string(reply.Value) != tc.rawValue {
					t.Fatalf("Request = %v, %v; want %q", reply, err, tc.rawValue)
				}
				return
			}
			if !errors.As(err, &re) {
				t.Fatalf("Request error %v, want *RemoteError", err)
			}
			if re.Code != tc.code || re.Description != tc.desc || re.Reply == nil {
				t.Errorf("RemoteError{Code: %q, Description: %q, Reply: %v}, want %q, %q and the reply", re.Code, re.Description, re.Reply != nil, tc.code, tc.desc)
			}
			if st := b.Stats(); st.RemoteErrors != 1 {
				t.Errorf("stats RemoteErrors %d, want 1", st.RemoteErrors)
			}
		})
	}
}

// TestNestHeadersNotForwarded: a handler that returns another NestJS
// reply's headers (kafka_nest-err among them) does not turn its own
// success into an error: the Responder sets NestJS's headers itself.
func TestNestHeadersNotForwarded(t *testing.T) {
	tr := &memory.Transport{}
	defer tr.Close()
	r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		return syncbridge.Message{Value: []byte("fine"), Headers: []syncbridge.Header{
			{Key: "kafka_nest-err", Value: []byte(`{"message":"from upstream"}`)},
			{Key: "kafka_nest-is-disposed", Value: []byte{0}},
			{Key: "trace", Value: []byte("t")},
		}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := syncbridge.New(context.Background(), tr)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	reply, err := b.Request(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req"})
	if err != nil {
		t.Fatalf("Request: %v, want the handler's success", err)
	}
	if _, ok := reply.Header("kafka_nest-err"); ok {
		t.Error("the handler's kafka_nest-err was forwarded")
	}
	if _, ok := reply.Header("kafka_nest-is-disposed"); ok {
		t.Error("kafka_nest-is-disposed forwarded to a syncbridge caller (DialectAuto)")
	}
	if v, _ := reply.Header("trace"); string(v) != "t" {
		t.Errorf("trace = %q, want it kept", v)
	}
}

func TestUnknownDialect(t *testing.T) {
	tr := &memory.Transport{}
	defer tr.Close()
	for _, d := range []syncbridge.Dialect{-1, 3, 99} {
		if b, err := syncbridge.New(context.Background(), tr, syncbridge.WithDialect(d)); err == nil {
			b.Close()
			t.Errorf("New with dialect %v: no error", d)
		}
		if r, err := syncbridge.NewResponder(context.Background(), tr, "req", echo, syncbridge.WithDialect(d)); err == nil {
			r.Close()
			t.Errorf("NewResponder with dialect %v: no error", d)
		}
		if s := d.String(); s == "auto" || s == "spring" || s == "nestjs" {
			t.Errorf("Dialect(%d).String() = %q", int(d), s)
		}
	}
	for d, want := range map[syncbridge.Dialect]string{syncbridge.DialectAuto: "auto", syncbridge.DialectSpring: "spring", syncbridge.DialectNestJS: "nestjs"} {
		if d.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(d), d.String(), want)
		}
	}
}

// A Bridge pinned to a reply partition that calls NestJS responders writes
// the partition as NestJS reads it: in decimal. A syncbridge Responder reads
// either form.
func ExampleWithDialect() {
	tr := &memory.Transport{Partitions: 4}
	defer tr.Close()
	ctx := context.Background()
	r, err := syncbridge.NewResponder(ctx, tr, "prices", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		p, _ := req.Header("kafka_replyPartition")
		return syncbridge.Message{Value: fmt.Appendf(nil, "kafka_replyPartition %q", p)}, nil
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	b, err := syncbridge.New(ctx, tr, syncbridge.WithReplyPartitions(3), syncbridge.WithDialect(syncbridge.DialectNestJS))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	reply, err := b.Request(ctx, syncbridge.Message{Topic: "prices"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s, reply on partition %d\n", reply.Value, reply.Partition)
	// Output: kafka_replyPartition "3", reply on partition 3
}
