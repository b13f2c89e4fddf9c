package items

import (
	"context"
	"database/sql"
	"encoding/json"
	"strconv"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/contract"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/db"
)

// Outbox settings.
const (
	outboxBatch = 100              // events claimed at once
	outboxClaim = 30 * time.Second // how long a claim keeps other instances off
)

// enqueue puts an event in the outbox, within tx.
func (s *Service) enqueue(ctx context.Context, tx *sql.Tx, key, eventType string, v any) error {
	payload, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, s.db.Q(`INSERT INTO outbox (topic, msg_key, event_type, payload, created_at) VALUES (?, ?, ?, ?, ?)`),
		s.opts.Topics.Events, key, eventType, string(payload), db.Now())
	return err
}

// wake tells the relay that the outbox has new events.
func (s *Service) wake() {
	select {
	case s.nudge <- struct{}{}:
	default:
	}
}

// relay publishes the outbox's events until Close, then once more.
func (s *Service) relay() {
	defer close(s.relayDone)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			// Let the last round run, for a while.
			t := time.NewTimer(5 * time.Second)
			defer t.Stop()
			select {
			case <-t.C:
				cancel()
			case <-ctx.Done():
			}
		case <-ctx.Done():
		}
	}()
	tick := time.NewTicker(s.opts.OutboxInterval)
	defer tick.Stop()
	for {
		n, err := s.publishOutbox(ctx)
		if err != nil {
			s.log.Warn("outbox: events not published; will retry", "err", err)
		}
		if err == nil && n == outboxBatch {
			continue // more may be waiting
		}
		select {
		case <-s.stop:
			if _, err := s.publishOutbox(ctx); err != nil {
				s.log.Warn("outbox: events left for the next instance", "err", err)
			}
			return
		default:
		}
		select {
		case <-s.nudge:
		case <-tick.C:
		case <-s.stop:
		}
	}
}

// outboxEvent is a row of the outbox.
type outboxEvent struct {
	id                    int64
	topic, key, eventType string
	payload               string
}

// publishOutbox claims a batch of events that no instance holds, publishes
// them in order, and deletes them. An event is published at least once:
// an instance that crashes after publishing and before deleting leaves it
// to be published again once its claim lapses. It returns the number of
// events claimed.
func (s *Service) publishOutbox(ctx context.Context) (int, error) {
	claim := newID("claim")
	now := db.Now()
	skip := ""
	if s.db.Dialect == db.Postgres {
		skip = " FOR UPDATE SKIP LOCKED"
	}
	r, err := s.db.ExecContext(ctx, s.db.Q(`UPDATE outbox SET claimed_by = ?, claimed_until = ?
		WHERE id IN (SELECT id FROM outbox WHERE claimed_until IS NULL OR claimed_until < ? ORDER BY id LIMIT `+strconv.Itoa(outboxBatch)+skip+`)`),
		claim, now.Add(outboxClaim), now)
	if err != nil {
		return 0, err
	}
	if n, err := r.RowsAffected(); err != nil || n == 0 {
		return 0, err
	}
	rows, err := s.db.QueryContext(ctx, s.db.Q(`SELECT id, topic, msg_key, event_type, payload FROM outbox WHERE claimed_by = ? ORDER BY id`), claim)
	if err != nil {
		return 0, err
	}
	var evs []outboxEvent
	for rows.Next() {
		var e outboxEvent
		if err := rows.Scan(&e.id, &e.topic, &e.key, &e.eventType, &e.payload); err != nil {
			rows.Close()
			return 0, err
		}
		evs = append(evs, e)
	}
	if err := rows.Close(); err != nil {
		return 0, err
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	for i, e := range evs {
		pctx, cancel := context.WithTimeout(ctx, syncbridge.DefaultTimeout)
		err := s.t.Publish(pctx, syncbridge.Message{
			Topic: e.topic, Key: []byte(e.key), Value: []byte(e.payload),
			Headers: []syncbridge.Header{{Key: contract.EventHeader, Value: []byte(e.eventType)}},
		})
		cancel()
		if err != nil {
			// Delete what went out, release the rest.
			if i > 0 {
				s.deleteEvents(claim, evs[i-1].id)
			}
			_, rerr := s.db.ExecContext(context.WithoutCancel(ctx), s.db.Q(`UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = ?`), claim)
			if rerr != nil {
				s.log.Warn("outbox: claim not released; it lapses", "err", rerr)
			}
			return len(evs), err
		}
	}
	s.deleteEvents(claim, evs[len(evs)-1].id)
	return len(evs), nil
}

// deleteEvents deletes the events of claim up to id lastID, published.
// One that cannot be deleted is published again once the claim lapses.
func (s *Service) deleteEvents(claim string, lastID int64) {
	ctx, cancel := context.WithTimeout(context.Background(), syncbridge.DefaultTimeout)
	defer cancel()
	if _, err := s.db.ExecContext(ctx, s.db.Q(`DELETE FROM outbox WHERE claimed_by = ? AND id <= ?`), claim, lastID); err != nil {
		s.log.Warn("outbox: published events not deleted; they will be published again", "err", err)
	}
}
