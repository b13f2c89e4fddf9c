package kafka

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// Option configures a Transport. Options are applied in order by New; a
// later option overrides an earlier one that sets the same thing.
type Option interface {
	apply(*config) error
}

type optFunc func(*config) error

func (f optFunc) apply(c *config) error { return f(c) }

// Acks says how many replicas must have a message before Publish returns.
type Acks int16

const (
	// RequireAll waits for every in-sync replica: the default, and the only
	// setting under which an acknowledged message survives the loss of the
	// leader.
	RequireAll Acks = -1
	// RequireLeader waits for the partition leader only. Faster on a real
	// cluster; a message acknowledged by a leader that dies before its
	// followers copied it is lost.
	RequireLeader Acks = 1
)

// Defaults of the options. Each option's comment says which one it changes.
const (
	DefaultMaxProduceBytes   = 1 << 20
	DefaultFetchMaxWait      = 250 * time.Millisecond
	DefaultFetchMaxBytes     = 16 << 20
	DefaultDialTimeout       = 5 * time.Second
	DefaultRequestTimeout    = 30 * time.Second
	DefaultMetadataMaxAge    = 5 * time.Second
	DefaultSessionTimeout    = 10 * time.Second
	DefaultHeartbeatInterval = 500 * time.Millisecond
	DefaultRebalanceTimeout  = 10 * time.Second
	DefaultRetryBackoff      = 50 * time.Millisecond
	DefaultMaxRetryBackoff   = time.Second
	DefaultCommitInterval    = 100 * time.Millisecond
)

// config holds what the options set. It is read-only once New returns.
type config struct {
	clientID          string
	tls               *tls.Config
	sasl              sasl.Mechanism
	acks              Acks
	maxProduceBytes   int
	fetchMaxWait      time.Duration
	fetchMaxBytes     int
	createTopics      bool
	createPartitions  int32
	createReplication int16
	logger            *slog.Logger
	dialTimeout       time.Duration
	requestTimeout    time.Duration
	metadataMaxAge    time.Duration
	sessionTimeout    time.Duration
	heartbeat         time.Duration
	rebalanceTimeout  time.Duration
	retryBackoff      time.Duration
	maxRetryBackoff   time.Duration
	commitInterval    time.Duration
	compression       Codec
	connWrap          func(net.Conn) net.Conn // tests only: see export_test.go
}

func defaultConfig() config {
	return config{
		clientID:         "syncbridge",
		acks:             RequireAll,
		maxProduceBytes:  DefaultMaxProduceBytes,
		fetchMaxWait:     DefaultFetchMaxWait,
		fetchMaxBytes:    DefaultFetchMaxBytes,
		dialTimeout:      DefaultDialTimeout,
		requestTimeout:   DefaultRequestTimeout,
		metadataMaxAge:   DefaultMetadataMaxAge,
		sessionTimeout:   DefaultSessionTimeout,
		heartbeat:        DefaultHeartbeatInterval,
		rebalanceTimeout: DefaultRebalanceTimeout,
		retryBackoff:     DefaultRetryBackoff,
		maxRetryBackoff:  DefaultMaxRetryBackoff,
		commitInterval:   DefaultCommitInterval,
	}
}

func (c *config) validate() error {
	switch {
	case c.acks != RequireAll && c.acks != RequireLeader:
		return fmt.Errorf("RequiredAcks: %d is neither RequireAll nor RequireLeader", c.acks)
	case c.maxProduceBytes < 1024:
		return fmt.Errorf("MaxProduceBytes: %d is below 1024", c.maxProduceBytes)
	case c.fetchMaxWait < time.Millisecond || c.fetchMaxWait > time.Minute:
		return fmt.Errorf("FetchMaxWait: %v is outside [1ms, 1m]", c.fetchMaxWait)
	case c.fetchMaxBytes < 1024:
		return fmt.Errorf("FetchMaxBytes: %d is below 1024", c.fetchMaxBytes)
	case c.createTopics && (c.createPartitions < 1 || c.createReplication < 1):
		return fmt.Errorf("CreateTopics: %d partitions, replication factor %d: both must be positive", c.createPartitions, c.createReplication)
	case c.dialTimeout <= 0:
		return fmt.Errorf("DialTimeout: %v is not positive", c.dialTimeout)
	case c.requestTimeout < time.Second:
		return fmt.Errorf("RequestTimeout: %v is below 1s", c.requestTimeout)
	case c.requestTimeout <= c.fetchMaxWait:
		return fmt.Errorf("RequestTimeout %v must exceed FetchMaxWait %v", c.requestTimeout, c.fetchMaxWait)
	case c.metadataMaxAge < 100*time.Millisecond:
		return fmt.Errorf("MetadataMaxAge: %v is below 100ms", c.metadataMaxAge)
	case c.heartbeat <= 0 || c.sessionTimeout <= 0 || c.rebalanceTimeout <= 0:
		return errors.New("GroupTimeouts: every duration must be positive")
	case c.compression < 0 || c.compression > Zstd:
		return fmt.Errorf("Compression: unknown codec %d", c.compression)
	case c.commitInterval < 0:
		return fmt.Errorf("CommitInterval: %v is negative", c.commitInterval)
	case c.heartbeat >= c.sessionTimeout:
		return fmt.Errorf("GroupTimeouts: heartbeat interval %v must be below the session timeout %v", c.heartbeat, c.sessionTimeout)
	}
	return nil
}

// ClientID sets the client ID sent to the brokers with every request, shown
// in broker logs and quotas. Default "syncbridge".
func ClientID(id string) Option {
	return optFunc(func(c *config) error { c.clientID = id; return nil })
}

// TLS makes every connection use TLS with this configuration. An empty
// ServerName is filled in from the broker's host name. Default: plain TCP.
func TLS(cfg *tls.Config) Option {
	return optFunc(func(c *config) error { c.tls = cfg; return nil })
}

// SASLPlain authenticates every connection with SASL/PLAIN. Use it over
// TLS only: the password crosses the network in clear. Default: no SASL.
func SASLPlain(user, password string) Option {
	return optFunc(func(c *config) error {
		c.sasl = plain.Mechanism{Username: user, Password: password}
		return nil
	})
}

// ScramAlgorithm names a SCRAM hash for SASLScram.
type ScramAlgorithm int

const (
	// ScramSHA256 is SASL/SCRAM-SHA-256.
	ScramSHA256 ScramAlgorithm = iota + 1
	// ScramSHA512 is SASL/SCRAM-SHA-512.
	ScramSHA512
)

// SASLScram authenticates with SASL/SCRAM-SHA-256 or SCRAM-SHA-512. New
// returns an error for an unknown algorithm or a user name SCRAM refuses.
func SASLScram(algo ScramAlgorithm, user, password string) Option {
	return optFunc(func(c *config) error {
		var a scram.Algorithm
		switch algo {
		case ScramSHA256:
			a = scram.SHA256
		case ScramSHA512:
			a = scram.SHA512
		default:
			return fmt.Errorf("SASLScram: unknown algorithm %d", algo)
		}
		m, err := scram.Mechanism(a, user, password)
		if err != nil {
			return fmt.Errorf("SASLScram: %w", err)
		}
		c.sasl = m
		return nil
	})
}

// RequiredAcks sets how many replicas must have a message before Publish
// returns. Default RequireAll. Fire-and-forget (acks=0) is not offered:
// Publish promises the message was accepted.
func RequiredAcks(a Acks) Option {
	return optFunc(func(c *config) error { c.acks = a; return nil })
}

// MaxProduceBytes caps the size of one produce request, as estimated from
// the sizes of the keys, values and headers it carries: the produce loop
// splits what it gathered into several requests past it. A single message
// larger than the cap is still sent alone (the broker decides whether it is
// too large). Default DefaultMaxProduceBytes (1 MiB, the broker's default
// message.max.bytes); at least 1024.
func MaxProduceBytes(n int) Option {
	return optFunc(func(c *config) error { c.maxProduceBytes = n; return nil })
}

// FetchMaxWait is how long the broker holds a fetch request that has no
// data to return. It bounds how long an idle subscription takes to notice
// that it was closed, not latency: a fetch returns as soon as one message
// arrives. Default DefaultFetchMaxWait (250 ms); between 1 ms and 1 min.
func FetchMaxWait(d time.Duration) Option {
	return optFunc(func(c *config) error { c.fetchMaxWait = d; return nil })
}

// FetchMaxBytes caps the bytes one fetch response may carry, over all its
// partitions (each partition is also capped to it). Default
// DefaultFetchMaxBytes (16 MiB); at least 1024.
func FetchMaxBytes(n int) Option {
	return optFunc(func(c *config) error { c.fetchMaxBytes = n; return nil })
}

// CreateTopics makes the Transport create, with this many partitions and
// this replication factor, every topic it publishes to or subscribes to
// that does not exist. Meant for development and tests. Default: topics
// must exist (a broker with auto.create.topics.enable may still create
// them with its own defaults, as it does for any client).
func CreateTopics(partitions int32, replicationFactor int16) Option {
	return optFunc(func(c *config) error {
		c.createTopics = true
		c.createPartitions = partitions
		c.createReplication = replicationFactor
		return nil
	})
}

// Logger makes the Transport log broker errors, retries and rebalances.
// Default: no logging.
func Logger(l *slog.Logger) Option {
	return optFunc(func(c *config) error { c.logger = l; return nil })
}

// DialTimeout bounds establishing one connection, TLS and SASL included.
// Default DefaultDialTimeout (5 s).
func DialTimeout(d time.Duration) Option {
	return optFunc(func(c *config) error { c.dialTimeout = d; return nil })
}

// RequestTimeout bounds one request to a broker that does not answer (and
// is the produce request's broker-side ack timeout). A caller's context
// still ends its own wait sooner. Default DefaultRequestTimeout (30 s); at
// least 1 s and more than FetchMaxWait.
func RequestTimeout(d time.Duration) Option {
	return optFunc(func(c *config) error { c.requestTimeout = d; return nil })
}

// MetadataMaxAge bounds how old the cluster metadata (partition leaders)
// may grow before it is refreshed in the background. Errors that say the
// metadata is stale refresh it at once. Default DefaultMetadataMaxAge (5 s);
// at least 100 ms.
func MetadataMaxAge(d time.Duration) Option {
	return optFunc(func(c *config) error { c.metadataMaxAge = d; return nil })
}

// GroupTimeouts sets the consumer group timeouts of group subscriptions:
// session is how long the coordinator waits for a heartbeat before it
// declares a member dead and hands its partitions over (a member that
// closes leaves at once); heartbeat is how often a member checks in, and so
// how soon it notices a rebalance; rebalance is how long the coordinator
// waits for members to rejoin during a rebalance. Defaults
// DefaultSessionTimeout (10 s), DefaultHeartbeatInterval (500 ms),
// DefaultRebalanceTimeout (10 s): kafka-go's 30 s, 3 s and 30 s make
// rebalances slow. The session timeout must lie within the broker's
// group.min.session.timeout.ms (6 s by default) and
// group.max.session.timeout.ms; heartbeat must be below session. A
// handler call in progress when a rebalance starts must return within the
// rebalance timeout, or the coordinator drops the member from the group.
func GroupTimeouts(session, heartbeat, rebalance time.Duration) Option {
	return optFunc(func(c *config) error {
		c.sessionTimeout, c.heartbeat, c.rebalanceTimeout = session, heartbeat, rebalance
		return nil
	})
}

// RetryBackoff sets the first and the largest pause between retries of a
// failed request (the pause doubles from one to the other). Publish
// retries retriable errors until its context ends; subscriptions retry
// until they are closed. A message or partition whose leader failed goes
// back to that leader only after the pause, but to a new leader as soon
// as the metadata names one (it is looked up every first pause, 100 ms
// apart at least, while the message or partition waits); its pauses then
// start again from the first (TestProduceNewLeaderAtOnce,
// TestFetchNewLeaderAtOnce). Defaults DefaultRetryBackoff (50 ms) and
// DefaultMaxRetryBackoff (1 s).
func RetryBackoff(first, max time.Duration) Option {
	return optFunc(func(c *config) error {
		if first <= 0 || max < first {
			return fmt.Errorf("RetryBackoff: need 0 < first (%v) <= max (%v)", first, max)
		}
		c.retryBackoff, c.maxRetryBackoff = first, max
		return nil
	})
}

// CommitInterval sets how often a group subscription commits the offsets
// its handlers processed: a commit follows the first processed message
// after the previous commit by at most this long. An offset is only ever
// committed once its message was processed (the handler returned for it
// with Subscribe, or acked it with SubscribeAck) and so was every message
// of the partition before it, and processed
// offsets are always committed before partitions are given up (rebalance,
// Close); the interval only bounds what a crash re-delivers. Zero commits
// as soon as the previous commit is done, which costs one commit request
// per round trip. Default DefaultCommitInterval (100 ms).
func CommitInterval(d time.Duration) Option {
	return optFunc(func(c *config) error { c.commitInterval = d; return nil })
}

// Codec is a compression codec for the record batches Publish writes.
type Codec int8

// Codecs. Their numbers are Kafka's.
const (
	// NoCompression writes batches as they are: the default, which suits
	// small requests and replies best.
	NoCompression Codec = 0
	// Gzip compresses with gzip.
	Gzip Codec = 1
	// Snappy compresses with Snappy.
	Snappy Codec = 2
	// LZ4 compresses with LZ4.
	LZ4 Codec = 3
	// Zstd compresses with Zstandard.
	Zstd Codec = 4
)

// Compression compresses the record batches Publish sends with codec c.
// Subscriptions read compressed batches whatever this says. Default
// NoCompression. New fails for an unknown codec.
func Compression(c Codec) Option {
	return optFunc(func(cfg *config) error { cfg.compression = c; return nil })
}
