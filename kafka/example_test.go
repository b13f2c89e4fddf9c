package kafka_test

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

// A Bridge and a Responder over Kafka (here an in-process kfake broker).
func Example() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		panic(err)
	}
	defer cluster.Close()

	// CreateTopics is for development: production topics exist beforehand.
	tr, err := kafka.New(cluster.ListenAddrs(), kafka.CreateTopics(4, 1))
	if err != nil {
		panic(err)
	}
	defer tr.Close()

	r, err := syncbridge.NewResponder(context.Background(), tr, "greetings", func(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		return syncbridge.Message{Value: append([]byte("hello, "), req.Value...)}, nil
	})
	if err != nil {
		panic(err)
	}
	defer r.Close()

	b, err := syncbridge.New(context.Background(), tr, syncbridge.WithReplyTopic("greetings.replies"))
	if err != nil {
		panic(err)
	}
	defer b.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reply, err := b.Request(ctx, syncbridge.Message{Topic: "greetings", Value: []byte("world")})
	if err != nil {
		panic(err)
	}
	fmt.Println(string(reply.Value))
	// Output: hello, world
}
