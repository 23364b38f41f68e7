// Package testdb opens real databases for tests: SQLite always, and
// PostgreSQL from TEST_DATABASE_URL (default: the local server at
// 127.0.0.1:5432). Each test gets a fresh, migrated database. With CI=true a
// PostgreSQL that does not answer fails the test instead of skipping it.
package testdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tenant-registry/tenant-registry/persistence"
)

// DefaultPostgresURL is used when TEST_DATABASE_URL is not set.
const DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Dialects are the names Run gives its subtests.
var Dialects = []string{"sqlite", "postgres"}

// Run runs fn once per dialect, as subtests named after it, each with a
// fresh migrated database.
func Run(t *testing.T, fn func(t *testing.T, db *persistence.DB)) {
	t.Helper()
	for _, d := range Dialects {
		t.Run(d, func(t *testing.T) { fn(t, MustOpen(t, d)) })
	}
}

// MustOpen returns a fresh migrated database of the dialect, closed and
// removed when t ends.
func MustOpen(t testing.TB, dialect string) *persistence.DB {
	t.Helper()
	var dbURL string
	switch dialect {
	case "sqlite":
		dbURL = "sqlite:" + filepath.Join(t.TempDir(), "test.db")
	case "postgres":
		dbURL = postgresURL(t)
	default:
		t.Fatalf("unknown dialect %q", dialect)
	}
	return MustOpenURL(t, dbURL)
}

// MustOpenURL opens and migrates the database at dbURL, closing it when t ends.
func MustOpenURL(t testing.TB, dbURL string) *persistence.DB {
	t.Helper()
	ctx := context.Background()
	db, err := persistence.Open(ctx, dbURL)
	if err != nil {
		t.Fatalf("open %s: %v", dbURL, err)
	}
	t.Cleanup(func() { db.Close() })
	m, err := db.Migrator()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Up(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db
}

// PostgresURL returns the URL of a new, empty PostgreSQL database that is
// dropped when t ends, or skips t (fails it with CI=true) when PostgreSQL
// does not answer.
func PostgresURL(t testing.TB) string {
	t.Helper()
	return postgresURL(t)
}

var (
	adminOnce sync.Once
	adminDB   *persistence.DB
	adminErr  error
	adminURL  string
)

func postgresURL(t testing.TB) string {
	t.Helper()
	adminOnce.Do(func() {
		adminURL = os.Getenv("TEST_DATABASE_URL")
		if adminURL == "" {
			adminURL = DefaultPostgresURL
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		adminDB, adminErr = persistence.Open(ctx, adminURL)
	})
	if adminErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required with CI=true: %v", adminErr)
		}
		t.Skipf("PostgreSQL not reachable (set TEST_DATABASE_URL): %v", adminErr)
	}
	name := "tr_test_" + randomHex(6)
	ctx := context.Background()
	if _, err := adminDB.Bun().ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		_, _ = adminDB.Bun().ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatalf("TEST_DATABASE_URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
