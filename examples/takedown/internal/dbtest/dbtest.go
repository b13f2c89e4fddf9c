// Package dbtest gives tests their databases: a fresh SQLite file, and a
// fresh PostgreSQL database on the server that TAKEDOWN_PG_URL names.
//
// Tests that need PostgreSQL or a real Kafka broker skip when their
// environment variable is unset, unless TAKEDOWN_REQUIRE_REAL=1, which CI
// sets: then they fail, so that CI cannot pass by skipping them.
package dbtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge/examples/takedown/internal/db"
)

// Environment variables.
const (
	// EnvPostgres is a postgres:// URL of a database on a server where the
	// tests may create and drop databases (scripts/postgres prints one).
	EnvPostgres = "TAKEDOWN_PG_URL"
	// EnvKafka is a comma-separated list of Kafka brokers.
	EnvKafka = "KAFKA_BROKERS"
	// EnvRequireReal, set to 1, makes tests fail instead of skipping when
	// EnvPostgres or EnvKafka is unset.
	EnvRequireReal = "TAKEDOWN_REQUIRE_REAL"
)

// Require returns the value of the environment variable env, or skips the
// test when it is unset (fails it when TAKEDOWN_REQUIRE_REAL=1).
func Require(t testing.TB, env string) string {
	t.Helper()
	v := os.Getenv(env)
	if v != "" {
		return v
	}
	if os.Getenv(EnvRequireReal) == "1" {
		t.Fatalf("%s is unset and %s=1: this test must run", env, EnvRequireReal)
	}
	t.Skipf("%s is unset (scripts/postgres and scripts/kafka start what CI uses)", env)
	return ""
}

// SQLite returns the path of a new SQLite database file in a temporary
// directory of t.
func SQLite(t testing.TB) string {
	return filepath.Join(t.TempDir(), "takedown.db")
}

// Postgres returns the URL of a new, empty PostgreSQL database on the
// server of TAKEDOWN_PG_URL, dropped when the test ends; it skips the test
// when TAKEDOWN_PG_URL is unset (see Require).
func Postgres(t testing.TB) string {
	t.Helper()
	base := Require(t, EnvPostgres)
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	name := "td_" + strings.ToLower(rand.Text()[:12])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		t.Fatalf("create database on %s: %v", base, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, `DROP DATABASE `+name+` WITH (FORCE)`); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// Open opens dsn with db.Open, closed when the test ends.
func Open(t testing.TB, dsn string) *db.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := db.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// Each runs f as a subtest on a new SQLite database ("sqlite") and on a new
// PostgreSQL database ("postgres"), the latter skipped as Postgres says.
func Each(t *testing.T, f func(t *testing.T, dsn string)) {
	t.Run("sqlite", func(t *testing.T) { f(t, SQLite(t)) })
	t.Run("postgres", func(t *testing.T) { f(t, Postgres(t)) })
}
