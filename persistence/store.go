package persistence

import (
	"context"
	"database/sql"
	"strconv"
	"time"

	"github.com/uptrace/bun"

	"github.com/tenant-registry/tenant-registry/domain"
)

// conn is where a repository runs its statements: the database or one of
// its transactions, in the database's dialect.
type conn struct {
	db      bun.IDB
	dialect dialect
}

// repositories binds every repository to one transaction, whose
// after-commit work waits in after until it commits.
type repositories struct {
	db    bun.Tx
	owner *DB // the dialect, the change feed and the audit counter
	after *afterCommit
}

func (r repositories) conn() conn { return conn{db: r.db, dialect: r.owner.dialect} }

func (r repositories) Tenants() domain.TenantRepository { return TenantRepository{r.conn()} }
func (r repositories) Audit() domain.AuditLog {
	return AuditLog{conn: r.conn(), appended: r.countAudit}
}
func (r repositories) ApiKeys() domain.ApiKeyRepository { return ApiKeyRepository{r.conn()} }
func (r repositories) Entitlements() domain.EntitlementRepository {
	return EntitlementRepository{r.conn()}
}
func (r repositories) Products() domain.ProductRepository { return ProductRepository{r.conn()} }
func (r repositories) ProductRequests() domain.ProductRequestRepository {
	return ProductRequestRepository{r.conn()}
}
func (r repositories) Trials() domain.TrialRepository { return TrialRepository{r.conn()} }
func (r repositories) Invalidations() domain.Invalidations {
	return invalidations{conn: r.conn(), owner: r.owner, after: r.after}
}

// countAudit counts n appended audit events once they are committed, so a
// rolled-back append is not counted.
func (r repositories) countAudit(n int) {
	r.after.add(func() { r.owner.auditAppended.Add(uint64(n)) })
}

// Store implements domain.Store: its reads run on the database itself,
// and writes only in the transactions of Atomically.
type Store struct{ owner *DB }

var _ domain.Store = (*Store)(nil)

// Store returns the domain's persistence port on db.
func (db *DB) Store() *Store { return &Store{owner: db} }

func (s *Store) conn() conn { return conn{db: s.owner.bun, dialect: s.owner.dialect} }

// Tenants reads tenants outside a transaction.
func (s *Store) Tenants() domain.TenantReader { return TenantRepository{s.conn()} }

// Audit reads the audit log outside a transaction.
func (s *Store) Audit() domain.AuditReader { return AuditLog{conn: s.conn()} }

// ApiKeys reads API keys outside a transaction.
func (s *Store) ApiKeys() domain.ApiKeyReader { return ApiKeyRepository{s.conn()} }

// Entitlements reads entitlements outside a transaction.
func (s *Store) Entitlements() domain.EntitlementReader { return EntitlementRepository{s.conn()} }

// Products reads the catalog outside a transaction.
func (s *Store) Products() domain.ProductReader { return ProductRepository{s.conn()} }

// ProductRequests reads product requests outside a transaction.
func (s *Store) ProductRequests() domain.ProductRequestReader {
	return ProductRequestRepository{s.conn()}
}

// StoredTime is t as the rows keep it (see storedTime).
func (s *Store) StoredTime(t time.Time) time.Time { return storedTime(t) }

// storedTime is t as both databases keep it, and so as a read returns it:
// in UTC, to the microsecond (PostgreSQL keeps no finer; Bun writes no
// finer to SQLite). The zero time stays zero, which nullable columns store
// as NULL. Every row constructor stores its times through it.
func storedTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// Atomically runs fn in a transaction whose repositories it hands to fn,
// and after the commit the work they left for it, in order. Bun's RunInTx
// calls fn once (it never retries), so that work needs no reset.
func (s *Store) Atomically(ctx context.Context, fn func(domain.Repositories) error) error {
	after := &afterCommit{}
	err := s.owner.dialect.transaction(ctx, s.owner.bun, func(ctx context.Context, tx bun.Tx) error {
		return fn(repositories{db: tx, owner: s.owner, after: after})
	})
	if err != nil {
		return dbError(err)
	}
	after.run()
	return nil
}

// deadlineSlack is how long after its context's deadline the database
// stops a statement: the driver gives up at the deadline itself, so the
// caller hears DeadlineExceeded rather than of a cancelled statement.
const deadlineSlack = 100 * time.Millisecond

// transaction runs fn in a transaction whose statements PostgreSQL stops
// soon after ctx's deadline (see limitStatements).
func (d postgresDialect) transaction(ctx context.Context, db *bun.DB, fn func(context.Context, bun.Tx) error) error {
	return db.RunInTx(ctx, &sql.TxOptions{}, func(ctx context.Context, tx bun.Tx) error {
		if err := d.limitStatements(ctx, tx); err != nil {
			return err
		}
		return fn(ctx, tx)
	})
}

// limitStatements lowers statement_timeout for the transaction when its
// context ends more than a second sooner than the connection's timeout
// would: a transaction waiting on a row lock then stops in PostgreSQL when
// its request gives up, instead of holding a backend (and the locks it
// took) until the lock is free. It costs a round trip, so only for such
// short deadlines; a call with the full REQUEST_TIMEOUT is bounded by the
// connection's statement_timeout.
func (d postgresDialect) limitStatements(ctx context.Context, tx bun.Tx) error {
	deadline, ok := ctx.Deadline()
	if d.statementTimeout <= 0 || !ok {
		return nil
	}
	left := time.Until(deadline)
	if left+time.Second >= d.statementTimeout {
		return nil
	}
	// SET takes no placeholders; the value is a number this code made, and
	// at least 1 (0 would mean no timeout at all).
	_, err := tx.ExecContext(ctx, "SET LOCAL statement_timeout = "+strconv.FormatInt(max(1, (left+deadlineSlack).Milliseconds()), 10))
	return err
}

// sqliteBusyTimeout is the busy_timeout every SQLite connection opens with
// (see openSQLite): how long a writer waits for another's lock.
const sqliteBusyTimeout = 10 * time.Second

// transaction runs fn in a transaction. A writer waits for another
// writer's lock in SQLite's busy handler, which a cancelled context does
// not interrupt: a transaction whose deadline is nearer than busy_timeout
// waits no longer than its deadline, on a connection of its own whose
// busy_timeout is put back afterwards.
func (sqliteDialect) transaction(ctx context.Context, db *bun.DB, fn func(context.Context, bun.Tx) error) error {
	deadline, ok := ctx.Deadline()
	if !ok || time.Until(deadline) >= sqliteBusyTimeout {
		return db.RunInTx(ctx, &sql.TxOptions{}, fn)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	left := time.Until(deadline) + deadlineSlack
	if _, err := conn.ExecContext(ctx, "PRAGMA busy_timeout = "+strconv.FormatInt(max(1, left.Milliseconds()), 10)); err != nil {
		return err
	}
	defer func() {
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), "PRAGMA busy_timeout = "+strconv.FormatInt(sqliteBusyTimeout.Milliseconds(), 10))
	}()
	return conn.RunInTx(ctx, &sql.TxOptions{}, fn)
}
