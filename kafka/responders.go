package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go/protocol/describegroups"
	"github.com/segmentio/kafka-go/protocol/listgroups"
	meta "github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/syncbridge/syncbridge"
)

// responders is what the Transport knows of the consumer groups that read
// the topics a Bridge asked about (syncbridge.ResponderChecker).
type responders struct {
	once sync.Once
	wake chan struct{} // capacity 1: a topic was added

	mu     sync.Mutex // protects topics
	topics map[string]*responderState
}

// responderState is what the last refresh found for one topic.
type responderState struct {
	has   bool
	known bool
	at    time.Time // when the last refresh that answered ran
}

// HasResponders reports whether a consumer group with at least one member
// subscribed to topic, as of the last background refresh
// (syncbridge.ResponderChecker). It never does network I/O: the first
// call for a topic answers "unknown" and has the topic refreshed at once,
// then every MetadataMaxAge (default 5 s), from ListGroups on every broker
// and DescribeGroups of the consumer groups. An answer older than three
// refresh intervals (the brokers did not answer) is "unknown" again, so
// that requests go ahead rather than fail on stale news. Groups of every
// client count: syncbridge Responders, Spring and NestJS consumers alike.
func (t *Transport) HasResponders(topic string) (has, known bool) {
	r := &t.responders
	r.once.Do(func() {
		r.wake = make(chan struct{}, 1)
		r.topics = make(map[string]*responderState)
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.closed {
			return
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.refreshResponders()
		}()
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.topics[topic]
	if s == nil {
		r.topics[topic] = &responderState{}
		select {
		case r.wake <- struct{}{}:
		default:
		}
		return false, false
	}
	if !s.known || time.Since(s.at) > 3*t.cfg.metadataMaxAge {
		return false, false
	}
	return s.has, true
}

// refreshResponders refreshes what HasResponders answers until Close.
func (t *Transport) refreshResponders() {
	r := &t.responders
	tick := time.NewTicker(t.cfg.metadataMaxAge)
	defer tick.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-r.wake:
		case <-tick.C:
		}
		r.mu.Lock()
		topics := make([]string, 0, len(r.topics))
		for topic := range r.topics {
			topics = append(topics, topic)
		}
		r.mu.Unlock()
		ctx, cancel := t.requestCtx(t.ctx)
		found, err := t.subscribedTopics(ctx)
		cancel()
		if err != nil {
			t.logf(slog.LevelDebug, "syncbridge/kafka: responders refresh", "err", err)
			continue // the answers age, and turn unknown
		}
		now := time.Now()
		r.mu.Lock()
		for _, topic := range topics {
			s := r.topics[topic]
			s.has, s.known, s.at = found[topic], true, now
		}
		r.mu.Unlock()
	}
}

// activeGroupStates are the states of a group whose members consume.
var activeGroupStates = []string{"Stable", "CompletingRebalance", "PreparingRebalance"}

// subscribedTopics returns the topics that some consumer group with
// members is subscribed to, asking every broker for the groups it
// coordinates.
func (t *Transport) subscribedTopics(ctx context.Context) (map[string]bool, error) {
	r, err := t.ctlAny(ctx, &meta.Request{})
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	found := make(map[string]bool)
	for _, b := range r.(*meta.Response).Brokers {
		t.metaMu.Lock()
		t.brokerAddrs[b.NodeID] = joinHostPort(b.Host, b.Port)
		t.metaMu.Unlock()
		lr, err := t.ctlBroker(ctx, b.NodeID, &listgroups.Request{})
		if err != nil {
			return nil, fmt.Errorf("list groups on broker %d: %w", b.NodeID, err)
		}
		res := lr.(*listgroups.Response)
		if res.ErrorCode != 0 {
			return nil, fmt.Errorf("list groups on broker %d: %w", b.NodeID, Error(res.ErrorCode))
		}
		var groups []string
		for _, g := range res.Groups {
			if g.ProtocolType == "consumer" {
				groups = append(groups, g.GroupID)
			}
		}
		if len(groups) == 0 {
			continue
		}
		// A broker lists the groups it coordinates: it describes them.
		dr, err := t.ctlBroker(ctx, b.NodeID, &describegroups.Request{Groups: groups})
		if err != nil {
			return nil, fmt.Errorf("describe groups on broker %d: %w", b.NodeID, err)
		}
		for _, g := range dr.(*describegroups.Response).Groups {
			if g.ErrorCode != 0 || !slices.Contains(activeGroupStates, g.GroupState) {
				continue
			}
			for _, m := range g.Members {
				topics, err := decodeSubscription(m.MemberMetadata)
				if err != nil {
					continue // another client's bytes: not a subscription we can read
				}
				for _, topic := range topics {
					found[topic] = true
				}
			}
		}
	}
	return found, nil
}

// compile-time check.
var _ syncbridge.ResponderChecker = (*Transport)(nil)
