package kafkatrace_test

import (
	"testing"

	"github.com/syncbridge/syncbridge/kafka"
	"github.com/syncbridge/syncbridge/otel/internal/tracecheck"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The same trace over Kafka (an in-process kfake broker): the trace
// context travels in the records' headers, the process span has the
// record's partition and offset, and the request's send span ends when the
// broker acknowledged it (the transport publishes asynchronously).
func TestTraceAcrossKafka(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	tr, err := kafka.New(cluster.ListenAddrs(), kafka.CreateTopics(3, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	tracecheck.CheckTrace(t, tracecheck.NewEnv(t), tr, nil)
}
