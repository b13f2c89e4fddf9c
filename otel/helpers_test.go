package otel_test

import (
	"testing"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/otel/internal/tracecheck"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The test environment and the checks are in internal/tracecheck, shared
// with the trace test over Kafka (the nested module kafkatrace).
type env = tracecheck.Env

var (
	newEnv      = tracecheck.NewEnv
	checkTrace  = tracecheck.CheckTrace
	attrs       = tracecheck.Attrs
	points      = tracecheck.Points
	checkPoints = tracecheck.CheckPoints
)

// signal is a hook that tells a test that a reply was dropped or a request
// skipped: it runs after the Telemetry's hook, given after it.
type signal struct {
	dropped chan syncbridge.DropReason
	skipped chan syncbridge.SkipReason
}

func newSignal() *signal {
	return &signal{dropped: make(chan syncbridge.DropReason, 16), skipped: make(chan syncbridge.SkipReason, 16)}
}

func (s *signal) OnDroppedReply(r syncbridge.DropReason, _ *syncbridge.Message) { s.dropped <- r }
func (s *signal) OnSkippedRequest(r syncbridge.SkipReason, _ *syncbridge.Message, _ error) {
	s.skipped <- r
}
