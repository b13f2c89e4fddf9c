package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if binDir != "" {
			os.RemoveAll(binDir)
		}
		os.Exit(code)
	}))
}

// TestRun starts the example as main does, on the memory transport and an
// SQLite file, takes an item down over HTTP, stops it, starts it again on
// the same file, and finds the takedown still there, answered the same.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "takedown.db")
	audit := filepath.Join(dir, "audit.log")
	p := start(t, env{}, "-addr", "127.0.0.1:0", "-audit", audit, "-db", dbPath)
	m := p.stdout.waitFor(t, `police API listening on (\S+)\nbearer token \(generated; set TAKEDOWN_TOKENS to choose\): (\S+)`)
	base, tok := m[1], m[2]
	p.stdout.waitFor(t, regexp.QuoteMeta("curl -i "+base+"/v1/takedowns")) // the banner's last lines
	if out := p.stdout.String(); !strings.Contains(out, "itm-1002") || !strings.Contains(out, "database SQLite file "+dbPath) {
		t.Errorf("banner lacks the items or the database:\n%s", out)
	}

	status, first := post(t, base+"/v1/takedowns", tok, `{"item_id":"itm-1002","reason":"counterfeit","case_ref":"PJ-1"}`)
	if status != http.StatusOK || first["status"] != "removed" {
		t.Fatalf("takedown: %d %v", status, first)
	}
	// The request-duration histogram of the Bridge (syncbridge/otel), for
	// Prometheus.
	metrics := scrape(t, base+"/metrics")
	for _, want := range []string{
		`messaging_client_operation_duration_seconds_bucket{`,
		`messaging_operation_name="request"`,
		`messaging_destination_name="takedown.commands"`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics after a takedown lacks %s:\n%s", want, metrics)
		}
	}
	status, _ = post(t, base+"/v1/takedowns", "wrong", `{"item_id":"itm-1001","reason":"r","case_ref":"c"}`)
	if status != http.StatusUnauthorized {
		t.Fatalf("takedown with a wrong token: %d", status)
	}

	p.stop(t, exitOK)
	if !strings.HasSuffix(p.stdout.String(), "stopped\n") {
		t.Errorf("stdout does not end with stopped:\n%s", p.stdout.String())
	}
	b, err := os.ReadFile(audit)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(b); !strings.Contains(s, `"outcome":"removed"`) || !strings.Contains(s, `"outcome":"unauthorized"`) || strings.Contains(s, tok) {
		t.Errorf("audit log:\n%s", s)
	}

	// Again, on the same database: nothing is undone.
	p = start(t, env{"TAKEDOWN_TOKENS": tok}, "-addr", "127.0.0.1:0", "-audit", os.DevNull, "-db", dbPath)
	base = p.stdout.waitFor(t, `police API listening on (\S+)`)[1]
	if !strings.Contains(p.stdout.String(), "5 items seeded (0 new)") {
		t.Errorf("banner after the restart:\n%s", p.stdout.String())
	}
	status, again := get(t, base+"/v1/takedowns/"+first["takedown_id"].(string), tok)
	if status != http.StatusOK || fmt.Sprint(again) != fmt.Sprint(first) {
		t.Errorf("after the restart: %d %v; first answer %v", status, again, first)
	}
	if status, it := get(t, base+"/v1/items/itm-1002", ""); status != http.StatusOK || it["taken_down"] != true || it["takedown_id"] != first["takedown_id"] {
		t.Errorf("item after the restart: %d %v", status, it)
	}
	status, second := post(t, base+"/v1/takedowns", tok, `{"item_id":"itm-1002","reason":"counterfeit","case_ref":"PJ-1"}`)
	if status != http.StatusOK || second["status"] != "already_removed" || second["removed_by"] != first["takedown_id"] {
		t.Errorf("takedown after the restart: %d %v", status, second)
	}
	p.stop(t, exitOK)
}

// TestRunStopsPending: a stop does not wait for a takedown answered 202
// longer than -shutdown-timeout, and exits 0; the takedown stays pollable
// after a restart, and says what became of it: the command, dropped with
// the in-process transport, expired unapplied.
func TestRunStopsPending(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "takedown.db")
	p := start(t, env{"TAKEDOWN_TOKENS": " ,tok-a, tok-b"},
		"-addr", "127.0.0.1:0", "-db", dbPath, "-items-delay", "1h", "-sync-timeout", "10ms", "-call-timeout", "500ms", "-shutdown-timeout", "50ms")
	m := p.stdout.waitFor(t, `police API listening on (\S+)\nbearer tokens: (tok-\w+), (tok-\w+), from TAKEDOWN_TOKENS`)
	status, body := post(t, m[1]+"/v1/takedowns", "tok-b", `{"item_id":"itm-1003","reason":"animal welfare","case_ref":"PJ-2"}`)
	if status != http.StatusAccepted || body["status"] != "pending" {
		t.Fatalf("takedown: %d %v", status, body)
	}
	p.stop(t, exitOK)
	if s := p.stderr.String(); !strings.Contains(s, `"outcome":"accepted"`) || !strings.Contains(s, `"token_id":"`+m[3]+`"`) {
		t.Errorf("stderr lacks the audit of the accepted takedown:\n%s", s)
	}

	p = start(t, env{"TAKEDOWN_TOKENS": "tok-b"}, "-addr", "127.0.0.1:0", "-db", dbPath)
	base := p.stdout.waitFor(t, `police API listening on (\S+)`)[1]
	status, res := get(t, base+"/v1/takedowns/"+body["takedown_id"].(string)+"?wait=30s", "tok-b")
	if status != http.StatusGatewayTimeout || res["error"] != "expired" || res["status"] != "failed" {
		t.Errorf("poll after the restart: %d %v; want 504 expired", status, res)
	}
	if status, it := get(t, base+"/v1/items/itm-1003", ""); status != http.StatusOK || it["taken_down"] != false {
		t.Errorf("item: %d %v; want not taken down", status, it)
	}
	p.stop(t, exitOK)
}

// TestRunFlags checks that bad flags and configuration fail at start-up.
func TestRunFlags(t *testing.T) {
	tests := []struct {
		name string
		env  env
		args []string
		want int
	}{
		{"help", nil, []string{"-h"}, exitOK},
		{"unknown flag", nil, []string{"-port", "80"}, exitUsage},
		{"extra argument", nil, []string{"serve"}, exitUsage},
		{"bad role", nil, []string{"-role", "proxy"}, exitUsage},
		{"api without brokers", nil, []string{"-role", "api"}, exitUsage},
		{"items without brokers", nil, []string{"-role", "items"}, exitUsage},
		{"zero sync timeout", nil, []string{"-sync-timeout", "0s"}, exitUsage},
		{"call timeout below sync timeout", nil, []string{"-sync-timeout", "5s", "-call-timeout", "1s"}, exitUsage},
		{"negative delay", nil, []string{"-items-delay", "-1s"}, exitUsage},
		{"negative seed", nil, []string{"-seed", "-1"}, exitUsage},
		{"huge seed", nil, []string{"-seed", "100000000"}, exitUsage},
		{"no database", nil, []string{"-db", ""}, exitUsage},
		{"no takedowns admitted", nil, []string{"-max-takedowns", "0"}, exitUsage},
		{"no reads admitted", nil, []string{"-max-reads", "0"}, exitUsage},
		{"bad database URL", nil, []string{"-db", "postgres://nobody@127.0.0.1:1/x?connect_timeout=1"}, exitError},
		{"only empty tokens", env{"TAKEDOWN_TOKENS": " , "}, []string{"-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "a.db")}, exitError},
		{"bad address", nil, []string{"-addr", "256.0.0.1:80", "-db", filepath.Join(t.TempDir(), "b.db")}, exitError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut syncBuffer
			got := run(t.Context(), tt.args, tt.env.get, &out, &errOut)
			if got != tt.want {
				t.Errorf("run(%q) = %d, want %d; stderr:\n%s", tt.args, got, tt.want, errOut.String())
			}
		})
	}
}

// TestRunReplicas runs the example as separate roles against one Kafka
// cluster and one SQLite file, as separate processes would: two
// items-service instances and two API replicas. Takedowns through either
// replica all succeed, and the instances share the work. It runs on kfake,
// and on the real cluster at KAFKA_BROKERS when set.
func TestRunReplicas(t *testing.T) {
	clusters := map[string]func(t *testing.T) string{
		"kfake": func(t *testing.T) string {
			c, err := kfake.NewCluster(kfake.NumBrokers(1))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			return strings.Join(c.ListenAddrs(), ",")
		},
	}
	if b := os.Getenv("KAFKA_BROKERS"); b != "" {
		clusters["kafka"] = func(*testing.T) string { return b }
	}
	for name, cluster := range clusters {
		t.Run(name, func(t *testing.T) {
			brokers := cluster(t)
			prefix := "t" + strings.ToLower(rand.Text()[:8]) + "."
			e := env{"TAKEDOWN_TOKENS": "tok-a,tok-b"}
			common := []string{"-brokers", brokers, "-topic-prefix", prefix, "-db", filepath.Join(t.TempDir(), "takedown.db"), "-audit", os.DevNull}
			var apis []string
			var instances []*proc
			for range 2 {
				p := start(t, e, append(common, "-role", "items", "-log-level", "debug")...)
				p.stdout.waitFor(t, `items service running`)
				instances = append(instances, p)
			}
			// Wait until the second instance has its share of the takedown
			// commands' partitions: the consumer group rebalanced.
			instances[1].stderr.waitFor(t, `joined generation" group=\S+\.takedowns .*assignments=[1-9]`)
			for range 2 {
				p := start(t, e, append(common, "-role", "api", "-addr", "127.0.0.1:0", "-sync-timeout", "20s")...)
				apis = append(apis, p.stdout.waitFor(t, `police API listening on (\S+)`)[1])
			}
			items := []string{"itm-1001", "itm-1002", "itm-1003", "itm-1004", "itm-1005"}
			for round, want := range []string{"removed", "already_removed"} {
				var wg sync.WaitGroup
				for i, item := range items {
					wg.Go(func() {
						base := apis[(i+round)%len(apis)]
						status, body := post(t, base+"/v1/takedowns", "tok-a", `{"item_id":"`+item+`","reason":"r","case_ref":"c"}`)
						if status != http.StatusOK {
							t.Errorf("round %d: %s via %s: %d %v", round, item, base, status, body)
							return
						}
						if got := body["status"]; got != want {
							t.Errorf("round %d: %s via %s: status %v, want %s", round, item, base, got, want)
						}
					})
				}
				wg.Wait()
			}
			for i, p := range instances {
				n := strings.Count(p.stderr.String(), `msg="item taken down"`)
				t.Logf("items-service instance %d applied %d takedowns", i, n)
				if n == 0 {
					// The 5 items hash to partitions in both halves of 8.
					t.Errorf("items-service instance %d applied no takedown: the group did not share the work", i)
				}
			}
		})
	}
}

// env is the environment run sees.
type env map[string]string

func (e env) get(k string) string { return e[k] }

// proc is run, running in a goroutine as if in its own process.
type proc struct {
	cancel context.CancelFunc
	done   chan int
	stdout *syncBuffer
	stderr *syncBuffer
}

// start runs run with args until stop or the end of the test.
func start(t *testing.T, e env, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{cancel: cancel, done: make(chan int, 1), stdout: newSyncBuffer(), stderr: newSyncBuffer()}
	go func() { p.done <- run(ctx, args, e.get, p.stdout, p.stderr) }()
	t.Cleanup(func() { p.stop(t, -1) })
	return p
}

// stop cancels run's context, as a signal would, and checks its exit
// code, unless want is -1. It may be called again.
func (p *proc) stop(t *testing.T, want int) {
	t.Helper()
	p.cancel()
	select {
	case code, ok := <-p.done:
		if ok {
			close(p.done)
		}
		if ok && want >= 0 && code != want {
			t.Errorf("run returned %d, want %d; stderr:\n%s", code, want, p.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("run did not return after its context ended; stderr:\n%s", p.stderr.String())
	}
}

// scrape GETs a Prometheus /metrics page.
func scrape(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", url, res.StatusCode, err)
	}
	return string(raw)
}

// post POSTs body with the bearer token and returns the status and the
// decoded JSON body.
func post(t *testing.T, url, tok, body string) (int, map[string]any) {
	t.Helper()
	return send(t, http.MethodPost, url, tok, body)
}

// get GETs url with the bearer token (none if "") and returns the status
// and the decoded JSON body.
func get(t *testing.T, url, tok string) (int, map[string]any) {
	t.Helper()
	return send(t, http.MethodGet, url, tok, "")
}

func send(t *testing.T, method, url, tok, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Minute}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s %s: %d %q: %v", method, url, res.StatusCode, raw, err)
	}
	return res.StatusCode, m
}

// syncBuffer collects what run writes, safely for concurrent use, and lets
// a test wait for some output.
type syncBuffer struct {
	mu      sync.Mutex // protects buf, changed
	buf     strings.Builder
	changed chan struct{} // closed and replaced on every write
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{})} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if b.changed != nil {
		close(b.changed)
		b.changed = make(chan struct{})
	}
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the output matches the regular expression, and
// returns the match and its groups.
func (b *syncBuffer) waitFor(t *testing.T, expr string) []string {
	t.Helper()
	re := regexp.MustCompile(expr)
	timeout := time.After(30 * time.Second)
	for {
		b.mu.Lock()
		m, changed := re.FindStringSubmatch(b.buf.String()), b.changed
		b.mu.Unlock()
		if m != nil {
			return m
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("no output matching %q after 30s; got:\n%s", expr, b.String())
		}
	}
}
