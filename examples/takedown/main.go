package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	promexp "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/api"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/contract"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/db"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/items"
	"github.com/syncbridge/syncbridge/kafka"
	"github.com/syncbridge/syncbridge/memory"
	sbotel "github.com/syncbridge/syncbridge/otel"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes of run.
const (
	exitOK    = 0 // stopped by ctx (a signal), cleanly
	exitError = 1 // start-up or serving failed
	exitUsage = 2 // bad flags
)

// config is what the flags say.
type config struct {
	addr            string
	role            string
	brokers         []string
	createTopics    bool
	topicPrefix     string
	replyTopic      string
	syncTimeout     time.Duration
	callTimeout     time.Duration
	itemsDelay      time.Duration
	maxTakedowns    int
	maxReads        int
	dbName          string
	seed            int
	auditPath       string
	shutdownTimeout time.Duration
	logLevel        slog.Level
}

// Roles.
const (
	roleAll   = "all"
	roleAPI   = "api"
	roleItems = "items"
)

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	var brokers string
	fs := flag.NewFlagSet("takedown", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: takedown [flags]\n\nThe police takedown API and the items service of the syncbridge takedown example.\nEnvironment: TAKEDOWN_TOKENS, comma-separated bearer tokens (default: one generated and printed).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "HTTP listen `address` of the API")
	fs.StringVar(&c.role, "role", roleAll, "what to run: all (API and items service), api, or items; api and items need -brokers")
	fs.StringVar(&brokers, "brokers", "", "Kafka bootstrap `host:port[,...]`; empty runs on the in-process memory transport")
	fs.BoolVar(&c.createTopics, "create-topics", true, "with -brokers, create missing topics (8 partitions, replication factor 1): for development")
	fs.StringVar(&c.topicPrefix, "topic-prefix", "", "`prefix` of every topic name, so that deployments can share a cluster")
	fs.StringVar(&c.replyTopic, "reply-topic", "", "reply `topic` of this API replica's Bridge (default: prefix + takedown.replies, shared by replicas)")
	fs.DurationVar(&c.syncTimeout, "sync-timeout", api.DefaultSyncTimeout, "how long a takedown waits for confirmation before the API answers 202 Accepted")
	fs.DurationVar(&c.callTimeout, "call-timeout", api.DefaultCallTimeout, "how long a takedown accepted with 202 stays alive, waiting for its confirmation")
	fs.DurationVar(&c.itemsDelay, "items-delay", 0, "make the items service take this long per takedown (try 5s to see the 202 path)")
	fs.IntVar(&c.maxTakedowns, "max-takedowns", api.DefaultMaxTakedowns, "takedowns in progress before the API answers 503, sending nothing")
	fs.IntVar(&c.maxReads, "max-reads", api.DefaultMaxReads, "reads and reports in progress before the API answers them 503")
	fs.StringVar(&c.dbName, "db", "takedown.db", "the database: an SQLite file `path`, or a postgres:// URL")
	fs.IntVar(&c.seed, "seed", 5, "items service: make sure the first `N` items of the sample catalogue exist (itm-1001, itm-1002, ...)")
	fs.StringVar(&c.auditPath, "audit", "", "append a JSON copy of the audit trail to this `file` (default: stderr; the database has it all the same)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a stop waits for requests in flight")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "`level` of the service log on stderr: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for b := range strings.SplitSeq(brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			c.brokers = append(c.brokers, b)
		}
	}
	switch {
	case c.role != roleAll && c.role != roleAPI && c.role != roleItems:
		return c, fmt.Errorf("-role %q: want all, api or items", c.role)
	case c.role != roleAll && len(c.brokers) == 0:
		return c, fmt.Errorf("-role %s needs -brokers: on the memory transport the API and the items service share one process (-role all)", c.role)
	case c.syncTimeout <= 0 || c.callTimeout < c.syncTimeout:
		return c, errors.New("-sync-timeout must be positive and -call-timeout at least as long")
	case c.maxTakedowns <= 0 || c.maxReads <= 0 || c.itemsDelay < 0 || c.shutdownTimeout <= 0:
		return c, errors.New("-items-delay must not be negative; -max-takedowns, -max-reads, -shutdown-timeout must be positive")
	case c.seed < 0 || c.seed > items.MaxSeed:
		return c, fmt.Errorf("-seed %d: want 0 to %d", c.seed, items.MaxSeed)
	case c.dbName == "":
		return c, errors.New("-db must name a database")
	}
	if c.replyTopic == "" {
		c.replyTopic = contract.DefaultTopics(c.topicPrefix).Replies
	}
	return c, nil
}

// closer is a Transport that run must close.
type closer interface {
	syncbridge.Transport
	Close() error
}

// openTransport returns the memory transport, or the Kafka one when
// brokers are given, and its description.
func openTransport(c config, log *slog.Logger) (closer, string, error) {
	if len(c.brokers) == 0 {
		return &memory.Transport{}, "memory transport (in-process)", nil
	}
	opts := []kafka.Option{kafka.ClientID("syncbridge-takedown"), kafka.Logger(log)}
	if c.createTopics {
		opts = append(opts, kafka.CreateTopics(8, 1))
	}
	t, err := kafka.New(c.brokers, opts...)
	if err != nil {
		return nil, "", err
	}
	return t, "Kafka at " + strings.Join(c.brokers, ","), nil
}

// run runs the example until ctx ends, then stops it gracefully, and
// returns the exit code. args are the command-line flags; getenv reads
// TAKEDOWN_TOKENS; stdout gets the start-up banner; stderr the logs and,
// without -audit, the audit log.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "takedown:", err)
		return exitUsage
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: c.logLevel}))
	if err := serve(ctx, c, getenv, stdout, stderr, logger); err != nil {
		logger.Error("takedown: " + err.Error())
		return exitError
	}
	return exitOK
}

// serve starts what c.role says, waits for ctx, and stops it all.
func serve(ctx context.Context, c config, getenv func(string) string, stdout, stderr io.Writer, logger *slog.Logger) (err error) {
	topics := contract.DefaultTopics(c.topicPrefix)
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	d, err := db.Open(octx, c.dbName)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.Close()) }()
	t, desc, err := openTransport(c, logger)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, t.Close()) }()
	fmt.Fprintf(stdout, "takedown example: role %s on the %s, database %s\n", c.role, desc, d)

	if c.role != roleAPI {
		n, err := items.Seed(octx, d, c.seed)
		if err != nil {
			return err
		}
		var svc *items.Service
		err = retryUnknownTopic(ctx, logger, func() (err error) {
			svc, err = items.New(octx, t, items.Options{DB: d, Topics: topics, Group: c.topicPrefix + items.DefaultGroup, Delay: c.itemsDelay, Logger: logger})
			return err
		})
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, svc.Close()) }()
		printItems(stdout, c.seed, n, c.itemsDelay)
	}
	if c.role == roleItems {
		fmt.Fprintln(stdout, "items service running; stop with Ctrl-C")
		<-ctx.Done()
		fmt.Fprintln(stdout, "stopping")
		return nil
	}
	return serveAPI(ctx, c, t, d, topics, getenv, stdout, stderr, logger)
}

// retryUnknownTopic calls start until it succeeds, fails otherwise than
// with kafka.ErrUnknownTopic, has failed 10 times, or ctx ends. Processes
// started together on a fresh cluster race to create the topics, and the
// loser may not see the topic the winner just created.
func retryUnknownTopic(ctx context.Context, log *slog.Logger, start func() error) error {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := start()
		if err == nil || !errors.Is(err, kafka.ErrUnknownTopic) || attempt == 10 {
			return err
		}
		log.Warn("takedown: topic not ready, retrying", "attempt", attempt, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// serveAPI runs the police API on t until ctx ends, then shuts down the
// HTTP server, the Bridge and the API in that order.
func serveAPI(ctx context.Context, c config, t syncbridge.Transport, d *db.DB, topics contract.Topics, getenv func(string) string, stdout, stderr io.Writer, logger *slog.Logger) (err error) {
	tokens, generated, err := loadTokens(getenv)
	if err != nil {
		return err
	}
	auditOut := stderr
	if c.auditPath != "" {
		var f *os.File
		f, err = os.OpenFile(c.auditPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("audit log: %w", err)
		}
		defer func() { err = errors.Join(err, f.Close()) }()
		auditOut = f
	}
	audit := slog.New(slog.NewJSONHandler(auditOut, nil)).With("log", "audit")

	// Metrics: OpenTelemetry instruments on the Bridge (syncbridge/otel),
	// exported for Prometheus at /metrics, on a registry of this server's
	// own.
	promReg := prometheus.NewRegistry()
	exp, err := promexp.New(promexp.WithRegisterer(promReg))
	if err != nil {
		return err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	defer func() { err = errors.Join(err, mp.Shutdown(context.Background())) }()
	tel := sbotel.New(sbotel.WithMeterProvider(mp))

	var b *syncbridge.Bridge
	err = retryUnknownTopic(ctx, logger, func() (err error) {
		b, err = syncbridge.New(ctx, t,
			tel.Option(),
			syncbridge.WithReplyTopic(c.replyTopic),
			syncbridge.WithMaxInFlight(api.BridgeInFlight(c.maxTakedowns, c.maxReads)))
		return err
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, b.Close()) }()
	if reg, err := tel.ObserveBridge(b); err == nil {
		defer reg.Unregister()
	}
	srv, err := api.New(api.Config{
		Bridge: b, Transport: t, DB: d, Topics: topics, Tokens: tokens, Audit: audit, Logger: logger,
		SyncTimeout: c.syncTimeout, CallTimeout: c.callTimeout, MaxTakedowns: c.maxTakedowns, MaxReads: c.maxReads,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(promReg, promhttp.HandlerOpts{}))
	mux.Handle("/", srv)
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      max(c.syncTimeout, api.DefaultMaxWait) + 10*time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(slog.NewTextHandler(stderr, nil), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	base := "http://" + ln.Addr().String()
	printAPI(stdout, base, tokens, generated)

	select {
	case <-ctx.Done():
	case err = <-served:
		srv.Close()
		return fmt.Errorf("http server: %w", err)
	}
	fmt.Fprintln(stdout, "stopping: finishing requests in flight")
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	// Refuse new takedowns, and make those in progress answer (their
	// outcome, or 202, pollable from any replica) before sctx ends.
	srv.BeginShutdown(sctx)
	err = hs.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) && srv.Active() == 0 {
		// Every request was answered in time; Shutdown, which polls for
		// idle connections every 500 ms, had not seen it yet.
		err = hs.Close()
	}
	<-served // http.ErrServerClosed
	srv.Close()
	if berr := b.Shutdown(sctx); berr != nil && !errors.Is(berr, context.DeadlineExceeded) {
		err = errors.Join(err, berr)
	}
	fmt.Fprintln(stdout, "stopped")
	return err
}

// loadTokens reads TAKEDOWN_TOKENS, or generates a token when it is unset.
func loadTokens(getenv func(string) string) (tokens *api.Tokens, generated string, err error) {
	if env := getenv("TAKEDOWN_TOKENS"); env != "" {
		tokens, err = api.NewTokens(strings.Split(env, ",")...)
		if err != nil {
			return nil, "", fmt.Errorf("TAKEDOWN_TOKENS: %w", err)
		}
		return tokens, "", nil
	}
	generated = strings.ToLower(rand.Text())
	tokens, err = api.NewTokens(generated)
	return tokens, generated, err
}

func printItems(w io.Writer, seed, inserted int, delay time.Duration) {
	fmt.Fprintf(w, "items service: %d items seeded (%d new)", seed, inserted)
	if delay > 0 {
		fmt.Fprintf(w, ", each takedown delayed %v", delay)
	}
	fmt.Fprintln(w)
	for i := range min(seed, 5) {
		it := items.SeedItem(i)
		var aud []string
		if len(it.Audience.Groups) > 0 {
			aud = append(aud, "groups "+strings.Join(it.Audience.Groups, ","))
		}
		if it.Audience.Followers {
			aud = append(aud, "followers")
		}
		fmt.Fprintf(w, "  %-9s %-14s %-46q %s\n", it.ID, it.Owner, it.Title, strings.Join(aud, " + "))
	}
	if seed > 5 {
		fmt.Fprintf(w, "  and %d generated items, %s to %s\n", seed-5, items.SeedItem(5).ID, items.SeedItem(seed-1).ID)
	}
}

func printAPI(w io.Writer, base string, tokens *api.Tokens, generated string) {
	fmt.Fprintf(w, "police API listening on %s\n", base)
	auth := `"Authorization: Bearer ${TAKEDOWN_TOKENS%%,*}"`
	if generated != "" {
		fmt.Fprintf(w, "bearer token (generated; set TAKEDOWN_TOKENS to choose): %s\n", generated)
		auth = "'Authorization: Bearer " + generated + "'"
	} else {
		fmt.Fprintf(w, "bearer tokens: %s, from TAKEDOWN_TOKENS\n", strings.Join(tokens.IDs(), ", "))
	}
	fmt.Fprintf(w, `take an item down:
  curl -i %s/v1/takedowns -H %s \
    -d '{"item_id":"itm-1002","reason":"counterfeit goods","case_ref":"PJ-2025-0042"}'
`, base, auth)
}
