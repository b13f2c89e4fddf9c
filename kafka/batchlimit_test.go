package kafka_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

// Batches respect the topic's max.message.bytes: on a topic limited to
// 10 kB, thousands of concurrent small messages all succeed; a single
// record over the limit fails alone, with an error that says so, and the
// rest of its batch is written.
func TestBatchesFitTopic(t *testing.T) {
	e := newEnv(t)
	const limit = 10240
	topic := e.topicWith(t, 1, map[string]string{"max.message.bytes": fmt.Sprint(limit)})
	tr := e.transport(t)
	ctx := testCtx(t, 60*time.Second)
	var c collector
	sub, err := e.transport(t).Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, c.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	t.Run("small", func(t *testing.T) {
		const n = 3000
		var wg sync.WaitGroup
		errs := make(chan error, n)
		before := tr.Stats()
		value := bytes.Repeat([]byte("v"), 100)
		for range n {
			wg.Add(1)
			tr.PublishAsync(ctx, syncbridge.Message{Topic: topic, Value: value}, func(err error) {
				if err != nil {
					errs <- err
				}
				wg.Done()
			})
		}
		wg.Wait()
		close(errs)
		failed := 0
		for err := range errs {
			if failed == 0 {
				t.Errorf("publish: %v", err)
			}
			failed++
		}
		st := tr.Stats()
		t.Logf("%d concurrent 100-byte messages to a topic with max.message.bytes=%d: %d failed, %d produce requests", n, limit, failed, st.ProduceRequests-before.ProduceRequests)
		c.waitFor(t, n, 30*time.Second)
	})

	t.Run("one too large", func(t *testing.T) {
		base := c.len()
		// Hold the produce loop on a first message, so that the large one
		// and twenty small ones queue up and leave in one request.
		var h *holder
		if e.cluster != nil {
			held := make(chan struct{})
			h = e.holder(t)
			var once sync.Once
			e.cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
				once.Do(func() { close(held) })
				h.hold()
				return nil, nil, false
			})
			tr.PublishAsync(ctx, syncbridge.Message{Topic: topic, Value: []byte("first")}, func(error) {})
			<-held
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		errs := make(map[string]error)
		publish := func(name string, size int) {
			wg.Add(1)
			tr.PublishAsync(ctx, syncbridge.Message{Topic: topic, Value: append([]byte(name+":"), bytes.Repeat([]byte("x"), size)...)}, func(err error) {
				mu.Lock()
				errs[name] = err
				mu.Unlock()
				wg.Done()
			})
		}
		for i := range 10 {
			publish(fmt.Sprint("small-", i), 100)
		}
		publish("large", 2*limit)
		for i := 10; i < 20; i++ {
			publish(fmt.Sprint("small-", i), 100)
		}
		if h != nil {
			h.release()
		}
		wg.Wait()
		bigErr := errs["large"]
		t.Logf("the 20 kB message: %v", bigErr)
		if !errors.Is(bigErr, kafka.MessageTooLarge) || !errors.Is(bigErr, syncbridge.ErrNotSent) {
			t.Errorf("the 20 kB message: %v, want MessageSizeTooLarge and ErrNotSent", bigErr)
		}
		if bigErr != nil && !strings.Contains(bigErr.Error(), "max.message.bytes is 10240") {
			t.Errorf("the error does not name the limit: %v", bigErr)
		}
		failed := 0
		for name, err := range errs {
			if name != "large" && err != nil {
				failed++
				t.Errorf("%s: %v", name, err)
			}
		}
		want := base + 20
		if e.cluster != nil {
			want++ // "first"
		}
		got := c.waitFor(t, want, 30*time.Second)
		t.Logf("with it in the same batch: %d of 20 small messages failed, %d delivered", failed, len(got)-base)
		for _, m := range got[base:] {
			if bytes.HasPrefix(m.Value, []byte("large:")) {
				t.Errorf("the too large message was delivered")
			}
		}
	})
}
