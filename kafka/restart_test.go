package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

// The broker goes away and comes back on the same address with its data:
// Publish fails within its context meanwhile, and afterwards the same
// Transport publishes again and its subscriptions resume where they were.
func TestBrokerRestart(t *testing.T) {
	var (
		topic    = "restart"
		e        *env
		down, up func()
	)
	if newEnvIsReal() {
		// KAFKA_STOP_CMD and KAFKA_START_CMD stop and start the broker at
		// KAFKA_BROKERS, keeping its data (e.g. scripts/kafka stop|start).
		stopCmd, startCmd := os.Getenv("KAFKA_STOP_CMD"), os.Getenv("KAFKA_START_CMD")
		if stopCmd == "" || startCmd == "" {
			t.Skip("set KAFKA_STOP_CMD and KAFKA_START_CMD to restart the real broker")
		}
		e = newEnv(t)
		topic = e.topic(t, 4)
		run := func(cmd string) {
			t.Helper()
			if out, err := exec.Command("sh", "-c", cmd).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", cmd, err, out)
			}
		}
		down = func() { run(stopCmd) }
		up = func() { run(startCmd) }
	} else {
		dir, port := t.TempDir(), freePort(t)
		start := func() *kfake.Cluster {
			t.Helper()
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir), kfake.SeedTopics(4, topic))
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		c := start()
		defer func() { c.Close() }()
		e = &env{brokers: []string{fmt.Sprintf("127.0.0.1:%d", port)}}
		down = func() { c.Close() }
		up = func() { c = start() }
	}
	tr := e.transport(t, kafka.RetryBackoff(10*time.Millisecond, 200*time.Millisecond))
	ctx := testCtx(t, 180*time.Second)

	var bc collector
	bsub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic}, bc.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer bsub.Close()
	gc := newCounter()
	gsub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: topic, Group: "restart-" + topic}, gc.handler("g"))
	if err != nil {
		t.Fatal(err)
	}
	defer gsub.Close()

	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(0, 20)
	bc.waitFor(t, 20, 10*time.Second)
	gc.waitDistinct(t, 20, 30*time.Second)

	down()
	downCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	began := time.Now()
	err = tr.Publish(downCtx, syncbridge.Message{Topic: topic, Value: []byte("lost")})
	cancel()
	if err == nil {
		t.Fatal("Publish succeeded with the broker down")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "syncbridge/kafka: ") {
		t.Errorf("Publish with the broker down: %v, want a syncbridge/kafka error wrapping context.DeadlineExceeded", err)
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("Publish with a 300ms deadline took %v", took)
	}

	up()
	publish(20, 40)
	// "lost" may have been written when its error says maybe sent (the
	// connection took it before the broker's end was seen): the idempotent
	// producer then sends it again once the broker is back, once. Then 41
	// messages come.
	count := func(got []syncbridge.Message) map[string]int {
		seen := make(map[string]int)
		for _, m := range got {
			seen[string(m.Value)]++
		}
		return seen
	}
	seen := count(bc.waitFor(t, 40, 30*time.Second))
	if seen["lost"] > 0 {
		seen = count(bc.waitFor(t, 41, 30*time.Second))
		if errors.Is(err, syncbridge.ErrNotSent) {
			t.Errorf("a message whose Publish said not sent (%v) was delivered", err)
		}
		if n := seen["lost"]; n != 1 {
			t.Errorf("the maybe-sent message was delivered %d times, want once", n)
		}
	}
	for i := range 40 {
		if n := seen[strconv.Itoa(i)]; n != 1 {
			t.Errorf("broadcast delivered %d %d times, want once", i, n)
		}
	}
	gc.waitDistinct(t, 40, 30*time.Second)
}
