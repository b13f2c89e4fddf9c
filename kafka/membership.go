package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/consumer"
	"github.com/segmentio/kafka-go/protocol/findcoordinator"
	"github.com/segmentio/kafka-go/protocol/heartbeat"
	"github.com/segmentio/kafka-go/protocol/joingroup"
	"github.com/segmentio/kafka-go/protocol/leavegroup"
	"github.com/segmentio/kafka-go/protocol/offsetcommit"
	"github.com/segmentio/kafka-go/protocol/offsetfetch"
	"github.com/segmentio/kafka-go/protocol/syncgroup"
)

// Consumer group membership, on kafka-go's protocol API (JoinGroup,
// SyncGroup, Heartbeat, OffsetFetch, OffsetCommit, LeaveGroup).
//
// What it does that kafka-go's ConsumerGroup does not: a member keeps its
// member ID across everything but an eviction, and keeps its generation
// through a coordinator's failure. When the coordinator goes away (a broker
// restart, the leader of __consumer_offsets killed), the member goes on
// reading its partitions, finds the new coordinator and heartbeats there
// with the same member ID and generation, which the new coordinator loaded
// from __consumer_offsets: no rebalance, and nobody waits for an old
// member's session to expire. Only when no heartbeat got through for a
// whole session timeout does the member stop reading (the group may have
// given its partitions to others) and join again, still with its member
// ID, so that the coordinator need not wait for it to expire either.

// Group error codes the member handles.
const (
	errCoordinatorLoadInProgress Error = 14
	errCoordinatorNotAvailable   Error = 15
	errNotCoordinator            Error = 16
	errIllegalGeneration         Error = 22
	errUnknownMemberID           Error = 25
	errRebalanceInProgress       Error = 27
	errMemberIDRequired          Error = 79
	errFencedInstanceID          Error = 82
)

// coordinatorErr reports whether code says the request went to a broker
// that is not (or not yet) the group's coordinator.
func coordinatorErr(code Error) bool {
	return code == errCoordinatorLoadInProgress || code == errCoordinatorNotAvailable || code == errNotCoordinator
}

// assignment is a partition given to the member, and the offset committed
// for it (-1 when none).
type assignment struct {
	partition int32
	offset    int64
}

// generation is what a generation gives the code that consumes it.
type generation struct {
	group    string
	id       int32
	memberID string
	assigned []assignment
	m        *member
}

// commit commits offsets (partition -> next offset to read) for this
// generation.
func (g *generation) commit(ctx context.Context, topic string, offsets map[int32]int64) error {
	return g.m.commit(ctx, g, topic, offsets)
}

// The consumer protocol's subscription and assignment come from other
// clients of the group: bytes off the wire. kafka-go's decoder allocates
// whatever array length the bytes claim (a few bytes can ask for gigabytes),
// so they are read here, bounds-checked, for what the member needs.

// wireReader reads big-endian fields, failing past the end of its bytes.
type wireReader struct {
	b   []byte
	err error
}

func (r *wireReader) take(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		if r.err == nil {
			r.err = errors.New("truncated")
		}
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *wireReader) int16() int16 {
	b := r.take(2)
	if b == nil {
		return 0
	}
	return int16(b[0])<<8 | int16(b[1])
}

func (r *wireReader) int32() int32 {
	b := r.take(4)
	if b == nil {
		return 0
	}
	return int32(b[0])<<24 | int32(b[1])<<16 | int32(b[2])<<8 | int32(b[3])
}

func (r *wireReader) string() string { return string(r.take(int(r.int16()))) }

// count reads an array length, which each element of at least min bytes
// must fit in what is left.
func (r *wireReader) count(min int) int {
	n := int(r.int32())
	if n < 0 {
		return 0 // null
	}
	if r.err == nil && n*min > len(r.b) {
		r.err = fmt.Errorf("array of %d elements in %d bytes", n, len(r.b))
	}
	if r.err != nil {
		return 0
	}
	return n
}

// decodeAssignment returns the partitions of topic in an assignment.
func decodeAssignment(b []byte, topic string) ([]int32, error) {
	r := &wireReader{b: b}
	r.int16() // version: every version starts with the assigned partitions
	var parts []int32
	for range r.count(2 + 4) {
		name := r.string()
		for range r.count(4) {
			p := r.int32()
			if name == topic {
				parts = append(parts, p)
			}
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("malformed assignment: %w", r.err)
	}
	return parts, nil
}

// decodeSubscription returns the topics of a member's subscription.
func decodeSubscription(b []byte) ([]string, error) {
	r := &wireReader{b: b}
	r.int16() // version: every version starts with the topics
	var topics []string
	for range r.count(2) {
		topics = append(topics, r.string())
	}
	if r.err != nil {
		return nil, fmt.Errorf("malformed subscription: %w", r.err)
	}
	return topics, nil
}

// member is one member of a consumer group, reading one topic.
type member struct {
	t     *Transport
	group string
	topic string

	mu       sync.Mutex // protects coord, conn: the coordinator connection
	coordID  int32      // -1 when unknown
	coord    string     // its address
	conn     *brokerConn
	memberID string // the member goroutine's
}

func newMember(t *Transport, group, topic string) *member {
	return &member{t: t, group: group, topic: topic, coordID: -1}
}

// roundTrip sends req to the coordinator, finding it first if needed. A
// connection error or an answer from a broker that is not the
// coordinator makes the next request look for it again.
func (m *member) roundTrip(ctx context.Context, req protocol.Message, timeout time.Duration) (protocol.Message, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn == nil {
		r, err := m.t.ctlAny(ctx, &findcoordinator.Request{Key: m.group, KeyType: 0})
		if err != nil {
			return nil, fmt.Errorf("find coordinator: %w", err)
		}
		res := r.(*findcoordinator.Response)
		if res.ErrorCode != 0 {
			return nil, fmt.Errorf("find coordinator: %w", Error(res.ErrorCode))
		}
		m.coordID, m.coord = res.NodeID, joinHostPort(res.Host, res.Port)
		m.conn = &brokerConn{t: m.t, broker: res.NodeID, addr: m.coord}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, _, err := m.conn.roundTrip(ctx, req)
	if err != nil {
		m.forgetLocked()
	}
	return res, err
}

// roundTripVersion is roundTrip, and says which version of the request's
// API the connection speaks.
func (m *member) roundTripVersion(ctx context.Context, req protocol.Message, timeout time.Duration) (protocol.Message, int16, error) {
	res, err := m.roundTrip(ctx, req, timeout)
	m.mu.Lock()
	defer m.mu.Unlock()
	var v int16
	if m.conn != nil {
		v = m.conn.versions[req.ApiKey()]
	}
	return res, v, err
}

// forgetCoordinator makes the next request look for the coordinator.
func (m *member) forgetCoordinator() {
	m.mu.Lock()
	m.forgetLocked()
	m.mu.Unlock()
}

func (m *member) forgetLocked() {
	if m.conn != nil {
		m.conn.close()
	}
	m.conn, m.coordID = nil, -1
}

func (m *member) close() {
	m.mu.Lock()
	if m.conn != nil {
		m.conn.close()
	}
	m.conn = nil
	m.mu.Unlock()
}

// errRejoin ends a generation so that the member joins again.
var errRejoin = errors.New("rejoin")

// join joins the group and syncs, and returns the new generation. It
// retries until ctx ends: coordinator errors look for the coordinator
// again, a rebalance in progress joins again at once.
func (m *member) join(ctx context.Context) (*generation, error) {
	t := m.t
	sub, err := protocol.Marshal(consumer.MaxVersionSupported, consumer.Subscription{Version: consumer.MaxVersionSupported, Topics: []string{m.topic}})
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		g, err := m.joinOnce(ctx, sub)
		if err == nil {
			return g, nil
		}
		var code Error
		switch {
		case errors.As(err, &code) && code == errMemberIDRequired:
			continue // joinOnce took the ID the coordinator gave
		case errors.As(err, &code) && (code == errUnknownMemberID || code == errFencedInstanceID):
			m.memberID = ""
			continue
		case errors.As(err, &code) && (code == errRebalanceInProgress || code == errIllegalGeneration):
			continue
		case errors.As(err, &code) && coordinatorErr(code):
			m.forgetCoordinator()
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		t.logf(slog.LevelWarn, "syncbridge/kafka: joining group", "group", m.group, "member", m.memberID, "err", err)
		if !t.sleep(ctx, t.backoff(attempt)) {
			return nil, ctx.Err()
		}
	}
}

func (m *member) joinOnce(ctx context.Context, sub []byte) (*generation, error) {
	t := m.t
	r, err := m.roundTrip(ctx, &joingroup.Request{
		GroupID:            m.group,
		SessionTimeoutMS:   int32(t.cfg.sessionTimeout / time.Millisecond),
		RebalanceTimeoutMS: int32(t.cfg.rebalanceTimeout / time.Millisecond),
		MemberID:           m.memberID,
		ProtocolType:       "consumer",
		Protocols:          []joingroup.RequestProtocol{{Name: "range", Metadata: sub}},
	}, t.cfg.rebalanceTimeout+t.cfg.requestTimeout)
	if err != nil {
		return nil, err
	}
	jr := r.(*joingroup.Response)
	if jr.ErrorCode != 0 {
		if Error(jr.ErrorCode) == errMemberIDRequired {
			m.memberID = jr.MemberID
		}
		return nil, fmt.Errorf("join: %w", Error(jr.ErrorCode))
	}
	m.memberID = jr.MemberID
	var assignments []syncgroup.RequestAssignment
	if jr.LeaderID == jr.MemberID {
		assignments, err = m.assign(ctx, jr.Members)
		if err != nil {
			return nil, err
		}
	}
	r, err = m.roundTrip(ctx, &syncgroup.Request{
		GroupID:      m.group,
		GenerationID: jr.GenerationID,
		MemberID:     m.memberID,
		ProtocolType: "consumer",
		ProtocolName: "range",
		Assignments:  assignments,
	}, t.cfg.rebalanceTimeout+t.cfg.requestTimeout)
	if err != nil {
		return nil, err
	}
	sr := r.(*syncgroup.Response)
	if sr.ErrorCode != 0 {
		return nil, fmt.Errorf("sync: %w", Error(sr.ErrorCode))
	}
	g := &generation{group: m.group, id: jr.GenerationID, memberID: m.memberID, m: m}
	var parts []int32
	if len(sr.Assignments) > 0 {
		parts, err = decodeAssignment(sr.Assignments, m.topic)
		if err != nil {
			return nil, fmt.Errorf("sync: %w", err)
		}
	}
	slices.Sort(parts)
	if len(parts) > 0 {
		committed, err := m.committed(ctx, parts)
		if err != nil {
			return nil, err
		}
		for _, p := range parts {
			off, ok := committed[p]
			if !ok {
				off = -1
			}
			g.assigned = append(g.assigned, assignment{partition: p, offset: off})
		}
	}
	return g, nil
}

// assign is the group leader's work: Kafka's range assignment of the
// topic's partitions to the members that subscribe to it.
func (m *member) assign(ctx context.Context, members []joingroup.ResponseMember) ([]syncgroup.RequestAssignment, error) {
	meta, err := m.t.topicMetaRetry(ctx, m.topic)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, mb := range members {
		topics, err := decodeSubscription(mb.Metadata)
		if err != nil {
			m.t.logf(slog.LevelWarn, "syncbridge/kafka: unreadable member subscription", "group", m.group, "member", mb.MemberID, "err", err)
			continue
		}
		if slices.Contains(topics, m.topic) {
			ids = append(ids, mb.MemberID)
		}
	}
	sort.Strings(ids)
	out := make([]syncgroup.RequestAssignment, 0, len(members))
	parts := meta.partitions
	n := len(ids)
	next := 0
	for i, id := range ids {
		count := len(parts) / n
		if i < len(parts)%n {
			count++
		}
		a := consumer.Assignment{Version: consumer.MaxVersionSupported}
		if count > 0 {
			a.AssignedPartitions = []consumer.TopicPartition{{Topic: m.topic, Partitions: slices.Clone(parts[next : next+count])}}
		}
		next += count
		b, err := protocol.Marshal(consumer.MaxVersionSupported, a)
		if err != nil {
			return nil, err
		}
		out = append(out, syncgroup.RequestAssignment{MemberID: id, Assignment: b})
	}
	// Members that do not read the topic get an empty assignment.
	for _, mb := range members {
		if !slices.Contains(ids, mb.MemberID) {
			b, _ := protocol.Marshal(consumer.MaxVersionSupported, consumer.Assignment{Version: consumer.MaxVersionSupported})
			out = append(out, syncgroup.RequestAssignment{MemberID: mb.MemberID, Assignment: b})
		}
	}
	return out, nil
}

// committed returns the offsets the group committed for parts.
func (m *member) committed(ctx context.Context, parts []int32) (map[int32]int64, error) {
	r, err := m.roundTrip(ctx, &offsetfetch.Request{GroupID: m.group, Topics: []offsetfetch.RequestTopic{{Name: m.topic, PartitionIndexes: parts}}}, m.t.cfg.requestTimeout)
	if err != nil {
		return nil, err
	}
	res := r.(*offsetfetch.Response)
	if res.ErrorCode != 0 {
		return nil, fmt.Errorf("offset fetch: %w", Error(res.ErrorCode))
	}
	out := make(map[int32]int64, len(parts))
	for _, rt := range res.Topics {
		for _, rp := range rt.Partitions {
			if rp.ErrorCode != 0 {
				return nil, fmt.Errorf("offset fetch %s[%d]: %w", m.topic, rp.PartitionIndex, Error(rp.ErrorCode))
			}
			if rp.CommittedOffset >= 0 {
				out[rp.PartitionIndex] = rp.CommittedOffset
			}
		}
	}
	return out, nil
}

// commit commits offsets for generation g, retrying on the coordinator's
// move within RequestTimeout.
func (m *member) commit(ctx context.Context, g *generation, topic string, offsets map[int32]int64) error {
	req := &offsetcommit.Request{GroupID: m.group, GenerationID: g.id, MemberID: g.memberID, Topics: []offsetcommit.RequestTopic{{Name: topic}}}
	for p, off := range offsets {
		req.Topics[0].Partitions = append(req.Topics[0].Partitions, offsetcommit.RequestPartition{PartitionIndex: p, CommittedOffset: off, CommittedLeaderEpoch: -1})
	}
	ctx, cancel := context.WithTimeout(ctx, m.t.cfg.requestTimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		r, err := m.roundTrip(ctx, req, m.t.cfg.requestTimeout)
		if err == nil {
			for _, rt := range r.(*offsetcommit.Response).Topics {
				for _, rp := range rt.Partitions {
					if rp.ErrorCode != 0 && err == nil {
						err = fmt.Errorf("commit %s[%d]: %w", topic, rp.PartitionIndex, Error(rp.ErrorCode))
					}
				}
			}
		}
		var code Error
		if err == nil {
			return nil
		}
		if errors.As(err, &code) && !coordinatorErr(code) {
			return err // the generation is over, or the commit is refused
		}
		if errors.As(err, &code) {
			m.forgetCoordinator()
		}
		if ctx.Err() != nil || !m.t.sleep(ctx, m.t.backoff(attempt)) {
			return err
		}
	}
}

// heartbeats sends heartbeats for g until ctx ends or the generation must
// end: it returns errRejoin for a rebalance, eviction, or a session timeout
// without a heartbeat through. A coordinator that fails is looked for
// again, and the generation goes on meanwhile.
func (m *member) heartbeats(ctx context.Context, g *generation, partitions int) error {
	t := m.t
	lastOK := time.Now()
	tick := time.NewTicker(t.cfg.heartbeat)
	defer tick.Stop()
	var check <-chan time.Time
	if partitions >= 0 {
		ct := time.NewTicker(t.cfg.metadataMaxAge)
		defer ct.Stop()
		check = ct.C
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-check:
			// Partitions added to the topic: rejoin, so that the leader
			// hands them out.
			if meta, err := t.topicMeta(ctx, m.topic); err == nil && len(meta.partitions) != partitions {
				t.logf(slog.LevelInfo, "syncbridge/kafka: the topic's partitions changed: rejoining", "group", m.group, "topic", m.topic, "partitions", len(meta.partitions))
				return errRejoin
			}
			continue
		case <-tick.C:
		}
		r, ver, err := m.roundTripVersion(ctx, &heartbeat.Request{GroupID: m.group, GenerationID: g.id, MemberID: g.memberID}, t.cfg.heartbeat+t.cfg.sessionTimeout/2)
		if err == nil {
			hr := r.(*heartbeat.Response)
			code := Error(fixHeartbeat(hr.ErrorCode, hr.ThrottleTimeMs, ver))
			switch {
			case code == 0:
				lastOK = time.Now()
				continue
			case code == errRebalanceInProgress:
				return errRejoin
			case code == errUnknownMemberID || code == errIllegalGeneration || code == errFencedInstanceID:
				if code == errUnknownMemberID {
					m.memberID = ""
				}
				t.logf(slog.LevelInfo, "syncbridge/kafka: left out of the group: rejoining", "group", m.group, "err", code)
				return errRejoin
			case coordinatorErr(code):
				m.forgetCoordinator()
				err = code
			default:
				err = code
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Since(lastOK) > t.cfg.sessionTimeout {
			t.logf(slog.LevelWarn, "syncbridge/kafka: no heartbeat through for a session timeout: rejoining", "group", m.group, "err", err)
			return errRejoin
		}
		t.logf(slog.LevelDebug, "syncbridge/kafka: heartbeat failed; keeping the generation", "group", m.group, "err", err)
	}
}

// leave leaves the group, so that the others take its partitions at once.
func (m *member) leave(ctx context.Context) {
	if m.memberID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, m.t.cfg.dialTimeout)
	defer cancel()
	_, err := m.roundTrip(ctx, &leavegroup.Request{GroupID: m.group, MemberID: m.memberID, Members: []leavegroup.RequestMember{{MemberID: m.memberID}}}, m.t.cfg.dialTimeout)
	if err != nil {
		m.t.logf(slog.LevelWarn, "syncbridge/kafka: leaving the group", "group", m.group, "err", err)
	}
}
