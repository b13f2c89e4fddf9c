package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/segmentio/kafka-go/protocol"
)

// Control requests (metadata, offsets, topic creation and configs) go over
// the same connections as produce and fetch (brokerConn: TLS, SASL and API
// versions set up in one place), taken from a small pool of idle
// connections per broker address. Metadata is always asked of a broker,
// never answered from a client-side cache, and never asks the broker to
// create a topic.

// ctlPool holds idle control connections.
type ctlPool struct {
	mu        sync.Mutex // protects idle, preferred
	idle      map[string][]*brokerConn
	preferred string // the address that last answered a request to any broker
}

// ctlMaxIdle is how many idle control connections are kept per address.
const ctlMaxIdle = 2

// ctlRoundTrip sends req to the broker at addr on an idle control
// connection, or a new one, within RequestTimeout.
func (t *Transport) ctlRoundTrip(ctx context.Context, addr string, req protocol.Message) (protocol.Message, error) {
	ctx, cancel := t.requestCtx(ctx)
	defer cancel()
	p := &t.ctl
	p.mu.Lock()
	var c *brokerConn
	if n := len(p.idle[addr]); n > 0 {
		c = p.idle[addr][n-1]
		p.idle[addr] = p.idle[addr][:n-1]
	}
	p.mu.Unlock()
	if c == nil {
		c = &brokerConn{t: t, broker: -1, addr: addr}
	}
	res, _, err := c.roundTrip(ctx, req)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if t.ctx.Err() == nil && len(p.idle[addr]) < ctlMaxIdle {
		if p.idle == nil {
			p.idle = make(map[string][]*brokerConn)
		}
		p.idle[addr] = append(p.idle[addr], c)
		c = nil
	}
	p.mu.Unlock()
	if c != nil {
		c.close()
	}
	return res, nil
}

// ctlBroker sends req to the broker with ID id.
func (t *Transport) ctlBroker(ctx context.Context, id int32, req protocol.Message) (protocol.Message, error) {
	addr, ok := t.brokerAddr(id)
	if !ok {
		return nil, fmt.Errorf("broker %d: %w", id, BrokerNotAvailable)
	}
	return t.ctlRoundTrip(ctx, addr, req)
}

// ctlAny sends req to any broker that answers: the one that answered last,
// then the others the metadata names, then the bootstrap addresses.
func (t *Transport) ctlAny(ctx context.Context, req protocol.Message) (protocol.Message, error) {
	t.ctl.mu.Lock()
	first := t.ctl.preferred
	t.ctl.mu.Unlock()
	addrs := make([]string, 0, 8)
	if first != "" {
		addrs = append(addrs, first)
	}
	t.metaMu.Lock()
	for _, a := range t.brokerAddrs {
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	t.metaMu.Unlock()
	// Map order varies: the brokers after the first are tried in a
	// different order each time, which spreads the load of a failover.
	for _, a := range t.bootstrap {
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	var errs []error
	for _, a := range addrs {
		res, err := t.ctlRoundTrip(ctx, a, req)
		if err == nil {
			if a != first {
				t.ctl.mu.Lock()
				t.ctl.preferred = a
				t.ctl.mu.Unlock()
			}
			return res, nil
		}
		if t.ctx.Err() != nil {
			return nil, errClosed
		}
		if ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("no broker answered: %w", errors.Join(errs...))
}

// closeCtl closes the idle control connections.
func (t *Transport) closeCtl() {
	t.ctl.mu.Lock()
	idle := t.ctl.idle
	t.ctl.idle = nil
	t.ctl.mu.Unlock()
	for _, cs := range idle {
		for _, c := range cs {
			c.close()
		}
	}
}
