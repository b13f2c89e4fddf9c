package kafka_test

import (
	"testing"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/transporttest"
)

// TestConformance runs the transport conformance suite on kfake, or on the
// real broker at KAFKA_BROKERS.
func TestConformance(t *testing.T) {
	e := newEnv(t)
	transporttest.Run(t, transporttest.Setup{
		New:        func(t *testing.T) syncbridge.Transport { return e.transport(t) },
		Topic:      func(t *testing.T) string { return e.topic(t, 4) },
		Partitions: 4,
	})
}
