package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestClassify: each outcome at a syncbridge caller lands in its column, so
// that a broken peer shows in the table.
func TestClassify(t *testing.T) {
	p := "ok-x-0-n"
	f := "fail-x-1-n"
	reply := func(v string, part int32) *syncbridge.Message {
		return &syncbridge.Message{Value: []byte(v), Partition: part}
	}
	remote := func(code, desc string, part int32) error {
		return &syncbridge.RemoteError{Code: code, Description: desc, Reply: &syncbridge.Message{Partition: part}}
	}
	tests := []struct {
		name  string
		p     string
		fail  bool
		reply *syncbridge.Message
		err   error
		part  int32
		want  result
	}{
		{"success", p, false, reply("echo:"+p, 0), nil, -1, result{Correct: 1}},
		{"pinned success", p, false, reply("echo:"+p, 2), nil, 2, result{Correct: 1}},
		{"another request's reply", p, false, reply("echo:ok-x-2-n", 0), nil, -1, result{Misrouted: 1}},
		{"another partition", p, false, reply("echo:"+p, 0), nil, 2, result{Misrouted: 1}},
		{"error as success", f, true, reply("echo:"+f, 0), nil, -1, result{Wrong: 1}},
		{"error as empty success", f, true, reply("", 0), nil, -1, result{Wrong: 1}},
		{"error", f, true, nil, remote("refused", "no: "+f, 0), -1, result{Correct: 1, ErrorsAsErrors: 1}},
		{"pinned error", f, true, nil, remote("refused", "no: "+f, 1), 1, result{Correct: 1, ErrorsAsErrors: 1}},
		{"pinned error, another partition", f, true, nil, remote("refused", "no: "+f, 0), 1, result{Wrong: 1}},
		{"another request's error", f, true, nil, remote("refused", "no: fail-x-3-n", 0), -1, result{Misrouted: 1}},
		{"wrong code", f, true, nil, remote("internal", "no: "+f, 0), -1, result{Wrong: 1}},
		{"success as error", p, false, nil, remote("refused", "no: "+p, 0), -1, result{Wrong: 1}},
		{"no reply", p, false, nil, fmt.Errorf("%w: %w", syncbridge.ErrNoReply, context.DeadlineExceeded), -1, result{Lost: 1}},
	}
	for _, tc := range tests {
		var got result
		classify(&got, tc.p, tc.fail, tc.reply, tc.err, tc.part)
		if got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// TestGoCase runs a case on the memory transport: against a correct
// responder every request is correct; against one that replies to the
// wrong partition, or turns errors into successes, the table says so.
func TestGoCase(t *testing.T) {
	wrongPartition := func(tr *memory.Transport) syncbridge.Handler {
		return func(ctx context.Context, m syncbridge.Message) { // always partition 1
			id, _ := m.Header("kafka_correlationId")
			to, _ := m.Header("kafka_replyTopic")
			_ = tr.Publish(ctx, syncbridge.Message{Topic: string(to), Partition: 1, UsePartition: true, Value: append([]byte("echo:"), m.Value...),
				Headers: []syncbridge.Header{{Key: "kafka_correlationId", Value: id}}})
		}
	}
	errorsAsSuccess := func(tr *memory.Transport) syncbridge.Handler {
		return func(ctx context.Context, m syncbridge.Message) { // errors become empty successes
			id, _ := m.Header("kafka_correlationId")
			to, _ := m.Header("kafka_replyTopic")
			v := append([]byte("echo:"), m.Value...)
			if strings.HasPrefix(string(m.Value), "fail") {
				v = nil
			}
			_ = tr.Publish(ctx, syncbridge.Message{Topic: string(to), Value: v, Headers: []syncbridge.Header{{Key: "kafka_correlationId", Value: id}}})
		}
	}
	tests := []struct {
		name      string
		pinned    bool
		responder func(*memory.Transport) syncbridge.Handler // nil: a syncbridge Responder
		want      result
	}{
		{"default", false, nil, result{Correct: 20, ErrorsAsErrors: 10}},
		{"pinned", true, nil, result{Correct: 20, ErrorsAsErrors: 10}},
		// Replica 1's replies all come back right, replica 2's reach
		// replica 1 (misrouted) and never replica 2 (lost).
		{"pinned, wrong partition", true, wrongPartition, result{Correct: 5, Misrouted: 10, Lost: 10, Wrong: 5}},
		{"errors as successes", false, errorsAsSuccess, result{Correct: 10, Wrong: 10}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// In a bubble, time passes only when every goroutine waits: each
			// request answered is answered before its timeout, and each reply
			// misrouted is dropped before the last request gives up, however
			// busy the machine.
			synctest.Test(t, func(t *testing.T) {
				tr := &memory.Transport{Partitions: 3}
				defer tr.Close()
				if tc.responder == nil {
					r, err := syncbridge.NewResponder(context.Background(), tr, "req", echoOrFail)
					if err != nil {
						t.Fatal(err)
					}
					defer r.Close()
				} else {
					sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "req", Group: "g"}, tc.responder(tr))
					if err != nil {
						t.Fatal(err)
					}
					defer sub.Close()
				}
				c := goCase{peer: "memory", mode: "m", requestTopic: "req", replyTopic: "replies", pinned: tc.pinned, n: 20, window: 4, timeout: 200 * time.Millisecond,
					transport: func() (syncbridge.Transport, func(), error) { return tr, func() {}, nil }, nonce: "n"}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				got, err := c.run(ctx)
				if err != nil {
					t.Fatal(err)
				}
				tc.want.Peer, tc.want.Direction, tc.want.Mode, tc.want.Sent, tc.want.ErrorsSent = "memory", "go->memory", "m", 20, 10
				if got != tc.want {
					t.Errorf("got  %+v\nwant %+v", got, tc.want)
				}
				if got.ok() != (tc.responder == nil) {
					t.Errorf("ok() = %v", got.ok())
				}
			})
		})
	}
}
