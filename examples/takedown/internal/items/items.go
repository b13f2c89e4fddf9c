// Package items is the asynchronous side of the takedown example: the items
// service of a classified-ads platform. It keeps the catalogue in a
// database, serves takedown commands and queries as syncbridge Responders,
// records users' reports from a topic, and publishes domain events through
// a transactional outbox.
//
// A takedown command is idempotent: its takedown ID is recorded, with the
// outcome, in the transaction that applies it (the takedowns table is the
// inbox), so a redelivered or retried command gets the outcome recorded the
// first time, and a restart never undoes a takedown. A command can be
// fenced off (contract.ActionCancel, contract.ActionExpire): once its ID is
// recorded as cancelled or expired, the command is never applied.
//
// Several instances may run against one Kafka cluster and one database
// (PostgreSQL, or an SQLite file on one host): the commands for one item
// are serialised by the database, not by partitioning.
package items

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/contract"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/db"
)

// Defaults of the Options fields.
const (
	DefaultGroup          = "items-service"
	DefaultOutboxInterval = time.Second
	// ShutdownTimeout bounds how long Close lets the requests in progress
	// finish.
	ShutdownTimeout = 10 * time.Second
)

// Options configure a Service. DB is required; the zero values of the
// other fields are a prompt service logging nothing.
type Options struct {
	// DB holds the catalogue, the takedowns, the reports and the outbox.
	// The Service does not own it.
	DB *db.DB
	// Delay makes every takedown wait this long before it is applied: a slow
	// service, to demonstrate the API's 202 Accepted path. Zero means none.
	// Close cuts it short: the takedown fails with CodeUnavailable,
	// unapplied and unrecorded.
	Delay time.Duration
	// BeforeTakedown, when set, is called before each takedown command
	// (not a fence) is applied, before Delay; the command waits until it
	// returns. An error makes the command fail with
	// contract.CodeUnavailable, unapplied and unrecorded. Meant for tests,
	// which block it on a channel. It must return by the time ctx ends.
	BeforeTakedown func(ctx context.Context, cmd contract.TakedownCommand) error
	// BeforeReport is BeforeTakedown for reports; an error drops the
	// report. Meant for tests.
	BeforeReport func(ctx context.Context, r contract.Report) error
	// Topics names the topics. Zero means contract.DefaultTopics("").
	Topics contract.Topics
	// Group is the consumer group prefix of the instances of one service.
	// Default DefaultGroup.
	Group string
	// OutboxInterval is how often the outbox is searched for events that
	// no instance has published (one that crashed, or a failed publish);
	// events this instance records are published at once. Default
	// DefaultOutboxInterval.
	OutboxInterval time.Duration
	// Logger receives one line per takedown and report. Nil logs nothing.
	Logger *slog.Logger
}

// Service is a running items service. Create it with New and stop it with
// Close.
type Service struct {
	t     syncbridge.Transport
	db    *db.DB
	opts  Options
	log   *slog.Logger
	stop  chan struct{} // closed by Close, to cut delays short and stop the relay
	close sync.Once
	err   error // Close's result

	// The running subscriptions, closed in reverse order by Close.
	subs []interface{ Close() error }

	nudge      chan struct{} // wakes the outbox relay; 1-buffered
	relayDone  chan struct{} // closed when the relay returned
	relayStart sync.Once
}

// New starts a Service on t: it subscribes to the reports, the queries and
// the takedown commands, in that order, starts the outbox relay, and
// returns once every subscription is positioned. ctx bounds subscribing.
// It owns neither t nor the database.
func New(ctx context.Context, t syncbridge.Transport, opts Options) (*Service, error) {
	if opts.DB == nil || t == nil {
		return nil, errors.New("items: a Transport and a DB are required")
	}
	if opts.Topics == (contract.Topics{}) {
		opts.Topics = contract.DefaultTopics("")
	}
	if opts.Group == "" {
		opts.Group = DefaultGroup
	}
	if opts.OutboxInterval <= 0 {
		opts.OutboxInterval = DefaultOutboxInterval
	}
	s := &Service{
		t:         t,
		db:        opts.DB,
		opts:      opts,
		log:       opts.Logger,
		stop:      make(chan struct{}),
		nudge:     make(chan struct{}, 1),
		relayDone: make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := s.start(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Service) start(ctx context.Context) error {
	s.relayStart.Do(func() { go s.relay() })
	sub, err := s.t.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: s.opts.Topics.Reports, Group: s.opts.Group + ".reports"}, s.onReport)
	if err != nil {
		return fmt.Errorf("items: subscribe to %s: %w", s.opts.Topics.Reports, err)
	}
	s.subs = append(s.subs, sub)
	r, err := syncbridge.NewResponder(ctx, s.t, s.opts.Topics.Queries, s.query, syncbridge.WithGroup(s.opts.Group+".queries"))
	if err != nil {
		return fmt.Errorf("items: %w", err)
	}
	s.subs = append(s.subs, r)
	r, err = syncbridge.NewResponder(ctx, s.t, s.opts.Topics.Takedowns, s.takedown, syncbridge.WithGroup(s.opts.Group+".takedowns"))
	if err != nil {
		return fmt.Errorf("items: %w", err)
	}
	s.subs = append(s.subs, r)
	return nil
}

// Close stops the service: delays and takedowns waiting in Delay end at
// once with contract.CodeUnavailable; the Responders shut down gracefully
// (the commands and queries in progress are recorded and answered, and
// what they have not taken stays in Kafka for the other instances), for
// up to ShutdownTimeout; the reports subscription closes once its handler
// returned; and the outbox relay publishes what is left (for up to 5 s;
// what it cannot publish stays in the outbox for the next instance). Close
// is idempotent and returns the same error every time.
func (s *Service) Close() error {
	s.close.Do(func() {
		close(s.stop)
		ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		defer cancel()
		var errs []error
		for _, sub := range slices.Backward(s.subs) {
			if r, ok := sub.(*syncbridge.Responder); ok {
				errs = append(errs, r.Shutdown(ctx))
				continue
			}
			errs = append(errs, sub.Close())
		}
		s.relayStart.Do(func() { close(s.relayDone) }) // never started
		<-s.relayDone
		s.err = errors.Join(errs...)
	})
	return s.err
}

// takedown is the Responder's handler for the takedowns topic.
func (s *Service) takedown(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
	var cmd contract.TakedownCommand
	if err := contract.DecodeStrict(req, &cmd); err != nil {
		return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeInvalid, err.Error())
	}
	switch {
	case !contract.ValidID(cmd.TakedownID) || !contract.ValidID(cmd.ItemID):
		return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeInvalid, "takedown_id and item_id must be valid IDs")
	case cmd.Action != contract.ActionTakedown && cmd.Action != contract.ActionCancel && cmd.Action != contract.ActionExpire:
		return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeInvalid, fmt.Sprintf("unknown action %q", cmd.Action))
	case len(cmd.Reason) > contract.MaxTextLen || len(cmd.CaseRef) > contract.MaxTextLen || len(cmd.RequestedBy) > contract.MaxTextLen:
		return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeInvalid, "reason, case_ref or requested_by too long")
	case !contract.ValidText(cmd.Reason) || !contract.ValidText(cmd.CaseRef) || !contract.ValidText(cmd.RequestedBy):
		return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeInvalid, "reason, case_ref or requested_by holds control characters")
	}
	if cmd.Action == contract.ActionTakedown {
		if err := s.wait(ctx, cmd); err != nil {
			return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeUnavailable, err.Error())
		}
	}
	res, err := s.record(ctx, cmd)
	if err != nil {
		s.log.Warn("takedown not recorded", "takedown_id", cmd.TakedownID, "item_id", cmd.ItemID, "action", cmd.Action, "err", err)
		return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeUnavailable, "takedown not recorded: "+err.Error())
	}
	return contract.Encode("", cmd.ItemID, res)
}

// wait applies BeforeTakedown and Delay.
func (s *Service) wait(ctx context.Context, cmd contract.TakedownCommand) error {
	if f := s.opts.BeforeTakedown; f != nil {
		if err := f(ctx, cmd); err != nil {
			return err
		}
	}
	if d := s.opts.Delay; d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stop:
			return errors.New("items service stopping")
		}
	}
	return nil
}

// errRaced: another transaction recorded the takedown first.
var errRaced = errors.New("items: takedown recorded concurrently")

// errUnchanged rolls back a transaction that found nothing to record.
var errUnchanged = errors.New("items: nothing to record")

// record applies cmd and records its outcome with its takedown ID, in one
// transaction, unless an outcome is recorded already: then it returns that
// one. The ItemTakenDown event goes to the outbox in the same transaction.
func (s *Service) record(ctx context.Context, cmd contract.TakedownCommand) (contract.TakedownResult, error) {
	var res contract.TakedownResult
	var removed bool
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		r, found, err := s.getTakedown(ctx, tx, cmd.TakedownID)
		if err != nil || found {
			res = r
			return err
		}
		now := db.Now()
		res = contract.TakedownResult{TakedownID: cmd.TakedownID, ItemID: cmd.ItemID, RecordedAt: now}
		expired := !cmd.ExpiresAt.IsZero() && !now.Before(cmd.ExpiresAt)
		switch {
		case cmd.Action == contract.ActionCancel:
			res.Status = contract.StatusCancelled
		case cmd.Action == contract.ActionExpire && !expired:
			res = contract.TakedownResult{TakedownID: cmd.TakedownID, ItemID: cmd.ItemID, Status: contract.StatusPending}
			return errUnchanged
		case expired:
			res.Status = contract.StatusExpired
		default:
			it, found, err := s.getItem(ctx, tx, cmd.ItemID, true)
			switch {
			case err != nil:
				return err
			case !found:
				res.Status = contract.StatusNotFound
			case it.TakenDown:
				res.Status, res.RemovedAt, res.RemovedBy = contract.StatusAlreadyRemoved, it.RemovedAt, it.TakedownID
			default:
				res.Status, res.RemovedAt = contract.StatusRemoved, &now
				if err := s.takeDown(ctx, tx, it, cmd, now); err != nil {
					return err
				}
				removed = true
			}
		}
		return s.insertTakedown(ctx, tx, cmd, res)
	})
	switch {
	case errors.Is(err, errUnchanged):
		return res, nil
	case errors.Is(err, errRaced):
		r, found, err := s.getTakedown(ctx, s.db, cmd.TakedownID)
		if err == nil && !found {
			err = errors.New("items: takedown vanished") // rows are never deleted
		}
		return r, err
	case err != nil:
		return contract.TakedownResult{}, err
	}
	if removed {
		s.log.Info("item taken down", "item_id", cmd.ItemID, "takedown_id", cmd.TakedownID, "case_ref", cmd.CaseRef, "requested_by", cmd.RequestedBy)
		s.wake()
	}
	return res, nil
}

// querier is what *sql.DB and *sql.Tx share.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// getTakedown reads the outcome recorded for a takedown ID.
func (s *Service) getTakedown(ctx context.Context, q querier, id string) (contract.TakedownResult, bool, error) {
	res := contract.TakedownResult{TakedownID: id}
	var removedAt sql.NullTime
	var removedBy sql.NullString
	err := q.QueryRowContext(ctx, s.db.Q(`SELECT item_id, status, removed_at, removed_by, recorded_at FROM takedowns WHERE takedown_id = ?`), id).
		Scan(&res.ItemID, &res.Status, &removedAt, &removedBy, &res.RecordedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return contract.TakedownResult{}, false, nil
	}
	if err != nil {
		return contract.TakedownResult{}, false, err
	}
	res.RecordedAt = res.RecordedAt.UTC()
	if removedAt.Valid {
		t := removedAt.Time.UTC()
		res.RemovedAt = &t
	}
	res.RemovedBy = removedBy.String
	return res, true, nil
}

// insertTakedown records res for cmd, or returns errRaced when an outcome
// for its ID was recorded meanwhile.
func (s *Service) insertTakedown(ctx context.Context, tx *sql.Tx, cmd contract.TakedownCommand, res contract.TakedownResult) error {
	var removedBy any
	if res.RemovedBy != "" {
		removedBy = res.RemovedBy
	}
	r, err := tx.ExecContext(ctx, s.db.Q(`INSERT INTO takedowns
		(takedown_id, item_id, status, removed_at, removed_by, reason, case_ref, requested_by, requested_at, expires_at, recorded_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (takedown_id) DO NOTHING`),
		res.TakedownID, res.ItemID, res.Status, nullTime(res.RemovedAt), removedBy, cmd.Reason, cmd.CaseRef, cmd.RequestedBy,
		nullTime(&cmd.RequestedAt), nullTime(&cmd.ExpiresAt), res.RecordedAt)
	if err != nil {
		return err
	}
	if n, err := r.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return errRaced
	}
	return nil
}

// takeDown marks it taken down by cmd at now, and puts the ItemTakenDown
// event in the outbox.
func (s *Service) takeDown(ctx context.Context, tx *sql.Tx, it contract.Item, cmd contract.TakedownCommand, now time.Time) error {
	r, err := tx.ExecContext(ctx, s.db.Q(`UPDATE items SET taken_down = TRUE, removed_at = ?, takedown_id = ? WHERE id = ? AND NOT taken_down`),
		now, cmd.TakedownID, it.ID)
	if err != nil {
		return err
	}
	if n, err := r.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		return errRaced // the row lock (or SQLite's write lock) makes this impossible
	}
	ev := contract.ItemTakenDown{
		ItemID: it.ID, Owner: it.Owner, Audience: it.Audience,
		TakedownID: cmd.TakedownID, Reason: cmd.Reason, CaseRef: cmd.CaseRef, RemovedAt: now,
	}
	return s.enqueue(ctx, tx, it.ID, contract.EventItemTakenDown, ev)
}

// nullTime returns t, or nil when t is nil or zero.
func nullTime(t *time.Time) any {
	if t == nil || t.IsZero() {
		return nil
	}
	return t.UTC()
}

// Item returns the item id as the service serves it, and whether it
// exists.
func (s *Service) Item(ctx context.Context, id string) (contract.Item, bool, error) {
	return s.getItem(ctx, s.db, id, false)
}

// getItem reads an item; lock locks its row until the transaction ends.
func (s *Service) getItem(ctx context.Context, q querier, id string, lock bool) (contract.Item, bool, error) {
	query := `SELECT id, owner, title, audience, taken_down, removed_at, takedown_id, reports FROM items WHERE id = ?`
	if lock {
		query += s.db.ForUpdate()
	}
	var it contract.Item
	var audience string
	var removedAt sql.NullTime
	var takedownID sql.NullString
	err := q.QueryRowContext(ctx, s.db.Q(query), id).
		Scan(&it.ID, &it.Owner, &it.Title, &audience, &it.TakenDown, &removedAt, &takedownID, &it.Reports)
	if errors.Is(err, sql.ErrNoRows) {
		return contract.Item{}, false, nil
	}
	if err != nil {
		return contract.Item{}, false, err
	}
	if err := unmarshalAudience(audience, &it.Audience); err != nil {
		return contract.Item{}, false, fmt.Errorf("item %s: %w", id, err)
	}
	if removedAt.Valid {
		t := removedAt.Time.UTC()
		it.RemovedAt = &t
	}
	it.TakedownID = takedownID.String
	return it, true, nil
}

// query is the Responder's handler for the queries topic.
func (s *Service) query(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
	var q contract.Query
	if err := contract.DecodeStrict(req, &q); err != nil {
		return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeInvalid, err.Error())
	}
	if !contract.ValidID(q.ID) {
		return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeInvalid, "id must be a valid ID")
	}
	var v any
	var found bool
	var err error
	switch q.Kind {
	case contract.QueryItem:
		v, found, err = s.getItem(ctx, s.db, q.ID, false)
	case contract.QueryReport:
		v, found, err = s.getReport(ctx, q.ID)
	case contract.QueryTakedown:
		v, found, err = s.getTakedown(ctx, s.db, q.ID)
	default:
		return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeInvalid, fmt.Sprintf("unknown query kind %q", q.Kind))
	}
	if err != nil {
		return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeUnavailable, "database: "+err.Error())
	}
	if !found {
		return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeNotFound, fmt.Sprintf("no %s %q", q.Kind, q.ID))
	}
	return contract.Encode("", q.ID, v)
}

// newID returns a random ID with the prefix.
func newID(prefix string) string {
	return prefix + "-" + strings.ToLower(rand.Text()[:16])
}
