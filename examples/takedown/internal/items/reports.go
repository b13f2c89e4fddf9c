package items

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/contract"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/db"
)

// onReport records a user's report from the reports topic, once, and puts
// its outcome in the outbox as an event. Reports are fire-and-forget:
// nobody waits for an answer, and a malformed one is only logged. While
// the database fails, it retries (the report's offset is committed only
// once it returns), until the service closes.
func (s *Service) onReport(ctx context.Context, msg syncbridge.Message) {
	var r contract.Report
	if err := contract.DecodeStrict(&msg, &r); err != nil || !contract.ValidID(r.ReportID) || !contract.ValidID(r.ItemID) ||
		!contract.ValidText(r.Reason) || !contract.ValidText(r.Details) || len(r.Reason) > contract.MaxTextLen || len(r.Details) > contract.MaxTextLen {
		s.log.Warn("malformed report dropped", "err", err)
		return
	}
	if f := s.opts.BeforeReport; f != nil {
		if err := f(ctx, r); err != nil {
			s.log.Warn("report dropped", "report_id", r.ReportID, "err", err)
			return
		}
	}
	backoff := 50 * time.Millisecond
	for {
		st, recorded, err := s.recordReport(ctx, r)
		if err == nil {
			if recorded {
				s.log.Info("report processed", "report_id", r.ReportID, "item_id", r.ItemID, "status", st.Status)
				s.wake()
			}
			return
		}
		s.log.Warn("report not recorded; retrying", "report_id", r.ReportID, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-s.stop:
			t.Stop()
			s.log.Error("report not recorded: service stopping", "report_id", r.ReportID, "item_id", r.ItemID)
			return
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// recordReport records r, unless it was recorded before (redelivered),
// counts it on its item, and puts the ReportProcessed event in the outbox,
// in one transaction. It reports whether it recorded r now.
func (s *Service) recordReport(ctx context.Context, r contract.Report) (contract.ReportStatus, bool, error) {
	now := db.Now()
	st := contract.ReportStatus{ReportID: r.ReportID, ItemID: r.ItemID, Status: contract.StatusRecorded, SubmittedAt: r.SubmittedAt.UTC().Truncate(time.Microsecond), ProcessedAt: &now}
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		_, found, err := s.getItem(ctx, tx, r.ItemID, true)
		if err != nil {
			return err
		}
		if !found {
			st.Status = contract.StatusRejected
		}
		res, err := tx.ExecContext(ctx, s.db.Q(`INSERT INTO reports (report_id, item_id, status, reason, details, submitted_at, processed_at)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (report_id) DO NOTHING`),
			st.ReportID, st.ItemID, st.Status, r.Reason, r.Details, st.SubmittedAt, now)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return errUnchanged // redelivered
		}
		if found {
			if _, err := tx.ExecContext(ctx, s.db.Q(`UPDATE items SET reports = reports + 1 WHERE id = ?`), r.ItemID); err != nil {
				return err
			}
		}
		return s.enqueue(ctx, tx, r.ItemID, contract.EventReportProcessed, st)
	})
	if errors.Is(err, errUnchanged) {
		return st, false, nil
	}
	return st, err == nil, err
}

// getReport reads a report's status.
func (s *Service) getReport(ctx context.Context, id string) (contract.ReportStatus, bool, error) {
	st := contract.ReportStatus{ReportID: id}
	var processed time.Time
	err := s.db.QueryRowContext(ctx, s.db.Q(`SELECT item_id, status, submitted_at, processed_at FROM reports WHERE report_id = ?`), id).
		Scan(&st.ItemID, &st.Status, &st.SubmittedAt, &processed)
	if errors.Is(err, sql.ErrNoRows) {
		return contract.ReportStatus{}, false, nil
	}
	if err != nil {
		return contract.ReportStatus{}, false, err
	}
	st.SubmittedAt = st.SubmittedAt.UTC()
	processed = processed.UTC()
	st.ProcessedAt = &processed
	return st, true, nil
}
