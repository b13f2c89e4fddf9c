package memory_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
	"github.com/syncbridge/syncbridge/transporttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var topics atomic.Int64

func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Setup{
		New: func(t *testing.T) syncbridge.Transport {
			tr := &memory.Transport{Partitions: 4}
			t.Cleanup(func() { tr.Close() })
			return tr
		},
		Topic:      func(*testing.T) string { return fmt.Sprintf("topic-%d", topics.Add(1)) },
		Partitions: 4,
	})
}
