package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/apiversions"
	"github.com/segmentio/kafka-go/protocol/listoffsets"
	meta "github.com/segmentio/kafka-go/protocol/metadata"
	"github.com/segmentio/kafka-go/protocol/produce"
	"github.com/segmentio/kafka-go/protocol/saslauthenticate"
	"github.com/segmentio/kafka-go/protocol/saslhandshake"
)

// brokerConn is a connection to one broker owned by one goroutine (a
// produce loop or a fetch loop), which sends its requests on it itself:
// kafka-go's Transport hands each request to a connection goroutine and
// back, which costs a few tens of µs per round trip on the hot path.
// Control requests (metadata, offsets, topic creation) use pooled ones
// (ctl.go). Not safe for concurrent use.
type brokerConn struct {
	t        *Transport
	broker   int32  // -1 for a connection to addr
	addr     string // when set, the address to dial instead of broker's
	nc       net.Conn
	pc       *protocol.Conn
	versions map[protocol.ApiKey]int16 // negotiated with the broker
	lastUsed time.Time                 // end of the last round trip
	// throttled is when the broker's last throttle time ends: a broker
	// over a quota answers at once and mutes the connection for the
	// throttle time it names (KIP-219); the next request waits for it.
	throttled time.Time
}

// throttleOf returns the throttle time a response carries.
func throttleOf(res protocol.Message) time.Duration {
	var ms int32
	switch r := res.(type) {
	case *produce.Response:
		ms = r.ThrottleTimeMs
	case *fetchResponse:
		ms = r.throttleMs
	case *meta.Response:
		ms = r.ThrottleTimeMs
	case *listoffsets.Response:
		ms = r.ThrottleTimeMs
	}
	return time.Duration(max(ms, 0)) * time.Millisecond
}

// connMaxIdle is how long a connection may sit unused before it is
// replaced rather than reused: brokers close idle connections
// (connections.max.idle.ms, 10 min by default), and a write into one they
// closed fails only after the fact. kafka-go's Transport drops idle
// connections after 30 s for the same reason.
const connMaxIdle = time.Minute

// roundTrip sends req on the connection, dialing it first if needed, and
// returns the response. It returns when ctx ends, or RequestTimeout after
// it began, at the latest. After an error the connection is closed; the
// next call dials again. written reports whether req may have reached the
// broker: false when the error came before anything was written (dialing,
// TLS, SASL).
func (c *brokerConn) roundTrip(ctx context.Context, req protocol.Message) (res protocol.Message, written bool, err error) {
	if wait := time.Until(c.throttled); wait > 0 {
		c.t.stats.throttled.Add(int64(wait))
		tm := time.NewTimer(wait)
		select {
		case <-tm.C:
		case <-ctx.Done():
			tm.Stop()
			return nil, false, ctx.Err()
		}
	}
	now := time.Now()
	if c.pc != nil && now.Sub(c.lastUsed) > connMaxIdle {
		c.close()
	}
	if c.pc == nil {
		if err := c.dial(ctx); err != nil {
			return nil, false, err
		}
	}
	deadline := now.Add(c.t.cfg.requestTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	nc := c.nc
	_ = nc.SetDeadline(deadline)
	// Cancellation (Close, a generation's end) interrupts the round trip.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	res, err = c.pc.RoundTrip(req)
	if !stop() {
		// The deadline was, or is being, pulled in: the connection is
		// done for, whatever the outcome.
		c.close()
	}
	if err != nil {
		c.close()
		if ctx.Err() != nil {
			return nil, true, ctx.Err()
		}
		return nil, true, err
	}
	c.lastUsed = time.Now()
	if d := throttleOf(res); d > 0 {
		c.throttled = c.lastUsed.Add(d)
	}
	return res, true, nil
}

func (c *brokerConn) close() {
	if c.nc != nil {
		_ = c.nc.Close()
	}
	c.nc, c.pc = nil, nil
}

// dial connects to the broker's current address: TLS, API version
// negotiation and SASL included.
func (c *brokerConn) dial(ctx context.Context) error {
	t := c.t
	addr, ok := c.addr, true
	if addr == "" {
		addr, ok = t.brokerAddr(c.broker)
	}
	if !ok {
		return fmt.Errorf("broker %d: %w", c.broker, BrokerNotAvailable)
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.dialTimeout)
	defer cancel()
	nc, err := t.netDial(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial broker %d at %s: %w", c.broker, addr, err)
	}
	if t.cfg.tls != nil {
		cfg := t.cfg.tls
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			cfg = cfg.Clone()
			cfg.ServerName = host
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			return fmt.Errorf("TLS handshake with broker %d at %s: %w", c.broker, addr, err)
		}
		nc = tc
	}
	if d, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	pc := protocol.NewConn(nc, t.cfg.clientID)
	ver, err := negotiate(ctx, pc, t)
	if err != nil {
		_ = nc.Close()
		return fmt.Errorf("broker %d at %s: %w", c.broker, addr, err)
	}
	_ = nc.SetDeadline(time.Time{})
	c.nc, c.pc, c.versions = nc, pc, ver
	return nil
}

// negotiate picks the API versions and authenticates.
func negotiate(ctx context.Context, pc *protocol.Conn, t *Transport) (map[protocol.ApiKey]int16, error) {
	r, err := pc.RoundTrip(new(apiversions.Request))
	if err != nil {
		return nil, fmt.Errorf("API versions: %w", err)
	}
	res := r.(*apiversions.Response)
	if res.ErrorCode != 0 {
		return nil, fmt.Errorf("API versions: %w", Error(res.ErrorCode))
	}
	ver := make(map[protocol.ApiKey]int16, len(res.ApiKeys))
	for _, k := range res.ApiKeys {
		key := protocol.ApiKey(k.ApiKey)
		ver[key] = key.SelectVersion(k.MinVersion, k.MaxVersion)
		if (key == protocol.Heartbeat || key == protocol.LeaveGroup) && k.MinVersion == 0 {
			// kafka-go declares the answers' fields of versions 1 and up
			// in the wrong order (error code before throttle time): v0
			// has no throttle time. fixHeartbeat undoes the mix-up for a
			// broker that has no v0.
			ver[key] = 0
		}
	}
	pc.SetVersions(ver)
	if t.cfg.sasl == nil {
		return ver, nil
	}
	m := t.cfg.sasl
	hr, err := pc.RoundTrip(&saslhandshake.Request{Mechanism: m.Name()})
	if err != nil {
		return nil, fmt.Errorf("SASL handshake: %w", err)
	}
	if code := hr.(*saslhandshake.Response).ErrorCode; code != 0 {
		return nil, fmt.Errorf("SASL handshake: %w", Error(code))
	}
	sess, state, err := m.Start(ctx)
	if err != nil {
		return nil, fmt.Errorf("SASL %s: %w", m.Name(), err)
	}
	for done := false; !done; {
		ar, err := pc.RoundTrip(&saslauthenticate.Request{AuthBytes: state})
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("SASL %s: %w", m.Name(), SASLAuthenticationFailed)
			}
			return nil, fmt.Errorf("SASL %s: %w", m.Name(), err)
		}
		res := ar.(*saslauthenticate.Response)
		if res.ErrorCode != 0 {
			return nil, fmt.Errorf("SASL %s: %w: %s", m.Name(), Error(res.ErrorCode), res.ErrorMessage)
		}
		if done, state, err = sess.Next(ctx, res.AuthBytes); err != nil {
			return nil, fmt.Errorf("SASL %s: %w", m.Name(), err)
		}
	}
	return ver, nil
}

// fixHeartbeat returns the error code of a heartbeat answer decoded by
// kafka-go: from version 1 on, kafka-go reads the throttle time's first two
// bytes as the error code and the rest, with the error code, as the
// throttle time.
func fixHeartbeat(errorCode int16, throttle int32, version int16) int16 {
	if version < 1 {
		return errorCode
	}
	return int16(throttle)
}

// brokerAddr returns the host:port of a broker, from the last metadata.
func (t *Transport) brokerAddr(id int32) (string, bool) {
	t.metaMu.Lock()
	defer t.metaMu.Unlock()
	a, ok := t.brokerAddrs[id]
	return a, ok
}

func joinHostPort(host string, port int32) string {
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}
