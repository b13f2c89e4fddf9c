package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name    string
		brokers []string
		opts    []kafka.Option
	}{
		{"no brokers", nil, nil},
		{"address without port", []string{"localhost"}, nil},
		{"acks none", []string{"localhost:9092"}, []kafka.Option{kafka.RequiredAcks(0)}},
		{"tiny produce cap", []string{"localhost:9092"}, []kafka.Option{kafka.MaxProduceBytes(10)}},
		{"zero fetch wait", []string{"localhost:9092"}, []kafka.Option{kafka.FetchMaxWait(0)}},
		{"zero partitions", []string{"localhost:9092"}, []kafka.Option{kafka.CreateTopics(0, 1)}},
		{"heartbeat above session", []string{"localhost:9092"}, []kafka.Option{kafka.GroupTimeouts(time.Second, 2*time.Second, time.Second)}},
		{"bad backoff", []string{"localhost:9092"}, []kafka.Option{kafka.RetryBackoff(time.Second, time.Millisecond)}},
		{"bad scram", []string{"localhost:9092"}, []kafka.Option{kafka.SASLScram(7, "u", "p")}},
		{"unknown compression", []string{"localhost:9092"}, []kafka.Option{kafka.Compression(9)}},
		{"request timeout below fetch wait", []string{"localhost:9092"}, []kafka.Option{kafka.FetchMaxWait(5 * time.Second), kafka.RequestTimeout(2 * time.Second)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := kafka.New(tt.brokers, tt.opts...)
			if err == nil {
				_ = tr.Close()
				t.Fatal("New succeeded, want an error")
			}
			if !bytes.HasPrefix([]byte(err.Error()), []byte("syncbridge/kafka: ")) {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestRoundTripHeadersAndBinaryValues(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(t, 4)
	tr := e.transport(t)
	ctx := testCtx(t, 30*time.Second)

	var c collector
	sub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, c.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	want := []syncbridge.Message{
		{Topic: topic, Key: []byte("k1"), Value: binary, Headers: []syncbridge.Header{
			{Key: "kafka_correlationId", Value: []byte{0, 0xff, 0x10}},
			{Key: "dup", Value: []byte("first")},
			{Key: "dup", Value: []byte("second")},
			{Key: "empty", Value: []byte{}},
		}},
		{Topic: topic, Value: []byte{}},
		{Topic: topic, Key: []byte{0}, Value: nil},
	}
	for _, m := range want {
		if err := tr.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	got := c.waitFor(t, len(want), 10*time.Second)
	for _, w := range want {
		i := slices.IndexFunc(got, func(g syncbridge.Message) bool {
			return bytes.Equal(g.Key, w.Key) && bytes.Equal(g.Value, w.Value) && (g.Value == nil) == (w.Value == nil)
		})
		if i < 0 {
			t.Fatalf("message key=%q value=%q not delivered; got %+v", w.Key, w.Value, got)
		}
		g := got[i]
		if g.Topic != topic {
			t.Errorf("topic %q, want %q", g.Topic, topic)
		}
		if len(g.Headers) != len(w.Headers) {
			t.Fatalf("headers %+v, want %+v", g.Headers, w.Headers)
		}
		for j := range w.Headers {
			if g.Headers[j].Key != w.Headers[j].Key || !bytes.Equal(g.Headers[j].Value, w.Headers[j].Value) {
				t.Errorf("header %d = %q:%q, want %q:%q", j, g.Headers[j].Key, g.Headers[j].Value, w.Headers[j].Key, w.Headers[j].Value)
			}
		}
		if (g.Key == nil) != (w.Key == nil) {
			t.Errorf("key nil-ness: got %v, want %v", g.Key == nil, w.Key == nil)
		}
	}
}

func TestBroadcastStartsAtEnd(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(t, 4)
	tr := e.transport(t)
	ctx := testCtx(t, 30*time.Second)

	for i := range 20 {
		if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("before-" + strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	var c collector
	sub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, c.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	// A second Transport publishes right after Subscribe returned: nothing
	// may be missed.
	pub := e.transport(t)
	const n = 100
	for i := range n {
		if err := pub.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("after-" + strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	got := c.waitFor(t, n, 10*time.Second)
	seen := make(map[string]bool)
	for _, m := range got {
		if bytes.HasPrefix(m.Value, []byte("before-")) {
			t.Errorf("delivered %q, published before Subscribe", m.Value)
		}
		if seen[string(m.Value)] {
			t.Errorf("delivered %q twice", m.Value)
		}
		seen[string(m.Value)] = true
	}
	if len(seen) != n {
		t.Errorf("got %d distinct messages, want %d", len(seen), n)
	}
}

func TestUsePartition(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(t, 4)
	tr := e.transport(t)
	ctx := testCtx(t, 30*time.Second)

	var all, only2 collector
	s1, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, all.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	s2, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic, Partitions: []int32{2}}, only2.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()

	for p := range int32(4) {
		for i := range 5 {
			m := syncbridge.Message{Topic: topic, Key: []byte("any-key"), Value: fmt.Appendf(nil, "%d/%d", p, i), Partition: p, UsePartition: true}
			if err := tr.Publish(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, m := range all.waitFor(t, 20, 10*time.Second) {
		if want := fmt.Sprintf("%d/", m.Partition); !bytes.HasPrefix(m.Value, []byte(want)) {
			t.Errorf("message %q delivered from partition %d", m.Value, m.Partition)
		}
	}
	for _, m := range only2.waitFor(t, 5, 10*time.Second) {
		if m.Partition != 2 {
			t.Errorf("subscription to partition 2 got %q from partition %d", m.Value, m.Partition)
		}
	}

	err = tr.Publish(ctx, syncbridge.Message{Topic: topic, Partition: 9, UsePartition: true})
	if !errors.Is(err, kafka.ErrUnknownPartition) {
		t.Errorf("Publish to partition 9: %v, want ErrUnknownPartition", err)
	}
	_, err = tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic, Partitions: []int32{0, 9}}, all.handle)
	if !errors.Is(err, kafka.ErrUnknownPartition) {
		t.Errorf("Subscribe to partition 9: %v, want ErrUnknownPartition", err)
	}
	if all.len() != 20 || only2.len() != 5 {
		t.Errorf("got %d and %d messages, want 20 and 5", all.len(), only2.len())
	}
}

func TestKeyOrdering(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(t, 4)
	tr := e.transport(t)
	ctx := testCtx(t, 30*time.Second)

	var c collector
	sub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, c.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	const keys, perKey = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, keys)
	for k := range keys {
		wg.Go(func() {
			for i := range perKey {
				m := syncbridge.Message{Topic: topic, Key: []byte("key-" + strconv.Itoa(k)), Value: []byte(strconv.Itoa(i))}
				if err := tr.Publish(ctx, m); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := c.waitFor(t, keys*perKey, 10*time.Second)
	next := make(map[string]int)
	part := make(map[string]int32)
	for _, m := range got {
		k := string(m.Key)
		if p, ok := part[k]; ok && p != m.Partition {
			t.Errorf("key %s on partitions %d and %d", k, p, m.Partition)
		}
		part[k] = m.Partition
		if i, _ := strconv.Atoi(string(m.Value)); i != next[k] {
			t.Fatalf("key %s: got %d, want %d", k, i, next[k])
		}
		next[k]++
	}
	parts := make(map[int32]bool)
	for _, p := range part {
		parts[p] = true
	}
	if len(parts) < 2 {
		t.Errorf("%d keys all hashed to %d partition(s)", keys, len(parts))
	}
}

func TestKeylessSpread(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(t, 4)
	tr := e.transport(t)
	ctx := testCtx(t, 30*time.Second)
	var c collector
	sub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, c.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for range 40 {
		if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	count := make(map[int32]int)
	for _, m := range c.waitFor(t, 40, 10*time.Second) {
		count[m.Partition]++
	}
	for p := range int32(4) {
		if count[p] != 10 {
			t.Errorf("partition %d got %d of 40 keyless messages, want 10", p, count[p])
		}
	}
}

func TestConcurrentPublishBatches(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(t, 4)
	other := e.topic(t, 2)
	tr := e.transport(t, kafka.MaxProduceBytes(4096))
	ctx := testCtx(t, 30*time.Second)
	var c collector
	sub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, c.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var c2 collector
	sub2, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: other}, c2.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Close()

	const n = 2000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	value := bytes.Repeat([]byte("v"), 300) // forces several requests per batch
	for i := range n {
		wg.Go(func() {
			to := topic
			if i%4 == 0 {
				to = other
			}
			if err := tr.Publish(ctx, syncbridge.Message{Topic: to, Key: []byte(strconv.Itoa(i)), Value: value}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	c.waitFor(t, n*3/4, 20*time.Second)
	c2.waitFor(t, n/4, 20*time.Second)
}

func TestPublishContext(t *testing.T) {
	t.Run("cancelled", func(t *testing.T) {
		e := newEnv(t)
		topic := e.topic(t, 1)
		tr := e.transport(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("x")})
		if !errors.Is(err, context.Canceled) || !errors.Is(err, syncbridge.ErrNotSent) {
			t.Fatalf("Publish: %v, want context.Canceled and ErrNotSent", err)
		}
	})
	t.Run("unresponsive broker", func(t *testing.T) {
		// A listener that accepts connections and never answers.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var conns sync.WaitGroup
		conns.Go(func() {
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				held = append(held, c)
			}
		})
		defer conns.Wait()
		defer l.Close()

		tr, err := kafka.New([]string{l.Addr().String()})
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		for _, d := range []time.Duration{50 * time.Millisecond, 200 * time.Millisecond} {
			ctx, cancel := context.WithTimeout(context.Background(), d)
			start := time.Now()
			err = tr.Publish(ctx, syncbridge.Message{Topic: "t", Value: []byte("x")})
			took := time.Since(start)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Publish: %v, want context.DeadlineExceeded", err)
			}
			if took > d+100*time.Millisecond {
				t.Errorf("Publish with a %v deadline returned after %v", d, took)
			}
		}
	})
}

func TestUnknownTopic(t *testing.T) {
	e := newEnv(t)
	if e.real {
		t.Skip("a real broker may auto-create topics")
	}
	tr := e.transport(t)
	ctx := testCtx(t, 10*time.Second)
	err := tr.Publish(ctx, syncbridge.Message{Topic: "no.such.topic", Value: []byte("x")})
	if !errors.Is(err, kafka.ErrUnknownTopic) || !errors.Is(err, syncbridge.ErrNotSent) {
		t.Errorf("Publish: %v, want ErrUnknownTopic and ErrNotSent", err)
	}
	_, err = tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: "no.such.topic"}, func(context.Context, syncbridge.Message) {})
	if !errors.Is(err, kafka.ErrUnknownTopic) {
		t.Errorf("Subscribe: %v, want ErrUnknownTopic", err)
	}
}

func TestCreateTopics(t *testing.T) {
	e := newEnv(t)
	tr := e.transport(t, kafka.CreateTopics(3, 1))
	ctx := testCtx(t, 30*time.Second)
	topic := fmt.Sprintf("sb.created.%d", time.Now().UnixNano())
	var c collector
	sub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, c.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for p := range int32(3) {
		if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Partition: p, UsePartition: true}); err != nil {
			t.Fatal(err)
		}
	}
	c.waitFor(t, 3, 10*time.Second)
	err = tr.Publish(ctx, syncbridge.Message{Topic: topic, Partition: 3, UsePartition: true})
	if !errors.Is(err, kafka.ErrUnknownPartition) || !errors.Is(err, syncbridge.ErrNotSent) {
		t.Errorf("Publish to partition 3 of 3: %v, want ErrUnknownPartition and ErrNotSent", err)
	}
}

func TestCloseEndsEverything(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(t, 4)
	leaks := goleak.IgnoreCurrent()
	tr, err := kafka.New(e.brokers)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 30*time.Second)
	var b, g collector
	if _, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, b.handle); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic, Group: "close-" + topic}, g.handle); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	b.waitFor(t, 10, 10*time.Second)
	g.waitFor(t, 10, 30*time.Second)

	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := tr.Publish(ctx, syncbridge.Message{Topic: topic}); !errors.Is(err, syncbridge.ErrClosed) || !errors.Is(err, syncbridge.ErrNotSent) {
		t.Errorf("Publish after Close: %v, want ErrClosed and ErrNotSent", err)
	}
	if _, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, b.handle); !errors.Is(err, syncbridge.ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
	}
	goleak.VerifyNone(t, leaks)
}

func TestSASL(t *testing.T) {
	if newEnvIsReal() {
		t.Skip("SASL is tested on kfake only")
	}
	for _, tt := range []struct {
		method string
		opt    func(user, pass string) kafka.Option
	}{
		{"PLAIN", kafka.SASLPlain},
		{"SCRAM-SHA-256", func(u, p string) kafka.Option { return kafka.SASLScram(kafka.ScramSHA256, u, p) }},
		{"SCRAM-SHA-512", func(u, p string) kafka.Option { return kafka.SASLScram(kafka.ScramSHA512, u, p) }},
	} {
		t.Run(tt.method, func(t *testing.T) {
			e := newEnv(t, kfake.EnableSASL(), kfake.Superuser(tt.method, "admin", "secret"), kfake.SeedTopics(2, "sasl"))
			tr := e.transport(t, tt.opt("admin", "secret"))
			ctx := testCtx(t, 20*time.Second)
			var c collector
			sub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: "sasl"}, c.handle)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			if err := tr.Publish(ctx, syncbridge.Message{Topic: "sasl", Value: []byte("x")}); err != nil {
				t.Fatal(err)
			}
			c.waitFor(t, 1, 10*time.Second)

			bad := e.transport(t, tt.opt("admin", "wrong"))
			ctx2, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			if err := bad.Publish(ctx2, syncbridge.Message{Topic: "sasl", Value: []byte("x")}); err == nil {
				t.Error("Publish with a wrong password succeeded")
			}
		})
	}
}

func newEnvIsReal() bool { return os.Getenv("KAFKA_BROKERS") != "" }

// Broadcast subscriptions come and go on one Transport while messages
// flow: each one that subscribed receives what was published after it
// subscribed, and closing one does not disturb the others.
func TestBroadcastChurn(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(t, 4)
	tr := e.transport(t)
	ctx := testCtx(t, 60*time.Second)
	stop := make(chan struct{})
	var pubs sync.WaitGroup
	pubs.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte(strconv.Itoa(i))}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	var subs sync.WaitGroup
	for range 12 {
		subs.Go(func() {
			for range 5 {
				var c collector
				sub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, c.handle)
				if err != nil {
					t.Error(err)
					return
				}
				if err := c.await(3, 20*time.Second); err != nil {
					t.Error(err)
				}
				if err := sub.Close(); err != nil {
					t.Error(err)
				}
				n := c.len()
				if err := sub.Close(); err != nil {
					t.Error(err)
				}
				if c.len() != n {
					t.Error("delivery after Close returned")
				}
			}
		})
	}
	subs.Wait()
	close(stop)
	pubs.Wait()
}

func TestCompression(t *testing.T) {
	for name, c := range map[string]kafka.Codec{"gzip": kafka.Gzip, "snappy": kafka.Snappy, "lz4": kafka.LZ4, "zstd": kafka.Zstd} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			topic := e.topic(t, 2)
			tr := e.transport(t, kafka.Compression(c))
			ctx := testCtx(t, 30*time.Second)
			var col collector
			sub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, col.handle)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			value := bytes.Repeat([]byte("compressible "), 100)
			var wg sync.WaitGroup
			for i := range 50 {
				wg.Go(func() {
					m := syncbridge.Message{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: value, Headers: []syncbridge.Header{{Key: "i", Value: []byte(strconv.Itoa(i))}}}
					if err := tr.Publish(ctx, m); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			for _, m := range col.waitFor(t, 50, 10*time.Second) {
				if !bytes.Equal(m.Value, value) {
					t.Fatalf("value %.20q..., want %.20q...", m.Value, value)
				}
				if v, _ := m.Header("i"); string(v) != string(m.Key) {
					t.Errorf("header i = %q, key %q", v, m.Key)
				}
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex // protects b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLogger(t *testing.T) {
	e := newEnv(t)
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tr := e.transport(t, kafka.Logger(log), kafka.CreateTopics(1, 1))
	ctx := testCtx(t, 10*time.Second)
	topic := fmt.Sprintf("sb.logged.%d", time.Now().UnixNano())
	if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "created topic") {
		t.Errorf("log lacks the topic creation:\n%s", buf.String())
	}
}

// A broker's refusal that no retry can fix comes back at once, wrapped.
func TestPublishTooLarge(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(t, 1)
	tr := e.transport(t)
	ctx := testCtx(t, 20*time.Second)
	start := time.Now()
	err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: make([]byte, 3<<20)})
	if !errors.Is(err, kafka.MessageTooLarge) || !errors.Is(err, syncbridge.ErrNotSent) {
		t.Fatalf("Publish of 3 MiB: %v, want MessageSizeTooLarge and ErrNotSent", err)
	}
	if !strings.HasPrefix(err.Error(), "syncbridge/kafka: ") {
		t.Errorf("error %q lacks the package prefix", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v: a non-retriable error was retried", took)
	}
}
