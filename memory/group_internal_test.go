package memory

import (
	"context"
	"testing"

	"github.com/syncbridge/syncbridge"
)

// TestPartitionQueuesOnFirstUse: a consumer group that has seen only
// keyless messages has no partition queues; a keyed message makes its
// partition's queue, and only that one, and is delivered.
func TestPartitionQueuesOnFirstUse(t *testing.T) {
	tr := &Transport{Partitions: 4}
	defer tr.Close()
	got := make(chan string, 10)
	sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "t", Group: "g"}, func(_ context.Context, m syncbridge.Message) {
		got <- string(m.Value)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for range 5 {
		if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "t", Value: []byte("keyless")}); err != nil {
			t.Fatal(err)
		}
		<-got
	}
	tp, _ := tr.topic("t")
	g := (*tp.groups.Load())[0]
	queues := func() (made []int) {
		for p := range g.parts {
			if g.parts[p].q.Load() != nil {
				made = append(made, p)
			}
		}
		return made
	}
	if made := queues(); len(made) != 0 {
		t.Errorf("partition queues %v made by keyless messages, want none", made)
	}
	if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "t", Partition: 2, UsePartition: true, Value: []byte("p2")}); err != nil {
		t.Fatal(err)
	}
	if v := <-got; v != "p2" {
		t.Errorf("got %q, want p2", v)
	}
	if made := queues(); len(made) != 1 || made[0] != 2 {
		t.Errorf("partition queues %v made, want [2]", made)
	}
}
