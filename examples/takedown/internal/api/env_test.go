package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/api"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/contract"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/db"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/dbtest"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/items"
	"github.com/syncbridge/syncbridge/kafka"
	"github.com/syncbridge/syncbridge/memory"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const token = "test-token-0123456789"

// backend is a transport the end-to-end tests run on.
type backend struct {
	name string
	// open returns a new transport, closed when the test ends; the
	// transports of one backend within a test reach each other.
	open func(t *testing.T) syncbridge.Transport
	// timeout bounds a test's waits: Kafka needs longer than memory.
	timeout time.Duration
}

// backends returns the memory transport, an in-process kfake cluster and,
// when KAFKA_BROKERS is set, that real Kafka cluster.
func backends() []backend {
	bs := []backend{
		{name: "memory", open: openMemory, timeout: 10 * time.Second},
		{name: "kfake", open: openKfake, timeout: 30 * time.Second},
	}
	if b := os.Getenv("KAFKA_BROKERS"); b != "" {
		bs = append(bs, backend{name: "kafka", timeout: 60 * time.Second, open: func(t *testing.T) syncbridge.Transport {
			return openKafka(t, strings.Split(b, ","))
		}})
	}
	return bs
}

// forEachBackend runs f as a subtest on every backend.
func forEachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}

// openMemory returns the test's memory transport: one per test, shared by
// every open of that test.
func openMemory(t *testing.T) syncbridge.Transport {
	return shared(t, "memory", func() syncbridge.Transport {
		tr := &memory.Transport{}
		t.Cleanup(func() { _ = tr.Close() })
		return tr
	})
}

// openKfake returns a new Kafka transport to the test's kfake cluster,
// which the first open starts.
func openKfake(t *testing.T) syncbridge.Transport {
	c := shared(t, "kfake", func() *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	})
	return openKafka(t, c.ListenAddrs())
}

func openKafka(t *testing.T, brokers []string) syncbridge.Transport {
	tr, err := kafka.New(brokers, kafka.CreateTopics(4, 1), kafka.ClientID("takedown-test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

var (
	sharedMu sync.Mutex // protects sharedM
	sharedM  = map[string]any{}
)

// shared returns the value of key for t, made by mk on first use.
func shared[T any](t *testing.T, key string, mk func() T) T {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	k := t.Name() + "\x00" + key
	if v, ok := sharedM[k]; ok {
		return v.(T)
	}
	v := mk()
	sharedM[k] = v
	t.Cleanup(func() {
		sharedMu.Lock()
		defer sharedMu.Unlock()
		delete(sharedM, k)
	})
	return v
}

// setup says how to build an env.
type setup struct {
	maxTakedowns int           // 0 means the default
	maxReads     int           // 0 means the default
	syncTimeout  time.Duration // 0 means the backend's timeout
	callTimeout  time.Duration // 0 means twice the backend's timeout
	maxBody      int64         // 0 means the default
	dsn          string        // the database; "" means a new SQLite file
	// apiTransport, when set, wraps the transport the API replica uses.
	apiTransport func(syncbridge.Transport) syncbridge.Transport
}

// env is the API on a real HTTP server, with its Bridge, and the items
// service, on one backend.
type env struct {
	t         *testing.T
	b         backend
	url       string
	client    *http.Client
	topics    contract.Topics
	takedowns gate // blocks the items service's takedowns, by item
	reports   gate // blocks the items service's reports, by item
	audit     *syncBuffer
	events    *collector // the events topic
	server    *api.Server
	bridge    *syncbridge.Bridge
	db        *db.DB
	tr        syncbridge.Transport
	setup     setup
	// failTakedown, when it returns an error for a command, makes the
	// items service fail it with CodeUnavailable.
	failTakedown atomic.Pointer[func(contract.TakedownCommand) error]
}

func newEnv(t *testing.T, b backend, s setup) *env {
	t.Helper()
	e := &env{t: t, b: b, audit: &syncBuffer{}, events: newCollector()}
	e.takedowns.init(t)
	e.reports.init(t)
	e.topics = contract.DefaultTopics("t" + strings.ToLower(rand.Text()[:8]) + ".")
	tr := b.open(t)
	if s.dsn == "" {
		s.dsn = dbtest.SQLite(t)
	}
	e.setup = s
	e.tr = tr
	e.db = dbtest.Open(t, s.dsn)
	if _, err := items.Seed(t.Context(), e.db, 5); err != nil {
		t.Fatal(err)
	}

	svc, err := items.New(t.Context(), tr, items.Options{
		DB:     e.db,
		Topics: e.topics,
		Group:  e.topics.Takedowns + ".items",
		BeforeTakedown: func(ctx context.Context, cmd contract.TakedownCommand) error {
			if f := e.failTakedown.Load(); f != nil {
				if err := (*f)(cmd); err != nil {
					return err
				}
			}
			return e.takedowns.wait(ctx, cmd.ItemID)
		},
		BeforeReport: func(ctx context.Context, r contract.Report) error { return e.reports.wait(ctx, r.ItemID) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := svc.Close(); err != nil {
			t.Error(err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	sub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: e.topics.Events}, e.events.handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })

	apiTr := tr
	if s.apiTransport != nil {
		apiTr = s.apiTransport(tr)
	}
	e.bridge, e.server, e.url, e.client = newReplica(t, b, apiTr, e.db, e.topics, s, e.audit)
	return e
}

// replica is another API replica of an env, on its own Bridge and
// database pool, sharing the env's transport and database.
func (e *env) replica() (*api.Server, string) {
	srv, url, _ := e.replicaDB()
	return srv, url
}

// replicaDB is replica, which also returns the replica's database pool.
func (e *env) replicaDB() (*api.Server, string, *db.DB) {
	d := dbtest.Open(e.t, e.setup.dsn)
	_, srv, url, _ := newReplica(e.t, e.b, e.tr, d, e.topics, e.setup, e.audit)
	return srv, url, d
}

// newReplica starts an API replica on tr: Bridge, Server and HTTP server,
// closed in the reverse order when the test ends.
func newReplica(t *testing.T, b backend, tr syncbridge.Transport, d *db.DB, topics contract.Topics, s setup, audit io.Writer) (*syncbridge.Bridge, *api.Server, string, *http.Client) {
	t.Helper()
	br, err := syncbridge.New(t.Context(), tr, syncbridge.WithReplyTopic(topics.Replies))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = br.Close() })
	tokens, err := api.NewTokens("other-token", token)
	if err != nil {
		t.Fatal(err)
	}
	if s.syncTimeout == 0 {
		s.syncTimeout = b.timeout
	}
	if s.callTimeout == 0 {
		s.callTimeout = 2 * b.timeout
	}
	srv, err := api.New(api.Config{
		Bridge: br, Transport: tr, DB: d, Topics: topics, Tokens: tokens,
		Audit:       slog.New(slog.NewJSONHandler(audit, nil)),
		SyncTimeout: s.syncTimeout, QueryTimeout: b.timeout, CallTimeout: s.callTimeout, MaxBody: s.maxBody,
		MaxTakedowns: s.maxTakedowns, MaxReads: s.maxReads, PollInterval: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return br, srv, ts.URL, ts.Client()
}

// response is an HTTP response, read.
type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// str returns the body's string field key.
func (r *response) str(key string) string {
	s, _ := r.body[key].(string)
	return s
}

// do sends a request with the token (none when tok is "") and returns the
// response.
func (e *env) do(method, path, tok, body string) *response {
	e.t.Helper()
	return do(e.t, e.client, method, e.url+path, tok, body)
}

func do(t *testing.T, c *http.Client, method, url, tok, body string) *response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := &response{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if len(bytes.TrimSpace(raw)) > 0 && strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: body %q: %v", method, url, raw, err)
		}
	}
	return r
}

// want fails the test unless r has the status and the body fields.
func (r *response) want(t *testing.T, status int, fields map[string]string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.raw)
	}
	for k, v := range fields {
		if got := r.str(k); got != v {
			t.Errorf("%s = %q, want %q; body %s", k, got, v, r.raw)
		}
	}
}

// takedownBody returns a POST /v1/takedowns body.
func takedownBody(itemID string) string {
	return `{"item_id":"` + itemID + `","reason":"counterfeit goods","case_ref":"PJ-2025-0042"}`
}

// gate blocks the items service's handling of chosen items until the test
// releases them.
type gate struct {
	mu      sync.Mutex       // protects blocked
	blocked map[string]*hold // by item ID; each hold blocks once
}

// hold is one blocked handling.
type hold struct {
	entered chan struct{} // closed when the handling reached the gate
	release chan struct{} // closed by the test (or its end) to let it go
	once    sync.Once
}

// Release lets the blocked handling go on.
func (h *hold) Release() { h.once.Do(func() { close(h.release) }) }

func (g *gate) init(t *testing.T) {
	g.blocked = make(map[string]*hold)
	t.Cleanup(func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, h := range g.blocked {
			h.Release()
		}
	})
}

// block makes the next handling of itemID wait for Release. The test's end
// releases it, if the test did not.
func (g *gate) block(t *testing.T, itemID string) *hold {
	h := &hold{entered: make(chan struct{}), release: make(chan struct{})}
	g.mu.Lock()
	g.blocked[itemID] = h
	g.mu.Unlock()
	t.Cleanup(h.Release)
	return h
}

func (g *gate) wait(ctx context.Context, itemID string) error {
	g.mu.Lock()
	h := g.blocked[itemID]
	delete(g.blocked, itemID)
	g.mu.Unlock()
	if h == nil {
		return nil
	}
	close(h.entered)
	select {
	case <-h.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// await waits for ch to close, or fails the test after d.
func await(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// collector gathers the messages of a subscription.
type collector struct {
	mu   sync.Mutex // protects msgs
	msgs []syncbridge.Message
	more chan struct{} // closed and replaced on every message
}

func newCollector() *collector { return &collector{more: make(chan struct{})} }

func (c *collector) handle(_ context.Context, m syncbridge.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs = append(c.msgs, m)
	close(c.more)
	c.more = make(chan struct{})
}

// waitFor returns the first message for which ok holds, waiting for it up
// to d.
func (c *collector) waitFor(t *testing.T, d time.Duration, what string, ok func(*syncbridge.Message) bool) syncbridge.Message {
	t.Helper()
	timeout := time.After(d)
	seen := 0
	for {
		c.mu.Lock()
		msgs, more := c.msgs, c.more
		c.mu.Unlock()
		for ; seen < len(msgs); seen++ {
			if ok(&msgs[seen]) {
				return msgs[seen]
			}
		}
		select {
		case <-more:
		case <-timeout:
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use, whose writes a
// test can wait for.
type syncBuffer struct {
	mu      sync.Mutex // protects buf, changed
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed != nil {
		close(b.changed)
	}
	b.changed = make(chan struct{})
	return b.buf.Write(p)
}

// waitFor waits up to d until the buffer holds s.
func (b *syncBuffer) waitFor(t *testing.T, d time.Duration, s string) {
	t.Helper()
	timeout := time.After(d)
	for {
		b.mu.Lock()
		if b.changed == nil {
			b.changed = make(chan struct{})
		}
		found, changed := strings.Contains(b.buf.String(), s), b.changed
		b.mu.Unlock()
		if found {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("timed out after %v waiting for %q in:\n%s", d, s, b.buf.String())
		}
	}
}

// records returns the JSON log records written so far.
func (b *syncBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var recs []map[string]any
	for line := range strings.Lines(b.buf.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		recs = append(recs, m)
	}
	return recs
}
