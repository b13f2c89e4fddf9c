package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// brokers returns the broker the tests run against: the real Kafka at
// KAFKA_BROKERS (CI), or an in-process kfake cluster.
func brokers(t *testing.T) string {
	if b := os.Getenv("KAFKA_BROKERS"); b != "" {
		return b
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return strings.Join(c.ListenAddrs(), ",")
}

var seq atomic.Int64

func topicName(t *testing.T, what string) string {
	return fmt.Sprintf("cli.%s.%d.%d", what, time.Now().UnixNano()%1e9, seq.Add(1))
}

// output is a concurrency-safe buffer that can wait for text.
type output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newOutput() *output { return &output{changed: make(chan struct{}, 1)} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	select {
	case o.changed <- struct{}{}:
	default:
	}
	return o.buf.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// await waits until the output contains s.
func (o *output) await(t *testing.T, s string) {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for !strings.Contains(o.String(), s) {
		select {
		case <-o.changed:
		case <-timeout:
			t.Fatalf("output never contained %q:\n%s", s, o.String())
		}
	}
}

// background runs a long-running command (respond, watch) until the test
// ends, and returns its output.
func background(t *testing.T, ready string, args ...string) *output {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := newOutput()
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, strings.NewReader(""), out, out) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("%v exited %d:\n%s", args, code, out)
		}
	})
	out.await(t, ready)
	return out
}

// cli runs a command to its end and returns its exit status and output.
func cli(t *testing.T, stdin string, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &out)
	return code, out.String()
}

// createTopic makes topic on b, as an operator would before running the tool.
func createTopic(t *testing.T, b, topic string) {
	t.Helper()
	tr, err := kafka.New(strings.Split(b, ","), kafka.CreateTopics(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("create")}); err != nil {
		t.Fatalf("creating %s: %v", topic, err)
	}
}

func TestRequestRespondWatch(t *testing.T) {
	b := brokers(t)
	req, replies := topicName(t, "req"), topicName(t, "rep")
	createTopic(t, b, req)
	createTopic(t, b, replies)
	conn := []string{"-brokers", b}
	background(t, "serving", append([]string{"respond", "-topic", req}, conn...)...)
	watched := background(t, "watching", append([]string{"watch", "-topic", req, "-reply-topic", replies}, conn...)...)

	code, out := cli(t, "", append([]string{"request", "-topic", req, "-reply-topic", replies, "-H", "trace=t1", "-timeout", "30s"}, append(conn, "hello")...)...)
	if code != 0 {
		t.Fatalf("request exited %d:\n%s", code, out)
	}
	for _, want := range []string{`value (5 bytes): "hello"`, "kafka_correlationId:", "round trip"} {
		if !strings.Contains(out, want) {
			t.Errorf("request output lacks %q:\n%s", want, out)
		}
	}
	// The watcher saw the request (its deadline decoded) and the reply.
	watched.await(t, "reply to ")
	for _, want := range []string{"syncbridge_deadline:", "trace: \"t1\"", `value (5 bytes): "hello"`} {
		if !strings.Contains(watched.String(), want) {
			t.Errorf("watch output lacks %q:\n%s", want, watched)
		}
	}
	if strings.Contains(watched.String(), "NOBODY WAITS") {
		t.Errorf("a reply its caller waited for was flagged:\n%s", watched)
	}
	// A reply nobody asked for is flagged.
	tr, err := kafka.New(strings.Split(b, ","))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := syncbridge.DefaultHeaderNames()
	if err := tr.Publish(ctx, syncbridge.Message{Topic: replies, Value: []byte("stray"), Headers: []syncbridge.Header{{Key: h.CorrelationID, Value: []byte("nobody-asked")}}}); err != nil {
		t.Fatal(err)
	}
	watched.await(t, `reply to "nobody-asked" (NOBODY WAITS`)

	// Stdin as the value, and a load figure.
	code, out = cli(t, "from stdin", append([]string{"request", "-topic", req, "-reply-topic", replies, "-count", "40", "-concurrency", "4", "-timeout", "30s"}, conn...)...)
	if code != 0 || !strings.Contains(out, "40 requests, 4 in flight: 40 ok, 0 failed") || !strings.Contains(out, "latency p50") {
		t.Errorf("load exited %d:\n%s", code, out)
	}
}

func TestRespondExec(t *testing.T) {
	b := brokers(t)
	req, replies := topicName(t, "req"), topicName(t, "rep")
	createTopic(t, b, req)
	createTopic(t, b, replies)
	conn := []string{"-brokers", b}
	background(t, "serving", append([]string{"respond", "-q", "-topic", req, "-exec", `v=$(cat); if [ "$v" = fail ]; then echo "no such item" >&2; exit 3; fi; echo "$v" | tr a-z A-Z`}, conn...)...)
	code, out := cli(t, "", append([]string{"request", "-topic", req, "-reply-topic", replies, "-timeout", "30s"}, append(conn, "shout")...)...)
	if code != 0 || !strings.Contains(out, `"SHOUT\n"`) {
		t.Errorf("request exited %d, want the command's stdout:\n%s", code, out)
	}
	code, out = cli(t, "", append([]string{"request", "-topic", req, "-reply-topic", replies, "-timeout", "30s"}, append(conn, "fail")...)...)
	if code != 1 || !strings.Contains(out, "remote error exit_3: no such item") || !strings.Contains(out, `"exit_3" (error reply)`) {
		t.Errorf("a failing command: exit %d, want 1 and the error reply exit_3:\n%s", code, out)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"request", "x"},
		{"request", "-topic", "t", "-count", "0", "x"},
		{"respond"},
		{"watch", "-topic", "t", "extra"},
		{"request", "-topic", "t", "-sasl", "kerberos", "x"},
		{"request", "-topic", "t", "-tls-cert", "c.pem", "x"},
		{"request", "-topic", "t", "-brokers", "no-port", "x"},
		{"request", "-nosuchflag"},
	} {
		if code, out := cli(t, "", args...); code != 2 {
			t.Errorf("%q: exit %d, want 2:\n%s", args, code, out)
		}
	}
	if code, out := cli(t, "", "help"); code != 0 || !strings.Contains(out, "request") {
		t.Errorf("help: exit %d:\n%s", code, out)
	}
}

// TestWatchReplyBeforeRequest: watch reads the request and reply topics
// apart, so a reply can come before its request; it waits for it (the
// grace period) and is not flagged, while one whose request never comes is
// flagged when the grace period ends.
func TestWatchReplyBeforeRequest(t *testing.T) {
	fs, c := newCommand("watch", io.Discard)
	if err := parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	out := newOutput()
	w := &watcher{c: c, out: out, grace: time.Hour, deadlines: make(map[string]time.Time), pending: make(map[string]*pendingReply)}
	defer w.stop()
	h := c.headers
	msg := func(id string) syncbridge.Message {
		return syncbridge.Message{Value: []byte("v"), Time: time.Now(), Headers: []syncbridge.Header{{Key: h.CorrelationID, Value: []byte(id)},
			{Key: h.Deadline, Value: strconv.AppendInt(nil, time.Now().Add(time.Hour).UnixMilli(), 10)}}}
	}
	requests, replies := w.handle(true), w.handle(false)
	replies(context.Background(), msg("first"))
	if s := out.String(); s != "" {
		t.Fatalf("a reply whose request was not seen yet printed at once:\n%s", s)
	}
	requests(context.Background(), msg("first"))
	out.await(t, `reply to "first"`)
	if s := out.String(); strings.Contains(s, "NOBODY WAITS") || strings.Index(s, "request ") > strings.Index(s, "reply to") {
		t.Errorf("a reply that came before its request, want the request then the reply, not flagged:\n%s", s)
	}
	w.grace = time.Nanosecond
	replies(context.Background(), msg("stray"))
	out.await(t, `reply to "stray" (NOBODY WAITS: no request with this correlation ID seen)`)
	// One still waiting when the watch ends is printed then, flagged.
	w.grace = time.Hour
	replies(context.Background(), msg("last"))
	w.stop()
	if s := out.String(); !strings.Contains(s, `reply to "last" (NOBODY WAITS: no request with this correlation ID seen)`) {
		t.Errorf("a reply waiting for its request when the watch ended was not printed:\n%s", s)
	}
}
