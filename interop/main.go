// Command interop checks that syncbridge interoperates with Spring Kafka and
// NestJS on a real Kafka broker, in both directions, with default and
// pinned reply partitions, on success and error paths.
//
// It creates fresh topics, starts two syncbridge Responders (with default
// options), the Spring peer (interop/spring) and the NestJS peer
// (interop/nestjs), then runs every case: syncbridge Bridges calling the
// Spring and NestJS responders, and Spring's ReplyingKafkaTemplate and
// NestJS's ClientKafka calling the syncbridge Responders. Each case sends
// -n requests with unique payloads, every other one asking for an error.
// It prints, per peer, direction and mode, the requests sent, correct,
// misrouted, and errors that arrived as errors, and exits 1 unless every
// case is entirely correct.
//
//	go run ./interop -brokers 127.0.0.1:9092 -spring interop/spring -nestjs interop/nestjs
//
// Both peers must be built first: mvn -q compile in interop/spring, npm ci
// && npm run build in interop/nestjs (see .ci/run).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

func main() {
	brokers := flag.String("brokers", os.Getenv("KAFKA_BROKERS"), "Kafka bootstrap addresses, comma separated (default $KAFKA_BROKERS)")
	springDir := flag.String("spring", "interop/spring", "the Spring peer's directory, built (target/classes, target/classpath.txt)")
	nestDir := flag.String("nestjs", "interop/nestjs", "the NestJS peer's directory, built (dist/main.js)")
	n := flag.Int("n", 1000, "requests per case, every other one asking for an error")
	peers := flag.String("peers", "spring,nestjs", "peers to test")
	logDir := flag.String("logs", "", "directory for the peers' logs (default: a new temporary directory)")
	flag.Parse()
	if *brokers == "" {
		fmt.Fprintln(os.Stderr, "interop: no brokers: set -brokers or KAFKA_BROKERS")
		os.Exit(2)
	}
	if *logDir == "" {
		d, err := os.MkdirTemp("", "syncbridge-interop-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "interop:", err)
			os.Exit(1)
		}
		*logDir = d
	}
	if err := os.MkdirAll(*logDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		os.Exit(1)
	}
	cfg := config{
		brokers: strings.Split(*brokers, ","), springDir: *springDir, nestDir: *nestDir,
		n: *n, logDir: *logDir, spring: strings.Contains(*peers, "spring"), nest: strings.Contains(*peers, "nestjs"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start := time.Now()
	results, err := run(ctx, cfg)
	fmt.Print(table(results))
	passed, failed := 0, 0
	for _, r := range results {
		if r.ok() {
			passed++
		} else {
			failed++
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		failed++
	}
	fmt.Printf("(%d requests per case; %.1fs in all, peers' start-up included)\n", cfg.n, time.Since(start).Seconds())
	fmt.Printf("interop: %d passed, %d failed\n", passed, failed)
	if failed > 0 {
		fmt.Fprintln(os.Stderr, "interop: peers' logs in", cfg.logDir)
		os.Exit(1)
	}
}

type config struct {
	brokers            []string
	springDir, nestDir string
	n                  int
	logDir             string
	spring, nest       bool
}

// run runs every case and returns their results, in order, with the first
// error that kept a case from running.
func run(ctx context.Context, cfg config) (results []result, err error) {
	nonce := fmt.Sprintf("%x", time.Now().UnixNano())
	prefix := "interop." + nonce // topics of this run only
	if err := createTopics(ctx, cfg.brokers, prefix); err != nil {
		return nil, err
	}
	newTransport := func() (syncbridge.Transport, func(), error) {
		tr, err := kafka.New(cfg.brokers, kafka.ClientID("syncbridge-interop"))
		if err != nil {
			return nil, nil, err
		}
		return tr, func() { tr.Close() }, nil
	}
	// The syncbridge Responders that Spring and NestJS callers call: default
	// options, nothing told about who calls.
	rtr, closeRtr, err := newTransport()
	if err != nil {
		return nil, err
	}
	defer closeRtr()
	for _, topic := range []string{prefix + ".gospring.requests", prefix + ".gonest.requests"} {
		r, err := syncbridge.NewResponder(ctx, rtr, topic, echoOrFail)
		if err != nil {
			return nil, err
		}
		defer r.Close()
	}

	brokers := strings.Join(cfg.brokers, ",")
	var spring, nest *peer
	defer func() {
		for _, p := range []*peer{spring, nest} {
			if p != nil {
				if serr := p.stop(60 * time.Second); serr != nil && err == nil {
					err = serr
				}
			}
		}
	}()
	if cfg.spring {
		cp, err := os.ReadFile(filepath.Join(cfg.springDir, "target", "classpath.txt"))
		if err != nil {
			return nil, fmt.Errorf("spring peer not built (mvn -q compile in %s): %w", cfg.springDir, err)
		}
		spring, err = startPeer("spring", cfg.springDir, cfg.logDir, "java", "-XX:TieredStopAtLevel=1", "-Xss512k",
			"-cp", "target/classes"+string(os.PathListSeparator)+strings.TrimSpace(string(cp)),
			"syncbridge.interop.SpringPeer", brokers, prefix)
		if err != nil {
			return nil, err
		}
	}
	if cfg.nest {
		nest, err = startPeer("nestjs", cfg.nestDir, cfg.logDir, "node", "dist/main.js", brokers, prefix)
		if err != nil {
			return nil, err
		}
	}
	for _, p := range []*peer{spring, nest} {
		if p != nil {
			if err := p.ready(ctx, 3*time.Minute); err != nil {
				return nil, err
			}
		}
	}

	goCall := func(peer, mode string, d syncbridge.Dialect) error {
		c := goCase{
			peer: peer, mode: mode, pinned: mode == "pinned", dialect: d, n: cfg.n, window: 64, timeout: 30 * time.Second,
			requestTopic: prefix + "." + peer + ".requests", replyTopic: prefix + ".go" + peer + ".replies." + mode,
			transport: newTransport, nonce: nonce,
		}
		if peer == "nestjs" {
			c.requestTopic = prefix + ".nest.requests"
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second+time.Duration(cfg.n)*50*time.Millisecond)
		defer cancel()
		start := time.Now()
		r, err := c.run(cctx)
		r.Took = time.Since(start)
		results = append(results, r)
		return err
	}
	peerCall := func(p *peer, mode string) error {
		start := time.Now()
		r, err := p.call(ctx, mode, cfg.n, 3*time.Minute)
		if err != nil {
			return err
		}
		r.Took = time.Since(start)
		results = append(results, r)
		return nil
	}
	if spring != nil {
		if err := errors.Join(
			goCall("spring", "default", syncbridge.DialectAuto),
			goCall("spring", "pinned", syncbridge.DialectAuto),
		); err != nil {
			return results, err
		}
		if err := peerCall(spring, "default"); err != nil {
			return results, err
		}
		if err := peerCall(spring, "pinned"); err != nil {
			return results, err
		}
	}
	if nest != nil {
		if err := errors.Join(
			goCall("nestjs", "default", syncbridge.DialectAuto),
			goCall("nestjs", "pinned", syncbridge.DialectNestJS),
		); err != nil {
			return results, err
		}
		if err := peerCall(nest, "pinned"); err != nil {
			return results, err
		}
	}
	return results, nil
}

// createTopics creates the run's topics, 3 partitions each.
func createTopics(ctx context.Context, brokers []string, prefix string) error {
	var topics []kafkago.TopicConfig
	for _, t := range []string{
		"spring.requests", "gospring.replies.default", "gospring.replies.pinned", // Bridges -> Spring
		"gospring.requests", "spring.replies.default", "spring.replies.pinned", // Spring -> Responder
		"nest.requests", "gonestjs.replies.default", "gonestjs.replies.pinned", // Bridges -> NestJS
		"gonest.requests", "gonest.requests.reply", // NestJS -> Responder
	} {
		topics = append(topics, kafkago.TopicConfig{Topic: prefix + "." + t, NumPartitions: 3, ReplicationFactor: 1})
	}
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections()
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: tr, Timeout: 30 * time.Second}
	res, err := client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: topics})
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	for name, err := range res.Errors {
		if err != nil {
			return fmt.Errorf("create topic %s: %w", name, err)
		}
	}
	return nil
}
