package kafka_test

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

// On a three-broker cluster whose partition leaders move while messages
// flow, publishes are retried on the new leaders and subscriptions follow
// them: nothing is lost.
func TestLeaderMoves(t *testing.T) {
	if newEnvIsReal() {
		t.Skip("moves leaders on a kfake cluster")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(6, "moving"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e := &env{brokers: c.ListenAddrs()[:1], cluster: c}
	tr := e.transport(t, kafka.RetryBackoff(5*time.Millisecond, 100*time.Millisecond), kafka.MetadataMaxAge(200*time.Millisecond))
	ctx := testCtx(t, 60*time.Second)

	var bc collector
	bsub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: "moving"}, bc.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer bsub.Close()
	gc := newCounter()
	gsub, err := e.transport(t).Subscribe(ctx, syncbridge.SubscribeConfig{Topic: "moving", Group: "moving"}, gc.handler("g"))
	if err != nil {
		t.Fatal(err)
	}
	defer gsub.Close()

	const n = 600
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 6 {
		wg.Go(func() {
			for i := w; i < n; i += 6 {
				m := syncbridge.Message{Topic: "moving", Key: []byte(strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))}
				if err := tr.Publish(ctx, m); err != nil {
					errs <- fmt.Errorf("publish %d: %w", i, err)
					return
				}
				if i%100 == 0 {
					c.ShufflePartitionLeaders()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := bc.waitFor(t, n, 30*time.Second)
	seen := make(map[string]bool)
	for _, m := range got {
		seen[string(m.Value)] = true
	}
	if len(seen) != n {
		t.Errorf("broadcast got %d distinct messages, want %d", len(seen), n)
	}
	gc.waitDistinct(t, n, 30*time.Second)
	st := tr.Stats()
	t.Logf("stats %+v", st)
}
