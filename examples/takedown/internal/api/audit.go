package api

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/syncbridge/syncbridge/examples/takedown/internal/db"
)

// Audit outcomes that are not a takedown status.
const (
	// outcomeReceived: the request was recorded and not answered yet; a
	// row left so was in progress when its API process died.
	outcomeReceived = "received"
	// outcomeAccepted: answered 202; the takedowns table has the outcome.
	outcomeAccepted = "accepted"
	// outcomeClientGone: the client hung up before the answer; nothing
	// was answered (http_status NULL); the takedowns table has the
	// outcome.
	outcomeClientGone = "client_gone"
	// outcomeNotSent: answered 503; the command was certainly not
	// published, so it is never applied.
	outcomeNotSent = "not_sent"
)

// auditLog writes the audit trail: one row per takedown request, in the
// database, mirrored as JSON records to a logger.
type auditLog struct {
	db       *db.DB
	instance string
	mirror   *slog.Logger
	log      *slog.Logger
}

// auditRow is one takedown request, as audited.
type auditRow struct {
	id         int64     // 0 until written
	start      time.Time // monotonic, for the latency
	receivedAt time.Time
	remote     string
	tokenID    string
	takedownID string
	itemID     string
	reason     string
	caseRef    string
	expiresAt  time.Time
}

// auditTimeout bounds one write of the audit trail.
const auditTimeout = 5 * time.Second

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// received writes the row of a request about to be sent, before anything
// is sent, with outcome "received" and no HTTP status.
func (a *auditLog) received(row *auditRow) error {
	ctx, cancel := context.WithTimeout(context.Background(), auditTimeout)
	defer cancel()
	err := a.db.QueryRowContext(ctx, a.db.Q(`INSERT INTO audit
		(received_at, api_instance, remote, token_id, takedown_id, item_id, reason, case_ref, expires_at, outcome)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`),
		row.receivedAt, a.instance, row.remote, nullString(row.tokenID), nullString(row.takedownID),
		nullString(row.itemID), nullString(row.reason), nullString(row.caseRef), nullTime(row.expiresAt), outcomeReceived).
		Scan(&row.id)
	if err != nil {
		a.log.Error("audit: request not recorded; answering 503", "takedown_id", row.takedownID, "err", err)
		return err
	}
	a.mirror.LogAttrs(ctx, slog.LevelInfo, "takedown received", row.attrs(slog.String("outcome", outcomeReceived))...)
	return nil
}

// answered completes row with the answer about to be written: status (0
// when nothing is answered) and outcome. A row not yet written (a request
// refused before it could be sent) is written whole.
func (a *auditLog) answered(row *auditRow, status int, outcome string) {
	ctx, cancel := context.WithTimeout(context.Background(), auditTimeout)
	defer cancel()
	now := db.Now()
	latency := float64(time.Since(row.start).Microseconds()) / 1000
	var httpStatus any
	if status != 0 {
		httpStatus = status
	}
	var err error
	if row.id != 0 {
		_, err = a.db.ExecContext(ctx, a.db.Q(`UPDATE audit SET outcome = ?, http_status = ?, answered_at = ?, latency_ms = ? WHERE id = ?`),
			outcome, httpStatus, now, latency, row.id)
	} else {
		_, err = a.db.ExecContext(ctx, a.db.Q(`INSERT INTO audit
			(received_at, api_instance, remote, token_id, takedown_id, item_id, reason, case_ref, expires_at, outcome, http_status, answered_at, latency_ms)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			row.receivedAt, a.instance, row.remote, nullString(row.tokenID), nullString(row.takedownID),
			nullString(row.itemID), nullString(row.reason), nullString(row.caseRef), nullTime(row.expiresAt),
			outcome, httpStatus, now, latency)
	}
	if err != nil {
		a.log.Error("audit: answer not recorded", "audit_id", row.id, "takedown_id", row.takedownID, "outcome", outcome, "http_status", status, "err", err)
	}
	level := slog.LevelInfo
	if status >= 500 || status == 0 {
		level = slog.LevelWarn
	}
	msg := "takedown"
	if row.takedownID == "" {
		msg = "takedown rejected"
	}
	a.mirror.LogAttrs(ctx, level, msg, row.attrs(slog.String("outcome", outcome), slog.Int("http_status", status),
		slog.Float64("latency_ms", latency))...)
}

func (row *auditRow) attrs(extra ...slog.Attr) []slog.Attr {
	attrs := []slog.Attr{slog.String("remote", row.remote)}
	for _, kv := range [][2]string{{"takedown_id", row.takedownID}, {"token_id", row.tokenID}, {"item_id", row.itemID}, {"reason", row.reason}, {"case_ref", row.caseRef}} {
		if kv[1] != "" {
			attrs = append(attrs, slog.String(kv[0], kv[1]))
		}
	}
	return append(attrs, extra...)
}

// auditedTakedown is what the audit trail knows of a takedown.
type auditedTakedown struct {
	itemID    string
	expiresAt time.Time
	outcome   string
}

// lookup returns the audit row of a takedown ID.
func (a *auditLog) lookup(ctx context.Context, takedownID string) (auditedTakedown, bool, error) {
	var t auditedTakedown
	var item sql.NullString
	var expires sql.NullTime
	err := a.db.QueryRowContext(ctx, a.db.Q(`SELECT item_id, expires_at, outcome FROM audit WHERE takedown_id = ?`), takedownID).
		Scan(&item, &expires, &t.outcome)
	if errors.Is(err, sql.ErrNoRows) {
		return t, false, nil
	}
	if err != nil {
		return t, false, err
	}
	t.itemID, t.expiresAt = item.String, expires.Time.UTC()
	return t, true, nil
}

// fifo is a bounded set of recently published reports, so that the API can
// say "received" for a report the items service has not processed yet. Past
// max entries the oldest is forgotten.
type fifo struct {
	max int

	mu    sync.Mutex          // protects m, order
	m     map[string]reportAt // by report ID
	order []string            // report IDs, oldest first
}

type reportAt struct {
	itemID string
	at     time.Time
}

func newFIFO(max int) *fifo { return &fifo{max: max, m: make(map[string]reportAt)} }

func (f *fifo) add(id string, r reportAt) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.max <= 0 {
		return
	}
	if len(f.order) >= f.max {
		delete(f.m, f.order[0])
		f.order = f.order[1:]
	}
	f.m[id] = r
	f.order = append(f.order, id)
}

func (f *fifo) get(id string) (reportAt, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.m[id]
	return r, ok
}
