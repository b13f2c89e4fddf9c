package kafka_test

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

// A Responder process killed with SIGKILL under load: the requests to its
// partitions fail until the group notices (the session timeout) and hands
// them to the other Responder; failures end within the session timeout
// plus 1 s of the kill. Real broker only: the Responders run in processes
// of their own (internal/sbresponder).
func TestResponderKill(t *testing.T) {
	e := newEnv(t)
	if !e.real {
		t.Skip("kills a Responder process: real broker only (kfake's crash simulation is TestResponderFailover)")
	}
	bin := filepath.Join(t.TempDir(), "sbresponder")
	if out, err := exec.Command("go", "build", "-o", bin, "./internal/sbresponder").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const parts = 6
	requests, replies := e.topic(t, parts), e.topic(t, parts)
	group := "kill-" + requests
	ctx := testCtx(t, 5*time.Minute)

	start := func(name string) *exec.Cmd {
		t.Helper()
		cmd := exec.Command(bin, "-brokers", strings.Join(e.brokers, ","), "-topic", requests, "-group", group, "-name", name)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || strings.TrimSpace(line) != "ready" {
			t.Fatalf("responder %s: %q, %v", name, line, err)
		}
		return cmd
	}
	victim := start("victim")
	start("survivor")
	b := newBridge(t, e.transport(t), syncbridge.WithReplyTopic(replies))
	for p := range int32(parts) { // both have joined and every partition answers
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		_, err := b.Request(rctx, syncbridge.Message{Topic: requests, Partition: p, UsePartition: true, Value: []byte("warm")})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}

	const timeout = 2 * time.Second
	type rec struct {
		start time.Time
		err   error
	}
	var (
		mu   sync.Mutex // protects recs
		recs []rec
		seq  atomic.Int64
		stop = make(chan struct{})
		wg   sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				payload := fmt.Sprint("req-", seq.Add(1))
				r := rec{start: time.Now()}
				rctx, cancel := context.WithTimeout(ctx, timeout)
				reply, err := b.Request(rctx, syncbridge.Message{Topic: requests, Value: []byte(payload)})
				cancel()
				if err == nil && string(reply.Value) != payload {
					err = fmt.Errorf("misrouted: %q", reply.Value)
				}
				r.err = err
				mu.Lock()
				recs = append(recs, r)
				mu.Unlock()
			}
		})
	}
	phase := func(d time.Duration) { // the scenario's own timing
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	phase(2 * time.Second) // steady load before the kill
	kill := time.Now()
	if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	phase(kafka.DefaultSessionTimeout + 5*time.Second)
	close(stop)
	wg.Wait()

	var n, failed int
	last := time.Duration(-1)
	for _, r := range recs {
		n++
		if r.err == nil {
			continue
		}
		failed++
		if d := r.start.Sub(kill); d > last {
			last = d
		}
	}
	bound := kafka.DefaultSessionTimeout + time.Second
	t.Logf("SIGKILL of one of two responder processes (session timeout %v): %d requests, %d failed, the last failed one started %v after the kill (bound %v)",
		kafka.DefaultSessionTimeout, n, failed, last.Round(10*time.Millisecond), bound)
	if last > bound {
		t.Errorf("requests still failed %v after the kill, want at most %v", last, bound)
	}
}
