// Package db opens the takedown example's database and creates its tables:
// SQLite in a file, through a pure-Go driver (modernc.org/sqlite), so that
// the example needs no setup; or PostgreSQL, given a postgres:// URL
// (through pgx), so that several items-service and API processes can share
// it.
//
// The items service owns the items, takedowns, reports and outbox tables;
// the API owns the audit table. Both may share one database, as the
// example does, or each have its own.
package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"modernc.org/sqlite"               // the "sqlite" driver, and its error codes
)

// Dialect is the SQL dialect of a database.
type Dialect int

// Dialects.
const (
	SQLite Dialect = iota
	Postgres
)

func (d Dialect) String() string {
	if d == Postgres {
		return "PostgreSQL"
	}
	return "SQLite"
}

// DB is an open database. It is safe for concurrent use. Queries are
// written with ? placeholders and passed through Q, which rewrites them for
// PostgreSQL.
type DB struct {
	*sql.DB
	// Dialect says which database this is.
	Dialect Dialect
	desc    string

	rebound sync.Map // query with ? -> query with $n, for PostgreSQL
}

// IsPostgres reports whether dsn names a PostgreSQL database (a
// postgres:// or postgresql:// URL) rather than an SQLite file.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Open opens the database that dsn names, creates the tables that are
// missing, and returns it. A postgres:// (or postgresql://) URL opens
// PostgreSQL; anything else is the path of an SQLite file, created if
// missing, opened in WAL mode with full synchronous commits, so that a
// committed transaction survives a crash. ctx bounds connecting and
// creating the tables. Several processes may open one database at once.
func Open(ctx context.Context, dsn string) (*DB, error) {
	if dsn == "" {
		return nil, errors.New("db: empty database name")
	}
	d := &DB{}
	var err error
	if IsPostgres(dsn) {
		d.Dialect = Postgres
		d.desc = "PostgreSQL at " + redact(dsn)
		d.DB, err = sql.Open("pgx", dsn)
		if err == nil {
			d.SetMaxOpenConns(16)
			d.SetMaxIdleConns(16)
		}
	} else {
		d.Dialect = SQLite
		d.desc = "SQLite file " + strings.TrimPrefix(dsn, "file:")
		d.DB, err = sql.Open("sqlite", sqliteDSN(dsn))
		if err == nil {
			// SQLite writes one transaction at a time; a few connections
			// let reads go on while one writes (WAL).
			d.SetMaxOpenConns(8)
			d.SetMaxIdleConns(8)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("db: open %s: %w", d.desc, err)
	}
	d.SetConnMaxIdleTime(time.Minute)
	if err := d.ping(ctx); err != nil {
		d.Close()
		return nil, fmt.Errorf("db: %s: %w", d.desc, err)
	}
	if err := d.migrate(ctx); err != nil {
		d.Close()
		return nil, fmt.Errorf("db: %s: create tables: %w", d.desc, err)
	}
	return d, nil
}

// ping connects. A new SQLite connection switches the file to WAL, which
// takes the file's exclusive lock without waiting for it (SQLite calls no
// busy handler there): when several processes open one new file at once,
// it is tried again, within ctx.
func (d *DB) ping(ctx context.Context) error {
	wait := 5 * time.Millisecond
	for {
		err := d.PingContext(ctx)
		var se *sqlite.Error
		if err == nil || d.Dialect != SQLite || !errors.As(err, &se) || se.Code()&0xff != sqliteBusy {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// sqliteBusy is SQLITE_BUSY, the primary result code of a locked file.
const sqliteBusy = 5

// sqliteDSN adds the connection settings to an SQLite path: a busy timeout
// (other connections and processes may hold the write lock), WAL, fsync on
// every commit, transactions that take the write lock when they begin (so
// that two read-then-write transactions never deadlock), and times stored
// as text with nanoseconds and zone.
func sqliteDSN(path string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Set("_txlock", "immediate")
	q.Set("_time_format", "sqlite")
	if !strings.HasPrefix(path, "file:") {
		path = "file:" + path
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return path + sep + q.Encode()
}

// redact removes the password from a URL.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// String describes the database, without its password.
func (d *DB) String() string { return d.desc }

// Q returns query, written with ? placeholders, in d's dialect.
func (d *DB) Q(query string) string {
	if d.Dialect != Postgres {
		return query
	}
	if q, ok := d.rebound.Load(query); ok {
		return q.(string)
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	d.rebound.Store(query, b.String())
	return b.String()
}

// ForUpdate returns " FOR UPDATE" on PostgreSQL, to lock the rows a SELECT
// reads until the transaction ends, and "" on SQLite, whose transactions
// hold the database's write lock from their start.
func (d *DB) ForUpdate() string {
	if d.Dialect == Postgres {
		return " FOR UPDATE"
	}
	return ""
}

// Tx runs f in a transaction and commits it, or rolls it back when f
// returns an error (which Tx returns).
func (d *DB) Tx(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := d.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// Now returns the current time as the database stores it: UTC, to the
// microsecond (PostgreSQL's precision), so that a time read back equals
// the one written.
func Now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// schema creates the tables. {ts} is a timestamp type, {id} an
// auto-incremented primary key.
const schema = `
-- The catalogue (items service).
CREATE TABLE IF NOT EXISTS items (
	id          TEXT PRIMARY KEY,
	owner       TEXT NOT NULL,
	title       TEXT NOT NULL,
	audience    TEXT NOT NULL,
	taken_down  BOOLEAN NOT NULL DEFAULT FALSE,
	removed_at  {ts},
	takedown_id TEXT,
	reports     INTEGER NOT NULL DEFAULT 0
);
-- The inbox (items service): one row per takedown ID, written in the
-- transaction that applied the command, or recorded why it was not.
CREATE TABLE IF NOT EXISTS takedowns (
	takedown_id  TEXT PRIMARY KEY,
	item_id      TEXT NOT NULL,
	status       TEXT NOT NULL,
	removed_at   {ts},
	removed_by   TEXT,
	reason       TEXT NOT NULL,
	case_ref     TEXT NOT NULL,
	requested_by TEXT NOT NULL,
	requested_at {ts},
	expires_at   {ts},
	recorded_at  {ts} NOT NULL
);
-- Users' reports (items service), one row per report ID.
CREATE TABLE IF NOT EXISTS reports (
	report_id    TEXT PRIMARY KEY,
	item_id      TEXT NOT NULL,
	status       TEXT NOT NULL,
	reason       TEXT NOT NULL,
	details      TEXT NOT NULL,
	submitted_at {ts} NOT NULL,
	processed_at {ts} NOT NULL
);
-- The outbox (items service): domain events written in the transaction
-- that caused them, published afterwards.
CREATE TABLE IF NOT EXISTS outbox (
	id            {id},
	topic         TEXT NOT NULL,
	msg_key       TEXT NOT NULL,
	event_type    TEXT NOT NULL,
	payload       TEXT NOT NULL,
	created_at    {ts} NOT NULL,
	claimed_by    TEXT,
	claimed_until {ts}
);
-- The audit trail (API): one row per takedown request, written when it
-- arrives (before anything is sent) and completed when it is answered.
CREATE TABLE IF NOT EXISTS audit (
	id           {id},
	received_at  {ts} NOT NULL,
	api_instance TEXT NOT NULL,
	remote       TEXT NOT NULL,
	token_id     TEXT,
	takedown_id  TEXT UNIQUE,
	item_id      TEXT,
	reason       TEXT,
	case_ref     TEXT,
	expires_at   {ts},
	outcome      TEXT NOT NULL,
	http_status  INTEGER,
	answered_at  {ts},
	latency_ms   DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS audit_received_at ON audit (received_at);
`

// migrate creates the missing tables, one process at a time.
func (d *DB) migrate(ctx context.Context) error {
	ddl := schema
	switch d.Dialect {
	case Postgres:
		ddl = strings.NewReplacer("{ts}", "TIMESTAMPTZ", "{id}", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY").Replace(ddl)
	default:
		ddl = strings.NewReplacer("{ts}", "TIMESTAMP", "{id}", "INTEGER PRIMARY KEY AUTOINCREMENT").Replace(ddl)
	}
	return d.Tx(ctx, func(tx *sql.Tx) error {
		if d.Dialect == Postgres {
			// CREATE TABLE IF NOT EXISTS races with itself across sessions.
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7427013)`); err != nil {
				return err
			}
		}
		for stmt := range strings.SplitSeq(ddl, ";") {
			if strings.TrimSpace(stripComments(stmt)) == "" {
				continue
			}
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("%w in %s", err, strings.TrimSpace(stmt))
			}
		}
		return nil
	})
}

func stripComments(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			b.WriteString(line)
		}
	}
	return b.String()
}
