package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

const usage = `usage: syncbridge <command> [flags] [value]

commands:
  request   send a request and print its reply (-count for a load figure)
  respond   serve a topic: echo, or run -exec per request
  watch     print the requests and replies on a topic pair

Run 'syncbridge <command> -h' for a command's flags.
`

// run runs the command line args and returns the exit status: 0 on
// success, 1 when the request failed or a command could not run, 2 on bad
// usage.
// respond and watch run until ctx ends.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "request", "req":
		err = request(ctx, args[1:], stdin, stdout, stderr)
	case "respond", "reply":
		err = respond(ctx, args[1:], stdout, stderr)
	case "watch":
		err = watch(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "syncbridge: unknown command %q\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "syncbridge %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "syncbridge %s: %v\n", args[0], err)
		return 1
	}
}

var errUsage = errors.New("usage")

// conn holds the connection flags every command shares.
type conn struct {
	brokers      string
	tls          bool
	tlsCA        string
	tlsCert      string
	tlsKey       string
	tlsInsecure  bool
	sasl         string
	saslUser     string
	saslPassword string
	createTopics bool
	headers      syncbridge.HeaderNames
}

func (c *conn) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.brokers, "brokers", envOr("SYNCBRIDGE_BROKERS", "127.0.0.1:9092"), "Kafka bootstrap `host:port[,...]` ($SYNCBRIDGE_BROKERS)")
	fs.BoolVar(&c.tls, "tls", false, "connect with TLS (implied by the other -tls flags)")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "PEM `file` of CAs to trust instead of the system's")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM client certificate `file` (with -tls-key)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM client key `file`")
	fs.BoolVar(&c.tlsInsecure, "tls-insecure", false, "do not verify the brokers' certificates (testing only)")
	fs.StringVar(&c.sasl, "sasl", "", "SASL `mechanism`: plain, scram-sha-256 or scram-sha-512")
	fs.StringVar(&c.saslUser, "sasl-user", "", "SASL user")
	fs.StringVar(&c.saslPassword, "sasl-password", os.Getenv("SYNCBRIDGE_SASL_PASSWORD"), "SASL password ($SYNCBRIDGE_SASL_PASSWORD)")
	fs.BoolVar(&c.createTopics, "create-topics", false, "create missing topics (1 partition, replication factor 1): for development")
	c.headers = syncbridge.DefaultHeaderNames()
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// transport opens the Kafka transport the flags describe.
func (c *conn) transport() (*kafka.Transport, error) {
	var opts []kafka.Option
	if c.tls || c.tlsCA != "" || c.tlsCert != "" || c.tlsInsecure {
		cfg := &tls.Config{InsecureSkipVerify: c.tlsInsecure, MinVersion: tls.VersionTLS12}
		if c.tlsCA != "" {
			pem, err := os.ReadFile(c.tlsCA)
			if err != nil {
				return nil, fmt.Errorf("-tls-ca: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%w: -tls-ca %s holds no PEM certificate", errUsage, c.tlsCA)
			}
		}
		if (c.tlsCert == "") != (c.tlsKey == "") {
			return nil, fmt.Errorf("%w: -tls-cert and -tls-key go together", errUsage)
		}
		if c.tlsCert != "" {
			cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
			if err != nil {
				return nil, fmt.Errorf("-tls-cert/-tls-key: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kafka.TLS(cfg))
	}
	switch strings.ToLower(c.sasl) {
	case "":
	case "plain":
		opts = append(opts, kafka.SASLPlain(c.saslUser, c.saslPassword))
	case "scram-sha-256":
		opts = append(opts, kafka.SASLScram(kafka.ScramSHA256, c.saslUser, c.saslPassword))
	case "scram-sha-512":
		opts = append(opts, kafka.SASLScram(kafka.ScramSHA512, c.saslUser, c.saslPassword))
	default:
		return nil, fmt.Errorf("%w: -sasl %q: want plain, scram-sha-256 or scram-sha-512", errUsage, c.sasl)
	}
	if c.createTopics {
		opts = append(opts, kafka.CreateTopics(1, 1))
	}
	var brokers []string
	for _, b := range strings.Split(c.brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	tr, err := kafka.New(brokers, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	return tr, nil
}

// headerFlags collects repeated -H key=value flags.
type headerFlags []syncbridge.Header

func (h *headerFlags) String() string { return "" }

func (h *headerFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("header %q: want key=value", s)
	}
	*h = append(*h, syncbridge.Header{Key: k, Value: []byte(v)})
	return nil
}

// newCommand returns the flag set of a command, with the connection flags
// every command shares.
func newCommand(name string, stderr io.Writer) (*flag.FlagSet, *conn) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := new(conn)
	c.flags(fs)
	return fs, c
}

// parse parses fs's flags; it turns flag errors into usage errors.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	return nil
}

// printMessage prints m's value and its headers, syncbridge's decoded.
func (c *conn) printMessage(w io.Writer, prefix string, m *syncbridge.Message) {
	fmt.Fprintf(w, "%stopic %s partition %d offset %d", prefix, m.Topic, m.Partition, m.Offset)
	if !m.Time.IsZero() {
		fmt.Fprintf(w, " time %s", m.Time.Format(time.RFC3339Nano))
	}
	if m.Key != nil {
		fmt.Fprintf(w, " key %s", printable(m.Key))
	}
	fmt.Fprintln(w)
	for _, h := range m.Headers {
		fmt.Fprintf(w, "%s  %s: %s\n", prefix, h.Key, c.decodeHeader(h))
	}
	fmt.Fprintf(w, "%s  value (%d bytes): %s\n", prefix, len(m.Value), printable(m.Value))
}

// decodeHeader shows a header's value, decoded when it is one of
// syncbridge's (or Spring's) routing headers.
func (c *conn) decodeHeader(h syncbridge.Header) string {
	switch h.Key {
	case c.headers.ReplyPartition:
		if len(h.Value) == 4 {
			return fmt.Sprintf("%d (4-byte big-endian, Spring)", int32(binary.BigEndian.Uint32(h.Value)))
		}
		if n, err := strconv.ParseInt(string(h.Value), 10, 32); err == nil {
			return fmt.Sprintf("%d (decimal, NestJS)", n)
		}
		return printable(h.Value) + " (malformed)"
	case c.headers.Deadline:
		ms, err := strconv.ParseInt(string(h.Value), 10, 64)
		if err != nil {
			return printable(h.Value) + " (malformed)"
		}
		d := time.UnixMilli(ms)
		return fmt.Sprintf("%s (%s, in %v)", h.Value, d.Format(time.RFC3339Nano), time.Until(d).Round(time.Millisecond))
	case c.headers.ErrorCode:
		return printable(h.Value) + " (error reply)"
	}
	return printable(h.Value)
}

// printable shows b as text when it is printable UTF-8, else as hex.
func printable(b []byte) string {
	if b == nil {
		return "<nil>"
	}
	if utf8.Valid(b) && !slices.ContainsFunc([]rune(string(b)), func(r rune) bool { return r < 0x20 && r != '\n' && r != '\t' }) {
		return strconv.Quote(string(b))
	}
	return fmt.Sprintf("0x%x", b)
}

func request(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs, c := newCommand("request", stderr)
	topic := fs.String("topic", "", "request `topic` (required)")
	replyTopic := fs.String("reply-topic", syncbridge.DefaultReplyTopic, "reply `topic`")
	key := fs.String("key", "", "record key (default none)")
	timeout := fs.Duration("timeout", 5*time.Second, "timeout of each request")
	count := fs.Int("count", 1, "number of requests; above 1, prints a load figure instead of the reply")
	concurrency := fs.Int("concurrency", 1, "requests in flight at once, with -count")
	var hdrs headerFlags
	fs.Var(&hdrs, "H", "header `key=value` (repeatable)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *topic == "" {
		return fmt.Errorf("%w: -topic is required", errUsage)
	}
	if *count < 1 || *concurrency < 1 || fs.NArg() > 1 {
		return fmt.Errorf("%w: want -count and -concurrency ≥ 1 and at most one value argument", errUsage)
	}
	var value []byte
	if fs.NArg() == 1 && fs.Arg(0) != "-" {
		value = []byte(fs.Arg(0))
	} else {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return fmt.Errorf("reading the value from stdin: %w", err)
		}
		value = b
	}
	tr, err := c.transport()
	if err != nil {
		return err
	}
	defer tr.Close()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	b, err := syncbridge.New(sctx, tr, syncbridge.WithReplyTopic(*replyTopic))
	cancel()
	if err != nil {
		return err
	}
	defer b.Close()
	msg := syncbridge.Message{Topic: *topic, Value: value, Headers: hdrs}
	if *key != "" {
		msg.Key = []byte(*key)
	}
	if *count == 1 {
		rctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		start := time.Now()
		call := b.Go(rctx, msg)
		fmt.Fprintf(stdout, "request %s to %s\n", call.ID(), *topic)
		reply, err := call.Wait(ctx)
		rtt := time.Since(start)
		var re *syncbridge.RemoteError
		if errors.As(err, &re) && re.Reply != nil {
			reply = re.Reply
		}
		if reply != nil {
			c.printMessage(stdout, "reply ", reply)
		}
		fmt.Fprintf(stdout, "round trip %v\n", rtt.Round(time.Microsecond))
		return err
	}
	return load(ctx, stdout, b, msg, *count, *concurrency, *timeout)
}

// load sends count requests, concurrency at a time, and prints the figure.
func load(ctx context.Context, w io.Writer, b *syncbridge.Bridge, msg syncbridge.Message, count, concurrency int, timeout time.Duration) error {
	next := make(chan int, count)
	for i := range count {
		next <- i
	}
	close(next)
	lat := make([]time.Duration, count)
	errs := make(map[string]int)
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				rctx, cancel := context.WithTimeout(ctx, timeout)
				t0 := time.Now()
				_, err := b.Request(rctx, msg)
				lat[i] = time.Since(t0)
				cancel()
				if err != nil {
					mu.Lock()
					errs[errorClass(err)]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	failed := 0
	for _, n := range errs {
		failed += n
	}
	fmt.Fprintf(w, "%d requests, %d in flight: %d ok, %d failed in %v (%.0f req/s)\n", count, concurrency, count-failed, failed, elapsed.Round(time.Millisecond), float64(count)/elapsed.Seconds())
	fmt.Fprintf(w, "latency p50 %v p99 %v max %v\n", pct(.5).Round(time.Microsecond), pct(.99).Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	for class, n := range errs {
		fmt.Fprintf(w, "  %d × %s\n", n, class)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d requests failed", failed, count)
	}
	return nil
}

// errorClass names an error by its kind, for the load figure.
func errorClass(err error) string {
	var re *syncbridge.RemoteError
	switch {
	case errors.As(err, &re):
		return "remote error " + re.Code
	case errors.Is(err, syncbridge.ErrNoReply):
		return "no reply"
	case errors.Is(err, syncbridge.ErrPublish):
		return "not sent"
	case errors.Is(err, syncbridge.ErrOverloaded):
		return "overloaded"
	default:
		return err.Error()
	}
}

func respond(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newCommand("respond", stderr)
	topic := fs.String("topic", "", "request `topic` to serve (required)")
	group := fs.String("group", "", "consumer group (default: the topic followed by .responders)")
	command := fs.String("exec", "", "`command` run per request by sh -c: request value on stdin, reply from stdout, non-zero exit → error reply (default: echo)")
	quiet := fs.Bool("q", false, "do not print the requests")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *topic == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: -topic is required, and no argument", errUsage)
	}
	tr, err := c.transport()
	if err != nil {
		return err
	}
	defer tr.Close()
	var mu sync.Mutex // one request printed at a time
	h := func(hctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		if !*quiet {
			mu.Lock()
			c.printMessage(stdout, "request ", req)
			mu.Unlock()
		}
		if *command == "" {
			return syncbridge.Message{Key: req.Key, Value: req.Value}, nil
		}
		return runCommand(hctx, *command, req)
	}
	var opts []syncbridge.Option
	if *group != "" {
		opts = append(opts, syncbridge.WithGroup(*group))
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	r, err := syncbridge.NewResponder(sctx, tr, *topic, h, opts...)
	cancel()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "serving %s (Ctrl-C to stop)\n", *topic)
	<-ctx.Done()
	sctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = r.Shutdown(sctx)
	st := r.Stats()
	fmt.Fprintf(stdout, "handled %d (%d failed), skipped %d malformed and %d expired\n", st.Handled, st.Failed, st.Skipped.Malformed, st.Skipped.Expired)
	return err
}

// runCommand runs command for req: see respond's -exec.
func runCommand(ctx context.Context, command string, req *syncbridge.Message) (syncbridge.Message, error) {
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	cmd.Stdin = bytes.NewReader(req.Value)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return syncbridge.Message{Value: out.Bytes()}, nil
	case errors.As(err, &exit) && exit.ExitCode() > 0:
		return syncbridge.Message{}, syncbridge.NewRemoteError(fmt.Sprintf("exit_%d", exit.ExitCode()), strings.TrimSpace(errOut.String()))
	default:
		return syncbridge.Message{}, fmt.Errorf("running %q: %w", command, err)
	}
}

func watch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newCommand("watch", stderr)
	topic := fs.String("topic", "", "request `topic` (required)")
	replyTopic := fs.String("reply-topic", syncbridge.DefaultReplyTopic, "reply `topic`")
	grace := fs.Duration("grace", 2*time.Second, "how long a reply with no request seen waits for it (the two topics are read apart, the request may come second) before it is flagged")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *topic == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: -topic is required, and no argument", errUsage)
	}
	tr, err := c.transport()
	if err != nil {
		return err
	}
	defer tr.Close()
	w := &watcher{c: c, out: stdout, grace: *grace, deadlines: make(map[string]time.Time), pending: make(map[string]*pendingReply)}
	defer w.stop()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, t := range []string{*topic, *replyTopic} {
		sub, err := tr.Subscribe(sctx, syncbridge.SubscribeConfig{Topic: t}, w.handle(t == *topic))
		if err != nil {
			return err
		}
		defer sub.Close()
	}
	fmt.Fprintf(stdout, "watching %s and %s (Ctrl-C to stop)\n", *topic, *replyTopic)
	<-ctx.Done()
	return nil
}

// watcher prints what flows on a topic pair.
type watcher struct {
	c     *conn
	out   io.Writer
	grace time.Duration // how long a reply waits for its request

	mu sync.Mutex // protects deadlines, pending, stopped and out
	// deadlines holds the deadline of each request seen (zero: none),
	// by correlation ID, so that replies nobody waits for show.
	deadlines map[string]time.Time
	// pending holds the replies whose request has not been seen yet, by
	// correlation ID. The topics are read by two subscriptions, each at
	// its own pace: a reply can come before its request.
	pending map[string]*pendingReply
	stopped bool
}

// pendingReply is a reply waiting for its request, until its timer flags it.
type pendingReply struct {
	m     syncbridge.Message
	timer *time.Timer
}

// maxWatched bounds the requests a watcher remembers, and the replies
// waiting for theirs.
const maxWatched = 100000

func (w *watcher) handle(requests bool) syncbridge.Handler {
	return func(_ context.Context, m syncbridge.Message) {
		id, _ := m.Header(w.c.headers.CorrelationID)
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.stopped {
			return
		}
		if requests {
			var d time.Time
			if v, ok := m.Header(w.c.headers.Deadline); ok {
				if ms, err := strconv.ParseInt(string(v), 10, 64); err == nil {
					d = time.UnixMilli(ms)
				}
			}
			if len(w.deadlines) >= maxWatched {
				clear(w.deadlines)
			}
			w.deadlines[string(id)] = d
			w.c.printMessage(w.out, "request ", &m)
			if p, ok := w.pending[string(id)]; ok { // its reply came first
				p.timer.Stop()
				delete(w.pending, string(id))
				w.printReply(id, &p.m)
			}
			return
		}
		if _, seen := w.deadlines[string(id)]; !seen && w.grace > 0 && len(w.pending) < maxWatched {
			if _, dup := w.pending[string(id)]; !dup {
				p := &pendingReply{m: m}
				p.timer = time.AfterFunc(w.grace, func() { w.expire(string(id), p) })
				w.pending[string(id)] = p
				return
			}
		}
		w.printReply(id, &m)
	}
}

// expire prints p, a reply whose request was not seen within the grace
// period, as one nobody waits for.
func (w *watcher) expire(id string, p *pendingReply) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.pending[id] != p {
		return // printed when its request came, or the watch ended
	}
	delete(w.pending, id)
	w.printReply([]byte(id), &p.m)
}

// stop ends the watch: the replies still waiting for their requests are
// printed, flagged, in the order they were written; nothing is printed
// after it.
func (w *watcher) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	left := make([]string, 0, len(w.pending))
	for id, p := range w.pending {
		p.timer.Stop()
		left = append(left, id)
	}
	slices.SortFunc(left, func(a, b string) int { return w.pending[a].m.Time.Compare(w.pending[b].m.Time) })
	for _, id := range left {
		w.printReply([]byte(id), &w.pending[id].m)
	}
	clear(w.pending)
}

// printReply prints reply m to request id, flagged when nobody waits for
// it: no request with id seen, or m written after its deadline. w.mu is
// held.
func (w *watcher) printReply(id []byte, m *syncbridge.Message) {
	note := ""
	d, seen := w.deadlines[string(id)]
	switch {
	case !seen:
		note = " (NOBODY WAITS: no request with this correlation ID seen)"
	case !d.IsZero() && m.Time.After(d):
		note = fmt.Sprintf(" (NOBODY WAITS: written %v after the caller's deadline)", m.Time.Sub(d).Round(time.Millisecond))
	}
	delete(w.deadlines, string(id))
	fmt.Fprintf(w.out, "reply to %s%s\n", printable(id), note)
	w.c.printMessage(w.out, "reply ", m)
}
