// Package persistence implements the domain's repositories with Bun, on
// PostgreSQL in production and on embedded SQLite by default. The models,
// repositories and queries are shared; only the migrations differ.
package persistence

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/driver/pgdriver"
	"github.com/uptrace/bun/driver/sqliteshim"

	"github.com/tenant-registry/tenant-registry/domain"
)

// DefaultSQLitePath is where the embedded default keeps its data, so that
// it survives a restart.
const DefaultSQLitePath = "data/tenant-registry.db"

// DB is an open database of either dialect.
type DB struct {
	bun  *bun.DB
	subs *subscribers
	// Embedded reports whether this is the embedded SQLite database.
	Embedded bool
}

// Open connects to the database named by url: empty for the embedded
// default (a SQLite file under ./data), "postgres://…" for PostgreSQL, or
// "sqlite:PATH" ("sqlite::memory:" for a throwaway database).
func Open(ctx context.Context, url string) (*DB, error) {
	var db *DB
	switch {
	case url == "":
		if err := os.MkdirAll(filepath.Dir(DefaultSQLitePath), 0o700); err != nil {
			return nil, fmt.Errorf("create data directory: %w", err)
		}
		db = openSQLite(DefaultSQLitePath)
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		db = openPostgres(url)
	case strings.HasPrefix(url, "sqlite:"):
		path := strings.TrimPrefix(url, "sqlite:")
		if path == "" {
			return nil, fmt.Errorf("DATABASE_URL: sqlite: needs a path, e.g. sqlite:data/registry.db or sqlite::memory:")
		}
		db = openSQLite(path)
	default:
		return nil, fmt.Errorf("DATABASE_URL: want postgres://…, sqlite:PATH or empty for the embedded default, got %q", redact(url))
	}
	if err := db.Ready(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to database %s: %w", redact(url), err)
	}
	return db, nil
}

func openPostgres(url string) *DB {
	sqldb := sql.OpenDB(pgdriver.NewConnector(pgdriver.WithDSN(url)))
	// A bounded pool: replicas share one PostgreSQL, so each takes a few
	// connections per core rather than as many as it can.
	maxConns := 4 * runtime.GOMAXPROCS(0)
	sqldb.SetMaxOpenConns(maxConns)
	sqldb.SetMaxIdleConns(maxConns)
	sqldb.SetConnMaxIdleTime(5 * time.Minute)
	return &DB{bun: bun.NewDB(sqldb, pgdialect.New()), subs: &subscribers{}}
}

func openSQLite(path string) *DB {
	// WAL lets readers run beside the writer; immediate transactions take the
	// write lock at BEGIN, so two writers queue on busy_timeout instead of
	// failing when one upgrades a read lock.
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)" +
		"&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	sqldb, err := sql.Open(sqliteshim.ShimName, dsn)
	if err != nil {
		panic(err) // sql.Open fails only for an unknown driver name
	}
	if path == ":memory:" {
		// Every connection to :memory: is a database of its own: keep one.
		sqldb.SetMaxOpenConns(1)
	} else {
		sqldb.SetMaxOpenConns(2 * runtime.GOMAXPROCS(0))
	}
	sqldb.SetMaxIdleConns(2 * runtime.GOMAXPROCS(0))
	sqldb.SetConnMaxIdleTime(0)
	return &DB{bun: bun.NewDB(sqldb, sqlitedialect.New()), subs: &subscribers{}, Embedded: true}
}

// OnInvalidation registers fn to receive every invalidation this process
// commits, and, once ListenInvalidations runs, those of other replicas.
func (db *DB) OnInvalidation(fn func(domain.Invalidation)) { db.subs.add(fn) }

// Ready reports whether the database answers.
func (db *DB) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return db.bun.PingContext(ctx)
}

// Close closes the connection pool.
func (db *DB) Close() error { return db.bun.Close() }

// Bun returns the underlying Bun database, for tests and tools.
func (db *DB) Bun() *bun.DB { return db.bun }

// Dialect names the database's dialect: "pg" or "sqlite".
func (db *DB) Dialect() string { return db.bun.Dialect().Name().String() }

func isPostgres(db bun.IDB) bool { return db.Dialect().Name() == dialect.PG }

// redact hides a password in a database URL before it is printed.
func redact(url string) string {
	at := strings.LastIndex(url, "@")
	scheme := strings.Index(url, "://")
	if at < 0 || scheme < 0 {
		return url
	}
	userinfo := url[scheme+3 : at]
	if i := strings.Index(userinfo, ":"); i >= 0 {
		return url[:scheme+3] + userinfo[:i] + ":xxxxx" + url[at:]
	}
	return url
}
