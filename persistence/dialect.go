package persistence

import (
	"context"
	"database/sql"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/driver/pgdriver"
	"github.com/uptrace/bun/schema"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/migrations"
)

// dialect is everything PostgreSQL and SQLite do differently in this
// package, chosen once by Open. The models, the repositories and their
// queries are shared; each query or piece of upkeep that differs asks the
// dialect.
type dialect interface {
	// migrations are the dialect's embedded SQL migrations.
	migrations() fs.FS
	// shared reports whether other processes (replicas) use the database
	// too, so that changes must travel between them.
	shared() bool
	// transaction runs fn in a transaction that gives up when ctx ends,
	// also while it waits for another's lock (see store.go).
	transaction(ctx context.Context, db *bun.DB, fn func(context.Context, bun.Tx) error) error
	// forUpdate makes q keep concurrent writers of the rows it reads out
	// until the transaction ends.
	forUpdate(q *bun.SelectQuery) *bun.SelectQuery
	// execAll runs queries, which return no rows, in order, stopping at
	// the first that fails.
	execAll(ctx context.Context, db bun.IDB, queries []statement) error
	// byteOrder is an ORDER BY term sorting column ascending by its
	// bytes, so both dialects list in one order.
	byteOrder(column string) string
	// verificationQuery is the statement GetForVerification runs: the
	// same query on both, PostgreSQL's inside a function (apikeys.go).
	verificationQuery() string
	// announce sends a change, from inside its transaction, to the other
	// replicas, which hear it once the transaction commits (changes.go).
	announce(ctx context.Context, db bun.IDB, origin string, c domain.Change) error
	// listen starts, until ctx ends, delivering what the other replicas
	// commit to db's change feed (listener.go).
	listen(ctx context.Context, db *DB, running *sync.WaitGroup)
	// ensureAuditPartitions and dropExpiredAuditPartitions keep the audit
	// events' monthly partitions; alone runs audit maintenance on one
	// process at a time (audit_retention.go).
	ensureAuditPartitions(ctx context.Context, db *bun.DB, now time.Time) error
	dropExpiredAuditPartitions(ctx context.Context, db *bun.DB, now time.Time, cutoff map[string]time.Time, out *Expiry) error
	alone(ctx context.Context, db *bun.DB, fn func() error) (ran bool, err error)
}

// postgresDialect is the production dialect: replicas share the database.
// statement is a query that returns no rows: an insert or a raw one.
type statement interface {
	schema.QueryAppender
	Exec(ctx context.Context, dest ...any) (sql.Result, error)
}

type postgresDialect struct {
	// connector opens connections outside the pool, for the listener's
	// heartbeats.
	connector *pgdriver.Connector
	// statementTimeout is statement_timeout on every connection; zero
	// when none is set (see WithStatementTimeout).
	statementTimeout time.Duration
}

// sqliteDialect is the embedded dialect: one process owns the database file.
type sqliteDialect struct{}

var (
	_ dialect = postgresDialect{}
	_ dialect = sqliteDialect{}
)

func (postgresDialect) migrations() fs.FS { return migrations.Postgres }
func (sqliteDialect) migrations() fs.FS   { return migrations.SQLite }

func (postgresDialect) shared() bool { return true }
func (sqliteDialect) shared() bool   { return false }

func (postgresDialect) forUpdate(q *bun.SelectQuery) *bun.SelectQuery { return q.For("UPDATE") }

// forUpdate leaves q as it is: SQLite has no row locks, and transactions
// here begin IMMEDIATE, holding the database's write lock from the start.
func (sqliteDialect) forUpdate(q *bun.SelectQuery) *bun.SelectQuery { return q }

// execAll sends queries as one script: its statements run in order in
// the transaction, and the first to fail ends it, at the cost of one
// round trip for all of them instead of one each. The queries are the
// script's arguments, so that what traces and logs see of it (its
// template) holds no value.
func (postgresDialect) execAll(ctx context.Context, db bun.IDB, queries []statement) error {
	if len(queries) == 0 {
		return nil
	}
	args := make([]any, len(queries))
	for i, q := range queries {
		args[i] = q
	}
	template := "/* " + strconv.Itoa(len(queries)) + " statements */ " + strings.Repeat("?;\n", len(queries)-1) + "?"
	_, err := db.NewRaw(template, args...).Exec(ctx)
	return err
}

// execAll runs queries one at a time: SQLite has no round trips to save.
func (sqliteDialect) execAll(ctx context.Context, _ bun.IDB, queries []statement) error {
	for _, q := range queries {
		if _, err := q.Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

// byteOrder sorts in the "C" collation: the database's default would
// sort punctuation ('-') unlike SQLite.
func (postgresDialect) byteOrder(column string) string { return column + ` COLLATE "C" ASC` }

// byteOrder needs no collation: SQLite's default (BINARY) is byte order.
func (sqliteDialect) byteOrder(column string) string { return column + " ASC" }

func (postgresDialect) verificationQuery() string { return verificationFunction }
func (sqliteDialect) verificationQuery() string   { return verificationQuery }
