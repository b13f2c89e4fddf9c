package kafka

import (
	"slices"
	"testing"

	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/consumer"
)

// Assignments and subscriptions come from other clients of the group:
// whatever their bytes, decoding returns an error or a value, never a
// panic or a huge allocation.
func FuzzMemberDecode(f *testing.F) {
	a, _ := protocol.Marshal(consumer.MaxVersionSupported, consumer.Assignment{Version: 1, AssignedPartitions: []consumer.TopicPartition{{Topic: "t", Partitions: []int32{0, 2}}}})
	s, _ := protocol.Marshal(consumer.MaxVersionSupported, consumer.Subscription{Version: 1, Topics: []string{"t"}})
	f.Add(a)
	f.Add(s)
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0x7f, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeAssignment(b, "t")
		_, _ = decodeSubscription(b)
	})
}

// What kafka-go encodes (and the Java client, which writes the same
// fields first) decodes back; malformed bytes are an error.
func TestMemberDecode(t *testing.T) {
	b, err := protocol.Marshal(consumer.MaxVersionSupported, consumer.Assignment{Version: 1, AssignedPartitions: []consumer.TopicPartition{{Topic: "x", Partitions: []int32{9}}, {Topic: "t", Partitions: []int32{0, 2}}}, UserData: []byte("u")})
	if err != nil {
		t.Fatal(err)
	}
	parts, err := decodeAssignment(b, "t")
	if err != nil || !slices.Equal(parts, []int32{0, 2}) {
		t.Errorf("decodeAssignment = %v, %v, want [0 2]", parts, err)
	}
	b, err = protocol.Marshal(consumer.MaxVersionSupported, consumer.Subscription{Version: 1, Topics: []string{"a", "t"}, OwnedPartitions: []consumer.TopicPartition{{Topic: "t", Partitions: []int32{1}}}})
	if err != nil {
		t.Fatal(err)
	}
	topics, err := decodeSubscription(b)
	if err != nil || !slices.Equal(topics, []string{"a", "t"}) {
		t.Errorf("decodeSubscription = %v, %v, want [a t]", topics, err)
	}
	for _, bad := range [][]byte{{0, 1, 0x7f, 0xff, 0xff, 0xff}, {0, 1, 0, 0, 0, 1, 0, 5, 'a'}, {0}} {
		if _, err := decodeAssignment(bad, "t"); err == nil {
			t.Errorf("decodeAssignment(%v): no error", bad)
		}
	}
}
