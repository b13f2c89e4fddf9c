package kafka_test

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/syncbridge/syncbridge"
)

// BenchmarkPublish measures one acknowledged publish at a time, against
// franz-go's ProduceSync with linger 0.
func BenchmarkPublish(b *testing.B) {
	e := newEnv(b)
	topic := e.topic(b, 4)
	b.Run("syncbridge", func(b *testing.B) {
		tr := e.transport(b)
		ctx := context.Background()
		for b.Loop() {
			if err := tr.Publish(ctx, syncbridge.Message{Topic: topic, Value: []byte("ping")}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("kgo", func(b *testing.B) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ProducerLinger(0))
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		ctx := context.Background()
		for b.Loop() {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("ping")}).FirstErr(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
