package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/syncbridge/syncbridge"
	sbkafka "github.com/syncbridge/syncbridge/kafka"
)

// kafkaPartitions is the partition count of every request and reply topic.
const kafkaPartitions = 4

// Header names shared by every Kafka contender: syncbridge's defaults, which
// are Spring Kafka's, so the common echo responder serves them all.
const (
	hdrCorrelation = "kafka_correlationId"
	hdrReplyTopic  = "kafka_replyTopic"
)

// kafkaNames lists the Kafka contenders in table order.
var kafkaNames = []string{"syncbridge", "syncbridge-e2e", "syncbridge-e2e-conc", "franz-go", "kafka-go-tuned", "kafka-go-default"}

// ownResponder says which contenders bring their own syncbridge.Responder
// instead of the common echo responder.
func ownResponder(name string) bool { return strings.HasPrefix(name, "syncbridge-e2e") }

// kafkaEnv is the broker every Kafka contender shares, and the common echo
// responder.
type kafkaEnv struct {
	brokers []string
	label   string // what the broker is, for the report
	fake    *kfake.Cluster
	admCl   *kgo.Client
	adm     *kadm.Client
	prefix  string        // topic name prefix, unique per process
	seq     atomic.Uint64 // numbers contender instances

	// On kfake, the produce and fetch requests the broker received.
	produces, fetches atomic.Int64
}

// startKafka starts kfake (1 broker) or, when KAFKA_BROKERS is set, uses the
// real broker there.
func startKafka() (*kafkaEnv, error) {
	e := &kafkaEnv{prefix: fmt.Sprintf("sbbench-%d-%d-", time.Now().Unix(), os.Getpid())}
	if s := os.Getenv("KAFKA_BROKERS"); s != "" {
		e.brokers = strings.Split(s, ",")
		e.label = "Apache Kafka at " + s
	} else {
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return nil, err
		}
		e.fake = c
		e.brokers = c.ListenAddrs()
		// Count requests; returning false lets kfake handle them as usual
		// and keeps the control function installed.
		c.ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
			e.produces.Add(1)
			return nil, nil, false
		})
		c.ControlKey(kmsg.Fetch.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
			e.fetches.Add(1)
			return nil, nil, false
		})
		e.label = "kfake (in-process, 1 broker)"
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...))
	if err != nil {
		e.close()
		return nil, err
	}
	e.admCl, e.adm = cl, kadm.NewClient(cl)
	if e.fake == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if vs, err := e.adm.ApiVersions(ctx); err == nil {
			for _, v := range vs.Sorted() {
				if v.Err == nil {
					e.label += " (" + v.VersionGuess() + ")"
					break
				}
			}
		}
	}
	return e, nil
}

// topics creates a fresh request and reply topic for one instance of a
// contender: every instance starts on empty topics, so its consumers can
// start at the earliest offset and miss nothing.
func (e *kafkaEnv) topics(name string) (req, rep string, err error) {
	return e.topicsN(name, kafkaPartitions)
}

// topicsN is topics with parts partitions per topic.
func (e *kafkaEnv) topicsN(name string, parts int) (req, rep string, err error) {
	base := fmt.Sprintf("%s%s-%d", e.prefix, name, e.seq.Add(1))
	req, rep = base+".req", base+".rep"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := e.adm.CreateTopics(ctx, int32(parts), 1, nil, req, rep)
	if err != nil {
		return "", "", err
	}
	if err := res.Error(); err != nil {
		return "", "", err
	}
	// A real broker answers CreateTopics before every broker's metadata
	// knows the topic: wait until the metadata shows a leader for every
	// partition, or a client may be told the topic does not exist.
	for {
		if ready, err := e.topicsReady(ctx, parts, req, rep); err != nil {
			return "", "", err
		} else if ready {
			return req, rep, nil
		}
		select {
		case <-ctx.Done():
			return "", "", fmt.Errorf("topics %s and %s: no leaders yet: %w", req, rep, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// topicsReady reports whether the metadata shows the parts partitions of
// each of the topics, each with a leader.
func (e *kafkaEnv) topicsReady(ctx context.Context, parts int, topics ...string) (bool, error) {
	md, err := e.adm.Metadata(ctx, topics...)
	if err != nil {
		return false, err
	}
	for _, t := range topics {
		td, ok := md.Topics[t]
		if !ok || td.Err != nil || len(td.Partitions) != parts {
			return false, nil
		}
		for _, p := range td.Partitions {
			if p.Err != nil || p.Leader < 0 {
				return false, nil
			}
		}
	}
	return true, nil
}

// deleteTopics removes every topic this process created (on a real broker).
func (e *kafkaEnv) deleteTopics() {
	if e.fake != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ts, err := e.adm.ListTopics(ctx)
	if err != nil {
		return
	}
	var mine []string
	for _, t := range ts.Names() {
		if strings.HasPrefix(t, e.prefix) {
			mine = append(mine, t)
		}
	}
	if len(mine) > 0 {
		_, _ = e.adm.DeleteTopics(ctx, mine...)
	}
}

func (e *kafkaEnv) close() {
	if e.adm != nil {
		e.deleteTopics()
		e.admCl.Close()
	}
	if e.fake != nil {
		e.fake.Close()
	}
}

// newKafka builds an instance of the named Kafka contender on fresh
// topics, with a fresh instance of the common echo responder (but for
// the syncbridge-e2e contenders, which bring their own Responder).
func (e *kafkaEnv) newKafka(name string) (*contender, error) {
	req, rep, err := e.topics(name)
	if err != nil {
		return nil, fmt.Errorf("topics: %w", err)
	}
	var echo *echoResponder
	if !ownResponder(name) {
		if echo, err = e.startEcho(req); err != nil {
			return nil, err
		}
	}
	var c *contender
	switch name {
	case "syncbridge", "syncbridge-e2e", "syncbridge-e2e-conc":
		c, err = e.newSyncbridgeKafka(name, req, rep)
	case "franz-go":
		c, err = e.newFranz(req, rep)
	case "kafka-go-tuned":
		c, err = e.newKafkaGo(req, rep, true)
	case "kafka-go-default":
		c, err = e.newKafkaGo(req, rep, false)
	default:
		err = fmt.Errorf("unknown Kafka contender %q", name)
	}
	if err != nil {
		if echo != nil {
			echo.close()
		}
		return nil, err
	}
	if e.fake != nil {
		c.brokerCounts = func() (int64, int64) { return e.produces.Load(), e.fetches.Load() }
	}
	if echo != nil {
		closeReq := c.close
		c.close = func() error {
			err := closeReq()
			echo.close()
			return err
		}
	}
	return c, nil
}

// --- the common echo responder: franz-go, linger 0 ---

// echoResponder consumes a request topic and produces each request's value
// back to the topic named by its kafka_replyTopic header, with its
// correlation header, from one franz-go client with ProducerLinger(0). It is
// the responder of every requester contender (the syncbridge-e2e ones aside).
type echoResponder struct {
	cl     *kgo.Client
	cancel context.CancelFunc
	done   chan struct{}
}

// startEcho starts an instance of the common echo responder on topic.
func (e *kafkaEnv) startEcho(topic string) (*echoResponder, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(e.brokers...),
		kgo.ProducerLinger(0),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.ConsumeTopics(topic),
	)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	er := &echoResponder{cl: cl, cancel: cancel, done: make(chan struct{})}
	go er.loop(ctx)
	return er, nil
}

func (er *echoResponder) loop(ctx context.Context) {
	defer close(er.done)
	for {
		fs := er.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fs.EachRecord(func(r *kgo.Record) {
			var id, to []byte
			for _, h := range r.Headers {
				switch h.Key {
				case hdrCorrelation:
					if id == nil {
						id = h.Value
					}
				case hdrReplyTopic:
					if to == nil {
						to = h.Value
					}
				}
			}
			if id == nil || to == nil {
				return
			}
			er.cl.Produce(ctx, &kgo.Record{
				Topic:   string(to),
				Value:   r.Value,
				Headers: []kgo.RecordHeader{{Key: hdrCorrelation, Value: id}},
			}, nil)
		})
	}
}

func (er *echoResponder) close() {
	er.cancel()
	<-er.done
	er.cl.Close()
}

// --- syncbridge's Kafka transport ---

// newSyncbridgeKafka builds a syncbridge Bridge on syncbridge/kafka; for the
// e2e contenders also a syncbridge.Responder on a Transport of its own, as
// another process would have (-conc: WithConcurrentHandlers).
func (e *kafkaEnv) newSyncbridgeKafka(name, req, rep string) (*contender, error) {
	t, err := sbkafka.New(e.brokers)
	if err != nil {
		return nil, err
	}
	var (
		rt   *sbkafka.Transport
		resp *syncbridge.Responder
	)
	if ownResponder(name) {
		if rt, err = sbkafka.New(e.brokers); err != nil {
			t.Close()
			return nil, err
		}
		opts := []syncbridge.Option{syncbridge.WithGroup(req + ".responders")}
		if name == "syncbridge-e2e-conc" {
			opts = append(opts, syncbridge.WithConcurrentHandlers())
		}
		if resp, err = syncbridge.NewResponder(context.Background(), rt, req, echoHandler, opts...); err != nil {
			rt.Close()
			t.Close()
			return nil, err
		}
	}
	b, err := syncbridge.New(context.Background(), t, syncbridge.WithReplyTopic(rep))
	if err != nil {
		if resp != nil {
			resp.Close()
			rt.Close()
		}
		t.Close()
		return nil, err
	}
	c := &contender{
		name: "syncbridge",
		desc: "syncbridge Bridge.Request over syncbridge/kafka (defaults: acks all, no linger) → common franz-go echo",
		r:    bridgeReq{b: b, topic: req},
		close: func() error {
			return errors.Join(b.Close(), t.Close())
		},
	}
	if ownResponder(name) {
		c.name = name
		c.desc = "syncbridge Bridge.Request → syncbridge.Responder (consumer group, defaults: one handler call at a time per partition), each on its own syncbridge/kafka Transport"
		if name == "syncbridge-e2e-conc" {
			c.desc = "as syncbridge-e2e, with the Responder option WithConcurrentHandlers() (handler calls of a partition overlap)"
		}
		c.close = func() error {
			return errors.Join(b.Close(), resp.Close(), rt.Close(), t.Close())
		}
	}
	return c, nil
}

// --- pending replies, for the hand-written requesters ---

// pending maps correlation IDs to the channels of the requests waiting for
// them, sharded like the floor's map.
type pending struct {
	next   atomic.Uint64
	shards [64]pendingShard
}

type pendingShard struct {
	mu sync.Mutex // protects m
	m  map[string]chan []byte
	_  [40]byte
}

func newPending() *pending {
	p := &pending{}
	for i := range p.shards {
		p.shards[i].m = make(map[string]chan []byte)
	}
	return p
}

func (p *pending) shard(id string) *pendingShard {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return &p.shards[h%64]
}

// add registers a new request and returns its ID and channel.
func (p *pending) add() (string, chan []byte) {
	id := strconv.FormatUint(p.next.Add(1), 36)
	ch := make(chan []byte, 1)
	s := p.shard(id)
	s.mu.Lock()
	s.m[id] = ch
	s.mu.Unlock()
	return id, ch
}

func (p *pending) remove(id string) {
	s := p.shard(id)
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

// resolve hands value to the request waiting for id, if any.
func (p *pending) resolve(id string, value []byte) {
	s := p.shard(id)
	s.mu.Lock()
	ch, ok := s.m[id]
	delete(s.m, id)
	s.mu.Unlock()
	if ok {
		ch <- value
	}
}

// wait waits for the reply of id, or ctx's end, or a produce error.
func (p *pending) wait(ctx context.Context, id string, ch chan []byte, perr <-chan error) ([]byte, error) {
	select {
	case v := <-ch:
		return v, nil
	case err := <-perr:
		p.remove(id)
		return nil, err
	case <-ctx.Done():
		p.remove(id)
		return nil, ctx.Err()
	}
}

// --- franz-go requester, linger 0 ---

type franzReq struct {
	cl      *kgo.Client
	p       *pending
	reqT    string
	replyTo []byte
}

func (f *franzReq) Request(ctx context.Context, payload []byte) ([]byte, error) {
	id, ch := f.p.add()
	perr := make(chan error, 1)
	f.cl.Produce(ctx, &kgo.Record{
		Topic: f.reqT,
		Value: payload,
		Headers: []kgo.RecordHeader{
			{Key: hdrCorrelation, Value: []byte(id)},
			{Key: hdrReplyTopic, Value: f.replyTo},
		},
	}, func(_ *kgo.Record, err error) {
		if err != nil {
			perr <- err
		}
	})
	return f.p.wait(ctx, id, ch, perr)
}

func (e *kafkaEnv) newFranz(req, rep string) (*contender, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(e.brokers...),
		kgo.ProducerLinger(0),
		kgo.ConsumeTopics(rep),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		return nil, err
	}
	f := &franzReq{cl: cl, p: newPending(), reqT: req, replyTo: []byte(rep)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				for _, h := range r.Headers {
					if h.Key == hdrCorrelation {
						f.p.resolve(string(h.Value), r.Value)
						return
					}
				}
			})
		}
	}()
	return &contender{
		name: "franz-go",
		desc: "franz-go kgo, ProducerLinger(0), acks all; a PollFetches loop on the reply topic matches correlation IDs → common echo",
		r:    f,
		close: func() error {
			cancel()
			<-done
			cl.Close()
			return nil
		},
	}, nil
}

// --- kafka-go requester ---

type kafkaGoReq struct {
	w       *kafkago.Writer
	p       *pending
	replyTo []byte
}

func (k *kafkaGoReq) Request(ctx context.Context, payload []byte) ([]byte, error) {
	id, ch := k.p.add()
	err := k.w.WriteMessages(ctx, kafkago.Message{
		Value: payload,
		Headers: []kafkago.Header{
			{Key: hdrCorrelation, Value: []byte(id)},
			{Key: hdrReplyTopic, Value: k.replyTo},
		},
	})
	if err != nil {
		k.p.remove(id)
		return nil, err
	}
	return k.p.wait(ctx, id, ch, nil)
}

// newKafkaGo builds a kafka-go ping-pong requester: a Writer on the request
// topic and one Reader per reply partition. tuned=false keeps the Writer{}
// and ReaderConfig defaults (BatchTimeout 1 s, RequiredAcks none); tuned=true
// uses the best settings found (see kafkaGoTuned).
func (e *kafkaEnv) newKafkaGo(req, rep string, tuned bool) (*contender, error) {
	// Each Writer gets its own zero-value Transport (the same settings as
	// kafka.DefaultTransport): the shared default caches metadata for 6 s
	// and would not see a topic created after another Writer looked.
	w := &kafkago.Writer{Addr: kafkago.TCP(e.brokers...), Topic: req, Transport: &kafkago.Transport{}}
	// MaxWait is the one Reader setting changed from its default (10 s):
	// a fetch returns as soon as one message arrives (MinBytes 1), so it
	// does not change latency, but Close waits for the fetch in progress.
	rc := kafkago.ReaderConfig{Brokers: e.brokers, Topic: rep, MaxWait: 250 * time.Millisecond}
	c := &contender{
		name:   "kafka-go-default",
		desc:   "kafka-go Writer{} defaults (BatchTimeout 1 s, BatchSize 100, RequiredAcks none) + a Reader per reply partition (defaults but MaxWait 250 ms)",
		maxSeq: 4,
	}
	if tuned {
		kafkaGoTunedFn(w, &rc)
		c.name, c.maxSeq = "kafka-go-tuned", 0
		c.desc = fmt.Sprintf("kafka-go Writer BatchTimeout %v (BatchSize default 100), RequiredAcks all + a Reader per reply partition (MaxWait %v)", w.BatchTimeout, rc.MaxWait)
	}
	k := &kafkaGoReq{w: w, p: newPending(), replyTo: []byte(rep)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var readers []*kafkago.Reader
	for part := range kafkaPartitions {
		cfg := rc
		cfg.Partition = part
		cfg.StartOffset = kafkago.FirstOffset
		r := kafkago.NewReader(cfg)
		readers = append(readers, r)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					continue
				}
				for _, h := range m.Headers {
					if h.Key == hdrCorrelation {
						k.p.resolve(string(h.Value), m.Value)
						break
					}
				}
			}
		}()
	}
	c.r = k
	c.close = func() error {
		cancel()
		errs := make([]error, len(readers)+1)
		var cwg sync.WaitGroup
		for i, r := range readers {
			cwg.Add(1)
			go func() {
				defer cwg.Done()
				errs[i] = r.Close()
			}()
		}
		cwg.Wait()
		wg.Wait()
		errs[len(readers)] = w.Close()
		return errors.Join(errs...)
	}
	return c, nil
}

// kafkaGoTunedFn is kafkaGoTuned; a variable so experiments can swap it.
var kafkaGoTunedFn = kafkaGoTuned

// kafkaGoTuned applies the best kafka-go settings found for request/reply:
// a 1 µs BatchTimeout (0 would mean 1 s) and acks from all in-sync replicas,
// as every other contender waits for. The Readers keep MinBytes 1 and the
// 250 ms MaxWait of the default contender.
func kafkaGoTuned(w *kafkago.Writer, _ *kafkago.ReaderConfig) {
	w.BatchTimeout = time.Microsecond
	w.RequiredAcks = kafkago.RequireAll
}
