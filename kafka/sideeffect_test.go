package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

// existingTopics asks the cluster which of names exist, without asking it
// to create any.
func existingTopics(t *testing.T, brokers []string, names []string) []string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrMetadataRequest()
	req.AllowAutoTopicCreation = false
	for _, n := range names {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(n)
		req.Topics = append(req.Topics, rt)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, rt := range res.Topics {
		if rt.ErrorCode == 0 && rt.Topic != nil {
			found = append(found, *rt.Topic)
		}
	}
	return found
}

// Topic names taken from input create nothing, even on a broker that
// creates topics on first use (auto.create.topics.enable=true): publishing
// to, or subscribing to, a topic that does not exist fails with
// ErrUnknownTopic, and a request naming a reply topic that does not exist
// makes the Responder's reply fail without creating the topic.
func TestNoTopicFromInput(t *testing.T) {
	// scripts/kafka's single broker has auto.create.topics.enable=true.
	e := newEnv(t, kfake.AllowAutoTopicCreation())
	tr := e.transport(t)
	ctx := testCtx(t, 60*time.Second)
	stamp := time.Now().UnixNano()

	// The transport itself.
	var names []string
	for i := range 3 {
		name := fmt.Sprintf("sb.none.publish.%d.%d", stamp, i)
		names = append(names, name)
		err := tr.Publish(ctx, syncbridge.Message{Topic: name, Value: []byte("x")})
		if !errors.Is(err, kafka.ErrUnknownTopic) || !errors.Is(err, syncbridge.ErrNotSent) {
			t.Errorf("Publish to %s: %v, want ErrUnknownTopic and ErrNotSent", name, err)
		}
	}
	sname := fmt.Sprintf("sb.none.subscribe.%d", stamp)
	names = append(names, sname)
	if _, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: sname}, func(context.Context, syncbridge.Message) {}); !errors.Is(err, kafka.ErrUnknownTopic) {
		t.Errorf("Subscribe to %s: %v, want ErrUnknownTopic", sname, err)
	}

	// A Responder given requests that name reply topics that do not exist.
	requests := e.topic(t, 1)
	r, err := syncbridge.NewResponder(ctx, tr, requests, echo)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := syncbridge.DefaultHeaderNames()
	const bogus = 9
	for i := range bogus {
		name := fmt.Sprintf("sb.none.reply.%d.%d", stamp, i)
		names = append(names, name)
		err := tr.Publish(ctx, syncbridge.Message{Topic: requests, Value: []byte("req"), Headers: []syncbridge.Header{
			{Key: h.CorrelationID, Value: fmt.Appendf(nil, "id-%d", i)},
			{Key: h.ReplyTopic, Value: []byte(name)},
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for r.Stats().ReplyFailed < bogus {
		select {
		case <-ctx.Done():
			t.Fatalf("responder stats %+v: not every reply failed", r.Stats())
		case <-tick.C:
		}
	}

	created := existingTopics(t, e.brokers, names)
	t.Logf("%d topic names from input (%d publishes, 1 subscribe, %d reply topics of requests): %d topics created %v; responder %+v",
		len(names), 3, bogus, len(created), created, r.Stats())
	if len(created) != 0 {
		t.Errorf("topics created from input: %v", created)
	}
}
