package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go/protocol/createtopics"
	"github.com/segmentio/kafka-go/protocol/describeconfigs"
	"github.com/segmentio/kafka-go/protocol/listoffsets"
	meta "github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/syncbridge/syncbridge"
)

// Errors returned by the Transport. Compare with errors.Is: they are
// wrapped. Errors a broker returns wrap an Error, so errors.Is(err,
// kafka.MessageTooLarge) holds, for instance.
var (
	// ErrUnknownTopic is returned by Publish and Subscribe for a topic the
	// cluster does not have (and that CreateTopics did not create).
	ErrUnknownTopic = errors.New("syncbridge/kafka: unknown topic")
	// ErrUnknownPartition is returned by Publish for a Message with
	// UsePartition and a partition the topic does not have, and by
	// Subscribe for such a partition in SubscribeConfig.Partitions.
	ErrUnknownPartition = errors.New("syncbridge/kafka: unknown partition")
)

// errClosed is returned by every call after Close.
var errClosed = fmt.Errorf("syncbridge/kafka: %w", syncbridge.ErrClosed)

// errClosedNotSent is Publish's error after Close: nothing was sent.
var errClosedNotSent error = &notSentError{errClosed}

// Transport is a syncbridge.Transport on Apache Kafka, built on kafka-go's
// low-level protocol API. It is safe for concurrent use. Create it with New
// and release it with Close.
//
// PublishAsync (and Publish) hand messages to one produce loop per broker,
// which sends what is queued at once when no produce request is in flight
// and otherwise gathers everything that arrives meanwhile into the next
// request: no linger, and batches as fat as the load makes them, within
// each topic's max.message.bytes. Under RequireAll the producer is
// idempotent. Broadcast subscriptions read all their partitions with one
// fetch request per leader and round; group subscriptions join a Kafka
// consumer group and commit an offset once the handler has returned for it
// (with SubscribeAck, once it was acked) and for every message before it.
// Group membership is this package's own, on kafka-go's protocol API (no
// kafka-go ConsumerGroup or Reader): a member keeps its member ID and its
// generation through the failure of the group's coordinator. Every
// connection (produce, fetch, metadata, offsets, group membership, topic
// creation) is set up in one place, with TLS and SASL as configured.
type Transport struct {
	cfg       config
	bootstrap []string
	ctl       ctlPool      // idle connections for control requests
	log       *slog.Logger // nil when logging is off

	ctx    context.Context // ends on Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // produce loops, shared readers, group subscriptions

	mu        sync.Mutex // protects closed, producers, subs, shared
	closed    bool
	producers map[int32]*producer
	router    router
	idem      idempotence // producer ID and sequences
	subs      map[closer]struct{}
	shared    map[sharedKey]*sharedReader

	metaMu      sync.Mutex // protects topics, limits, brokerAddrs
	topics      map[string]*topicMeta
	limits      map[string]topicLimit
	brokerAddrs map[int32]string           // broker ID -> host:port
	seenLeaders map[string]map[int32]int32 // with a Logger: the leaders last seen, to log their moves

	netDial func(ctx context.Context, network, addr string) (net.Conn, error)

	connMu sync.Mutex // protects conns
	conns  map[*trackedConn]struct{}

	spread atomic.Uint32 // round robin for keyless messages

	responders responders // what HasResponders answers

	downMu sync.Mutex          // protects down
	down   map[int32]time.Time // brokers that failed a produce request, until when
	downN  atomic.Int32        // len(down), read without downMu

	stats struct {
		produceRequests, produced, produceErrors atomic.Uint64
		fetchRequests, fetched, fetchErrors      atomic.Uint64
		throttled                                atomic.Int64 // nanoseconds
	}
}

// Stats are a Transport's counters since New, for metrics.
type Stats struct {
	ProduceRequests uint64 // produce requests sent
	Produced        uint64 // messages acknowledged by a broker
	ProduceErrors   uint64 // produce requests or partitions that failed
	FetchRequests   uint64 // fetch requests sent
	Fetched         uint64 // records delivered to handlers
	FetchErrors     uint64 // fetch requests or partitions that failed
	// Throttled is the time requests waited because a broker over a quota
	// asked for it (its throttle_time_ms).
	Throttled time.Duration
}

// Stats returns the Transport's counters. Safe for concurrent use.
func (t *Transport) Stats() Stats {
	return Stats{
		ProduceRequests: t.stats.produceRequests.Load(),
		Produced:        t.stats.produced.Load(),
		ProduceErrors:   t.stats.produceErrors.Load(),
		FetchRequests:   t.stats.fetchRequests.Load(),
		Fetched:         t.stats.fetched.Load(),
		FetchErrors:     t.stats.fetchErrors.Load(),
		Throttled:       time.Duration(t.stats.throttled.Load()),
	}
}

// closer is what the Transport keeps of a subscription to close it.
type closer interface{ Close() error }

// New returns a Transport for the cluster reachable at brokers (host:port
// bootstrap addresses; one is enough, several survive one being down). It
// validates the options and does not connect: the first Publish or
// Subscribe does, and reports connection errors.
func New(brokers []string, opts ...Option) (*Transport, error) {
	if len(brokers) == 0 {
		return nil, errors.New("syncbridge/kafka: no broker addresses")
	}
	for _, b := range brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return nil, fmt.Errorf("syncbridge/kafka: broker address %q: %w", b, err)
		}
	}
	cfg := defaultConfig()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.apply(&cfg); err != nil {
			return nil, fmt.Errorf("syncbridge/kafka: %w", err)
		}
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("syncbridge/kafka: %w", err)
	}
	t := &Transport{
		cfg:         cfg,
		bootstrap:   slices.Clone(brokers),
		log:         cfg.logger,
		producers:   make(map[int32]*producer),
		subs:        make(map[closer]struct{}),
		shared:      make(map[sharedKey]*sharedReader),
		topics:      make(map[string]*topicMeta),
		limits:      make(map[string]topicLimit),
		brokerAddrs: make(map[int32]string),
		conns:       make(map[*trackedConn]struct{}),
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.router = router{t: t, wake: make(chan struct{}, 1)}
	t.wg.Add(1)
	go t.router.run()
	netDialer := &net.Dialer{Timeout: cfg.dialTimeout, KeepAlive: 30 * time.Second}
	dial := netDialer.DialContext
	if w := cfg.connWrap; w != nil {
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := netDialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return w(c), nil
		}
	}
	t.netDial = t.trackDial(dial)
	return t, nil
}

// Close closes every subscription, fails publishes in progress with an
// error wrapping syncbridge.ErrClosed, and returns once every goroutine and
// connection of the Transport is gone. It is idempotent; Publish and
// Subscribe fail after it.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		t.wg.Wait()
		return nil
	}
	t.closed = true
	subs := make([]closer, 0, len(t.subs))
	for s := range t.subs {
		subs = append(subs, s)
	}
	t.mu.Unlock()

	for _, s := range subs {
		_ = s.Close()
	}
	t.cancel()
	t.wg.Wait()
	t.closeCtl()
	t.connMu.Lock()
	for c := range t.conns {
		_ = c.Conn.Close()
	}
	clear(t.conns)
	t.connMu.Unlock()
	return nil
}

// addSub registers a subscription to be closed by Close, and the goroutine
// count for it. It fails once the Transport is closed.
func (t *Transport) addSub(s closer) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errClosed
	}
	t.subs[s] = struct{}{}
	t.wg.Add(1)
	return nil
}

// removeSub forgets a subscription whose goroutines have ended.
func (t *Transport) removeSub(s closer) {
	t.mu.Lock()
	delete(t.subs, s)
	t.mu.Unlock()
	t.wg.Done()
}

func (t *Transport) logf(level slog.Level, msg string, args ...any) {
	if t.log != nil {
		t.log.Log(context.Background(), level, msg, args...)
	}
}

// trackedConn is a connection the Transport closes on Close, so that no
// kafka-go connection goroutine outlives it.
type trackedConn struct {
	net.Conn
	t    *Transport
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.connMu.Lock()
		delete(c.t.conns, c)
		c.t.connMu.Unlock()
	})
	return c.Conn.Close()
}

func (t *Transport) trackDial(dial func(context.Context, string, string) (net.Conn, error)) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := dial(ctx, network, address)
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: c, t: t}
		t.connMu.Lock()
		if t.ctx.Err() != nil {
			t.connMu.Unlock()
			_ = c.Close()
			return nil, errClosed
		}
		t.conns[tc] = struct{}{}
		t.connMu.Unlock()
		return tc, nil
	}
}

// topicMeta is what the Transport knows of a topic's partitions.
type topicMeta struct {
	partitions []int32         // sorted partition IDs
	leaders    map[int32]int32 // partition ID -> leader broker ID, -1 if none
	fetched    time.Time
	refreshing atomic.Bool // a background refresh was started
}

func (m *topicMeta) has(p int32) bool {
	_, ok := m.leaders[p]
	return ok
}

// metaCacheTTL bounds how long a topic's metadata is served from the
// Transport's own cache, which mirrors kafka-go's.
const metaCacheTTL = time.Second

// cachedMeta returns the Transport's metadata of topic if it has metadata
// younger than MetadataMaxAge, else nil; PublishAsync routes with it
// without waiting. Past metaCacheTTL it asks the router to refresh it.
func (t *Transport) cachedMeta(topic string) *topicMeta {
	t.metaMu.Lock()
	m := t.topics[topic]
	t.metaMu.Unlock()
	if m == nil {
		return nil
	}
	age := time.Since(m.fetched)
	if age >= t.cfg.metadataMaxAge {
		return nil
	}
	if age >= metaCacheTTL && m.refreshing.CompareAndSwap(false, true) {
		t.router.refresh(topic)
	}
	return m
}

// topicLimit is a topic's max.message.bytes: the largest record batch its
// partitions accept.
type topicLimit struct {
	bytes   int
	fetched time.Time
}

// defaultMaxMessageBytes is Kafka's default max.message.bytes, assumed
// when a topic's configuration cannot be read.
const defaultMaxMessageBytes = 1048588

// limitTTL is how long a topic's max.message.bytes is used before it is
// read again; a MESSAGE_TOO_LARGE refusal reads it again at once.
const limitTTL = time.Minute

// batchLimit returns the largest record batch the produce loop builds for
// topic: its max.message.bytes.
func (t *Transport) batchLimit(topic string) int {
	t.metaMu.Lock()
	l, ok := t.limits[topic]
	t.metaMu.Unlock()
	if !ok {
		return defaultMaxMessageBytes
	}
	return l.bytes
}

// forgetLimit makes the next metadata lookup of topic read its
// max.message.bytes again.
func (t *Transport) forgetLimit(topic string) {
	t.metaMu.Lock()
	if l, ok := t.limits[topic]; ok {
		l.fetched = time.Time{}
		t.limits[topic] = l
	}
	delete(t.topics, topic)
	t.metaMu.Unlock()
}

// loadLimit reads topic's max.message.bytes (the value in force: the
// topic's own, or the broker's message.max.bytes) with DescribeConfigs. If
// the broker does not tell (no permission to describe configs, say),
// Kafka's default is assumed, and the broker's refusals say the rest.
func (t *Transport) loadLimit(ctx context.Context, topic string) {
	limit, err := t.describeMaxMessageBytes(ctx, topic)
	if err != nil {
		t.logf(slog.LevelWarn, "syncbridge/kafka: cannot read max.message.bytes; assuming Kafka's default", "topic", topic, "default", defaultMaxMessageBytes, "err", err)
		limit = defaultMaxMessageBytes
	}
	t.metaMu.Lock()
	t.limits[topic] = topicLimit{bytes: limit, fetched: time.Now()}
	t.metaMu.Unlock()
}

func (t *Transport) describeMaxMessageBytes(ctx context.Context, topic string) (int, error) {
	const resourceTopic = 2
	r, err := t.ctlAny(ctx, &describeconfigs.Request{Resources: []describeconfigs.RequestResource{{
		ResourceType: resourceTopic, ResourceName: topic, ConfigNames: []string{"max.message.bytes"},
	}}})
	if err != nil {
		return 0, err
	}
	for _, res := range r.(*describeconfigs.Response).Resources {
		if res.ResourceName != topic {
			continue
		}
		if res.ErrorCode != 0 {
			return 0, fmt.Errorf("%w: %s", Error(res.ErrorCode), res.ErrorMessage)
		}
		for _, c := range res.ConfigEntries {
			if c.ConfigName == "max.message.bytes" {
				n, err := strconv.Atoi(c.ConfigValue)
				if err != nil || n <= 0 {
					return 0, fmt.Errorf("max.message.bytes %q: not a positive number", c.ConfigValue)
				}
				return n, nil
			}
		}
	}
	return 0, errors.New("max.message.bytes not in the answer")
}

// topicMeta returns the partitions of topic and their leaders, creating the
// topic first under CreateTopics.
func (t *Transport) topicMeta(ctx context.Context, topic string) (*topicMeta, error) {
	t.metaMu.Lock()
	m := t.topics[topic]
	t.metaMu.Unlock()
	if m != nil && time.Since(m.fetched) < metaCacheTTL {
		return m, nil
	}
	m, err := t.loadTopicMeta(ctx, topic)
	if errors.Is(err, ErrUnknownTopic) && t.cfg.createTopics {
		if err := t.createTopic(ctx, topic); err != nil {
			return nil, err
		}
		m, err = t.loadTopicMeta(ctx, topic)
		// A topic just created, here or by another process starting at the
		// same time, takes a moment to appear in the broker's metadata:
		// wait for it, within ctx.
		for pause := t.cfg.retryBackoff; t.cfg.createTopics && errors.Is(err, ErrUnknownTopic); pause = min(2*pause, t.cfg.maxRetryBackoff) {
			timer := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				timer.Stop()
				return nil, fmt.Errorf("%w (waiting for it to appear: %w)", err, ctx.Err())
			case <-timer.C:
			}
			m, err = t.loadTopicMeta(ctx, topic)
		}
	}
	if err != nil {
		return nil, err
	}
	t.metaMu.Lock()
	var moved []string
	if t.log != nil {
		if t.seenLeaders == nil {
			t.seenLeaders = make(map[string]map[int32]int32)
		}
		old := t.seenLeaders[topic]
		for _, p := range m.partitions {
			if l, ok := old[p]; ok && l != m.leaders[p] {
				moved = append(moved, fmt.Sprintf("%d:%d->%d", p, l, m.leaders[p]))
			}
		}
		t.seenLeaders[topic] = m.leaders
	}
	t.topics[topic] = m
	l, ok := t.limits[topic]
	t.metaMu.Unlock()
	if len(moved) > 0 {
		t.logf(slog.LevelDebug, "syncbridge/kafka: leaders moved", "topic", topic, "moves", moved)
	}
	if !ok || time.Since(l.fetched) > limitTTL {
		t.loadLimit(ctx, topic)
	}
	return m, nil
}

// loadTopicMeta asks a broker for the metadata of topic. It never asks the
// broker to create the topic, whatever the broker's
// auto.create.topics.enable says: a topic name taken from a message (a
// reply topic) must not create anything.
func (t *Transport) loadTopicMeta(ctx context.Context, topic string) (*topicMeta, error) {
	r, err := t.ctlAny(ctx, &meta.Request{TopicNames: []string{topic}, AllowAutoTopicCreation: false})
	if err != nil {
		return nil, fmt.Errorf("syncbridge/kafka: metadata for %q: %w", topic, err)
	}
	res := r.(*meta.Response)
	if len(res.Brokers) > 0 {
		t.metaMu.Lock()
		for _, b := range res.Brokers {
			t.brokerAddrs[b.NodeID] = joinHostPort(b.Host, b.Port)
		}
		t.metaMu.Unlock()
	}
	for _, tm := range res.Topics {
		if tm.Name != topic {
			continue
		}
		if tm.ErrorCode != 0 {
			kerr := Error(tm.ErrorCode)
			if kerr == UnknownTopicOrPartition || kerr == errInvalidTopic {
				return nil, fmt.Errorf("%w %q: %w", ErrUnknownTopic, topic, kerr)
			}
			return nil, fmt.Errorf("syncbridge/kafka: metadata for %q: %w", topic, kerr)
		}
		m := &topicMeta{leaders: make(map[int32]int32, len(tm.Partitions)), fetched: time.Now()}
		for _, p := range tm.Partitions {
			m.partitions = append(m.partitions, p.PartitionIndex)
			m.leaders[p.PartitionIndex] = p.LeaderID
		}
		slices.Sort(m.partitions)
		if len(m.partitions) == 0 {
			return nil, fmt.Errorf("%w %q: no partitions", ErrUnknownTopic, topic)
		}
		return m, nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownTopic, topic)
}

func (t *Transport) createTopic(ctx context.Context, topic string) error {
	r, err := t.ctlAny(ctx, &createtopics.Request{
		Topics: []createtopics.RequestTopic{{
			Name:              topic,
			NumPartitions:     t.cfg.createPartitions,
			ReplicationFactor: t.cfg.createReplication,
		}},
		TimeoutMs: int32(t.cfg.requestTimeout / time.Millisecond),
	})
	if err != nil {
		return fmt.Errorf("syncbridge/kafka: create topic %q: %w", topic, err)
	}
	for _, tr := range r.(*createtopics.Response).Topics {
		if tr.ErrorCode != 0 && Error(tr.ErrorCode) != errTopicAlreadyExists {
			return fmt.Errorf("syncbridge/kafka: create topic %q: %w", topic, Error(tr.ErrorCode))
		}
	}
	t.logf(slog.LevelInfo, "syncbridge/kafka: created topic", "topic", topic, "partitions", t.cfg.createPartitions)
	return nil
}

// refreshMetadata drops what the Transport knows of the cluster's topics,
// after an error that says it is stale (not leader, unknown partition,
// broker gone): the next request asks a broker. Metadata fetched within the
// last retry backoff is kept: it was most likely fetched after the change
// that caused the error, and keeping it bounds how often a topic's
// metadata is asked for while errors go on.
func (t *Transport) refreshMetadata() {
	t.metaMu.Lock()
	defer t.metaMu.Unlock()
	now := time.Now()
	for topic, m := range t.topics {
		if now.Sub(m.fetched) >= t.cfg.retryBackoff {
			delete(t.topics, topic)
		}
	}
}

// minLeaderPoll bounds how often the metadata of a topic is looked up
// while a partition of it waits for a new leader: Java clients' default
// retry.backoff.ms.
const minLeaderPoll = 100 * time.Millisecond

// leaderPoll is how often the metadata of a topic is looked up while a
// partition of it waits for a leader that failed to be replaced: every
// RetryBackoff, 100 ms apart at least.
func (t *Transport) leaderPoll() time.Duration {
	return max(t.cfg.retryBackoff, minLeaderPoll)
}

// refreshTopic makes the next lookup of topic's metadata ask a broker,
// unless the metadata was fetched within the last retry backoff.
func (t *Transport) refreshTopic(topic string) {
	t.metaMu.Lock()
	defer t.metaMu.Unlock()
	if m := t.topics[topic]; m != nil && time.Since(m.fetched) >= t.cfg.retryBackoff {
		delete(t.topics, topic)
	}
}

// requestCtx bounds one request by RequestTimeout, and by Close.
func (t *Transport) requestCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.requestTimeout)
	stop := context.AfterFunc(t.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// listOffsets returns the offsets of the partitions of topic at ts
// (lastOffset for the end, firstOffset for the start), asking
// each partition's leader.
func (t *Transport) listOffsets(ctx context.Context, topic string, parts []int32, ts int64) (map[int32]int64, error) {
	m, err := t.topicMeta(ctx, topic)
	if err != nil {
		return nil, err
	}
	byLeader := make(map[int32][]int32)
	for _, p := range parts {
		leader, ok := m.leaders[p]
		if !ok {
			return nil, fmt.Errorf("%w: %s[%d]", ErrUnknownPartition, topic, p)
		}
		if leader < 0 {
			return nil, fmt.Errorf("syncbridge/kafka: list offsets of %s[%d]: %w", topic, p, LeaderNotAvailable)
		}
		byLeader[leader] = append(byLeader[leader], p)
	}
	out := make(map[int32]int64, len(parts))
	for leader, ps := range byLeader {
		req := &listoffsets.Request{
			ReplicaID: -1,
			Topics:    []listoffsets.RequestTopic{{Topic: topic}},
		}
		for _, p := range ps {
			req.Topics[0].Partitions = append(req.Topics[0].Partitions, listoffsets.RequestPartition{
				Partition: p, CurrentLeaderEpoch: -1, Timestamp: ts,
			})
		}
		r, err := t.ctlBroker(ctx, leader, req)
		if err != nil {
			return nil, fmt.Errorf("syncbridge/kafka: list offsets of %q: %w", topic, err)
		}
		for _, rt := range r.(*listoffsets.Response).Topics {
			for _, rp := range rt.Partitions {
				if rp.ErrorCode != 0 {
					return nil, fmt.Errorf("syncbridge/kafka: list offsets of %s[%d]: %w", topic, rp.Partition, Error(rp.ErrorCode))
				}
				out[rp.Partition] = rp.Offset
			}
		}
	}
	for _, p := range parts {
		if _, ok := out[p]; !ok {
			return nil, fmt.Errorf("syncbridge/kafka: list offsets of %s[%d]: no answer", topic, p)
		}
	}
	return out, nil
}

// retriable reports whether err may go away on a retry with fresh metadata.
func retriable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syncbridge.ErrClosed) || errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, ErrUnknownTopic) || errors.Is(err, ErrUnknownPartition) {
		// The broker itself was asked: not a stale cache.
		return false
	}
	var kerr Error
	if errors.As(err, &kerr) {
		return kerr.Retriable()
	}
	// Network errors, timeouts of one request, kafka-go routing errors
	// (no leader, mismatching leaders) and the like.
	return true
}

// backoff returns the pause before retry n (0 for the first retry).
func (t *Transport) backoff(n int) time.Duration {
	d := t.cfg.retryBackoff
	for i := 0; i < n && d < t.cfg.maxRetryBackoff; i++ {
		d *= 2
	}
	return min(d, t.cfg.maxRetryBackoff)
}

// sleep pauses for d, or until ctx or the Transport ends; it reports
// whether the full pause elapsed.
func (t *Transport) sleep(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	case <-t.ctx.Done():
		return false
	}
}

// compile-time check.
var _ syncbridge.Transport = (*Transport)(nil)
