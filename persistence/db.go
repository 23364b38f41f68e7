// Package persistence implements the domain's repositories with Bun, on
// PostgreSQL in production and on embedded SQLite by default. The models
// and repositories are shared; each dialect has its migrations, and the
// few queries and upkeep that differ (row locks, byte-order sorting, the
// verification query, notifications between replicas, transactions'
// deadlines, the audit log's partitions) are the dialect's, chosen once
// by Open (dialect.go). It also owns the process's change feed: what
// commits through it is delivered to the feed after the commit, and on
// PostgreSQL a listener delivers what the other replicas commit.
package persistence

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"net"
	neturl "net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uptrace/bun"
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
	bun     *bun.DB
	dialect dialect
	// feed delivers committed changes to this process's caches; origin
	// tells this process's NOTIFYs from other replicas'.
	feed   *domain.ChangeFeed
	origin string
	log    *slog.Logger
	// The listener runs from the first Changes call until Close.
	listenOnce sync.Once
	stopListen context.CancelFunc
	listening  sync.WaitGroup
	// auditAppended counts the audit events appended through this DB.
	auditAppended atomic.Uint64
}

// Option tunes the connection pool Open sets up.
type Option func(*options)

type options struct {
	maxConns         int
	statementTimeout time.Duration
	log              *slog.Logger
}

// WithLogger logs the change listener's state to log (default: slog's
// default logger).
func WithLogger(log *slog.Logger) Option { return func(o *options) { o.log = log } }

// WithMaxConns bounds the pool to n connections (n > 0); by default it
// holds a few per core. Callers beyond the bound wait for a connection, for
// as long as their context allows.
func WithMaxConns(n int) Option { return func(o *options) { o.maxConns = n } }

// WithStatementTimeout makes PostgreSQL itself end any statement running
// longer than d, and a statement in a transaction whose context has a
// nearer deadline when that deadline passes: a request that gave up must
// not leave its query waiting on a lock in the database. The driver gives
// up at the context's deadline on its side; only the server can stop the
// statement there. It does nothing on SQLite, where the driver interrupts
// the statement itself.
func WithStatementTimeout(d time.Duration) Option { return func(o *options) { o.statementTimeout = d } }

// Open connects to the database named by url: empty for the embedded
// default (a SQLite file under ./data), "postgres://…" for PostgreSQL, or
// "sqlite:PATH" ("sqlite::memory:" for a throwaway database).
func Open(ctx context.Context, url string, opts ...Option) (*DB, error) {
	o := options{log: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	var db *DB
	switch {
	case url == "":
		if err := os.MkdirAll(filepath.Dir(DefaultSQLitePath), 0o700); err != nil {
			return nil, fmt.Errorf("create data directory: %w", err)
		}
		db = openSQLite(DefaultSQLitePath, o)
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		var err error
		if db, err = openPostgres(url, o); err != nil {
			return nil, fmt.Errorf("DATABASE_URL %s: %w", redact(url), err)
		}
	case strings.HasPrefix(url, "sqlite:"):
		path := strings.TrimPrefix(url, "sqlite:")
		if path == "" {
			return nil, fmt.Errorf("DATABASE_URL: sqlite: needs a path, e.g. sqlite:data/registry.db or sqlite::memory:")
		}
		db = openSQLite(path, o)
	default:
		return nil, fmt.Errorf("DATABASE_URL: want postgres://…, sqlite:PATH or empty for the embedded default, got %q", redact(url))
	}
	if err := db.Ready(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to database %s: %w", redact(url), err)
	}
	return db, nil
}

func openPostgres(dsn string, o options) (*DB, error) {
	if o.statementTimeout > 0 {
		dsn = withStatementTimeout(dsn, o.statementTimeout)
	}
	connector, err := newConnector(dsn, pgdriver.WithResetSessionFunc(checkAlive))
	if err != nil {
		return nil, err
	}
	sqldb := sql.OpenDB(connector)
	// A bounded pool: replicas share one PostgreSQL, so each takes a few
	// connections per core rather than as many as it can.
	maxConns := 4 * runtime.GOMAXPROCS(0)
	if o.maxConns > 0 {
		maxConns = o.maxConns
	}
	sqldb.SetMaxOpenConns(maxConns)
	sqldb.SetMaxIdleConns(maxConns)
	sqldb.SetConnMaxIdleTime(5 * time.Minute)
	return &DB{
		bun: bun.NewDB(sqldb, pgdialect.New()), dialect: postgresDialect{connector: connector, statementTimeout: o.statementTimeout},
		feed: domain.NewChangeFeed(maxSilence), origin: domain.NewID()[24:], log: o.log,
	}, nil
}

// newConnector is pgdriver.NewConnector, which panics on a URL it cannot
// parse (a bad port, an unknown sslmode): a mistyped DATABASE_URL must stop
// the start with an error, not a crash whose message holds the password.
func newConnector(dsn string, opts ...pgdriver.Option) (c *pgdriver.Connector, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
			var urlErr *neturl.Error
			if e, ok := p.(error); ok && errors.As(e, &urlErr) {
				err = urlErr.Err // without the URL, which holds the password
			}
		}
	}()
	return pgdriver.NewConnector(append([]pgdriver.Option{pgdriver.WithDSN(dsn)}, opts...)...), nil
}

// checkAlive runs before a pooled connection is reused. An idle connection
// has nothing to read: if it does (the server's goodbye) or its socket is
// closed, the database restarted or something between closed it, and the
// connection is discarded for a fresh one instead of failing the request
// that drew it. Without this, every connection parked in the pool during
// an outage failed one request after the database was back.
func checkAlive(_ context.Context, cn *pgdriver.Conn) error {
	nc := cn.Conn()
	if tc, ok := nc.(interface{ NetConn() net.Conn }); ok { // TLS: look at the socket beneath
		nc = tc.NetConn()
	}
	if idleConnBroken(nc) {
		return driver.ErrBadConn
	}
	return nil
}

// withStatementTimeout adds statement_timeout to a PostgreSQL URL's
// connection parameters, unless the URL sets one itself.
func withStatementTimeout(dsn string, d time.Duration) string {
	u, err := neturl.Parse(dsn)
	if err != nil {
		return dsn // the driver reports the bad URL
	}
	q := u.Query()
	if q.Get("statement_timeout") == "" {
		q.Set("statement_timeout", strconv.FormatInt(max(1, d.Milliseconds()), 10))
		u.RawQuery = q.Encode()
	}
	return u.String()
}

func openSQLite(path string, o options) *DB {
	// WAL lets readers run beside the writer; immediate transactions take the
	// write lock at BEGIN, so two writers queue on busy_timeout instead of
	// failing when one upgrades a read lock.
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)" +
		"&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	sqldb, err := sql.Open(sqliteshim.ShimName, dsn)
	if err != nil {
		panic(err) // sql.Open fails only for an unknown driver name
	}
	switch {
	case path == ":memory:":
		// Every connection to :memory: is a database of its own: keep one.
		sqldb.SetMaxOpenConns(1)
	case o.maxConns > 0:
		sqldb.SetMaxOpenConns(o.maxConns)
	default:
		sqldb.SetMaxOpenConns(2 * runtime.GOMAXPROCS(0))
	}
	sqldb.SetMaxIdleConns(2 * runtime.GOMAXPROCS(0))
	sqldb.SetConnMaxIdleTime(0)
	// One process owns the file: every change is committed here, and the
	// feed is always current.
	return &DB{bun: bun.NewDB(sqldb, sqlitedialect.New()), dialect: sqliteDialect{}, feed: domain.NewLocalChangeFeed(), origin: domain.NewID()[24:], log: o.log}
}

// Changes returns the change feed of this process: every change committed
// through db is delivered to it after the commit, and on PostgreSQL the
// first call starts the listener (stopped by Close) that delivers the
// other replicas' changes and keeps the feed current.
func (db *DB) Changes() *domain.ChangeFeed {
	db.listenOnce.Do(func() {
		ctx, stop := context.WithCancel(context.Background())
		db.stopListen = stop
		db.dialect.listen(ctx, db, &db.listening)
	})
	return db.feed
}

// KeyVerifier returns a verifier of db's keys whose cache is kept coherent
// by db's change feed (see Changes). The server, the test servers and the
// tools build theirs here, so no cache misses an invalidation.
func (db *DB) KeyVerifier(now domain.Clock, cfg domain.KeyCacheConfig) *domain.KeyVerifier {
	return domain.NewKeyVerifier(db.Store(), now, domain.NewKeyCache(db.Changes(), cfg))
}

// Ready reports whether the database answers.
func (db *DB) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return db.bun.PingContext(ctx)
}

// AuditEventsAppended returns how many audit events this process has
// appended (committed, idempotent repeats excluded), for the append-rate
// metric.
func (db *DB) AuditEventsAppended() uint64 { return db.auditAppended.Load() }

// Close stops the change listener and closes the connection pool.
func (db *DB) Close() error {
	db.listenOnce.Do(func() {}) // no listener starts after this
	if db.stopListen != nil {
		db.stopListen()
	}
	db.listening.Wait()
	return db.bun.Close()
}

// Bun returns the underlying Bun database, for tests and tools.
func (db *DB) Bun() *bun.DB { return db.bun }

// Dialect names the database's dialect: "pg" or "sqlite".
func (db *DB) Dialect() string { return db.bun.Dialect().Name().String() }

// Shared reports whether other processes may use the database too:
// PostgreSQL is shared by the replicas; a SQLite file belongs to the one
// process that opened it.
func (db *DB) Shared() bool { return db.dialect.shared() }

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
