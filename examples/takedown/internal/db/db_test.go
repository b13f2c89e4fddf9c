package db_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncbridge/syncbridge/examples/takedown/internal/db"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/dbtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestOpen: the tables exist, every process may open the database at
// once (the first creates the tables), times come back as written, and the
// description hides the password.
func TestOpen(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, dsn string) {
		var wg sync.WaitGroup
		dbs := make([]*db.DB, 4)
		for i := range dbs {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				d, err := db.Open(ctx, dsn)
				if err != nil {
					t.Error(err)
					return
				}
				dbs[i] = d
			})
		}
		wg.Wait()
		for _, d := range dbs {
			if d != nil {
				defer d.Close()
			}
		}
		d := dbs[0]
		if d == nil {
			t.FailNow()
		}
		now := db.Now()
		if _, err := d.ExecContext(t.Context(), d.Q(`INSERT INTO items (id, owner, title, audience, removed_at) VALUES (?, ?, ?, ?, ?)`), "itm-1", "o", "t", "{}", now); err != nil {
			t.Fatal(err)
		}
		var got time.Time
		var down bool
		if err := d.QueryRowContext(t.Context(), d.Q(`SELECT removed_at, taken_down FROM items WHERE id = ?`), "itm-1").Scan(&got, &down); err != nil {
			t.Fatal(err)
		}
		if !got.Equal(now) || down {
			t.Errorf("read back %v, %v; wrote %v, false", got, down, now)
		}
		if s := d.String(); strings.Contains(s, "secret") || s == "" {
			t.Errorf("String() = %q", s)
		}
	})
}

func TestDialect(t *testing.T) {
	for dsn, want := range map[string]bool{
		"postgres://u@h/d": true, "postgresql://u@h/d": true, "takedown.db": false, "file:x.db": false, "/tmp/postgres://x": false,
	} {
		if got := db.IsPostgres(dsn); got != want {
			t.Errorf("IsPostgres(%q) = %v", dsn, got)
		}
	}
	pg := &db.DB{Dialect: db.Postgres}
	if got := pg.Q(`SELECT a FROM t WHERE b = ? AND c = ?`); got != `SELECT a FROM t WHERE b = $1 AND c = $2` {
		t.Errorf("Q = %q", got)
	}
	if pg.ForUpdate() != " FOR UPDATE" || (&db.DB{}).ForUpdate() != "" {
		t.Error("ForUpdate")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, dsn := range []string{"", t.TempDir() + "/missing-dir/x.db", "postgres://nobody:secret@127.0.0.1:1/x?connect_timeout=2"} {
		if d, err := db.Open(ctx, dsn); err == nil {
			d.Close()
			t.Errorf("Open(%q): no error", dsn)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("Open's error shows the password: %v", err)
		}
	}
}
