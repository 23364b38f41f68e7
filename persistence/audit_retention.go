package persistence

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/uptrace/bun"
)

// retentionRow is the audit_retention table.
type retentionRow struct {
	bun.BaseModel `bun:"table:audit_retention"`

	TenantID string `bun:"tenant_id,pk"`
	Days     int    `bun:"days,notnull"`
}

// Retention returns a log's retention, if set.
func (l AuditLog) Retention(ctx context.Context, tenantID string) (int, bool, error) {
	row := &retentionRow{TenantID: tenantID}
	err := l.db.NewSelect().Model(row).WherePK().Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, dbError(err)
	}
	return row.Days, true, nil
}

// SetRetention sets a log's retention.
func (l AuditLog) SetRetention(ctx context.Context, tenantID string, days int) error {
	_, err := l.db.NewInsert().Model(&retentionRow{TenantID: tenantID, Days: days}).
		On("CONFLICT (tenant_id) DO UPDATE").Set("days = EXCLUDED.days").Exec(ctx)
	return dbError(err)
}

// Expiry is what one run of ExpireAudit removed.
type Expiry struct {
	Events            int64    // event bodies deleted, one by one or in dropped partitions
	PartitionsDropped []string // PostgreSQL's monthly partitions dropped whole
}

// partitionPattern matches the names of the events' monthly partitions.
var partitionPattern = regexp.MustCompile(`^audit_events_(\d{4})(\d{2})$`)

// monthStart is the first instant of t's month, in UTC.
func monthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// EnsureAuditPartitions creates the monthly partitions of the events
// table (PostgreSQL) from the month before now's to three months ahead,
// so that appends always find theirs, even with some clock skew. It does
// nothing on SQLite.
func (db *DB) EnsureAuditPartitions(ctx context.Context, now time.Time) error {
	return db.dialect.ensureAuditPartitions(ctx, db.bun, now)
}

func (postgresDialect) ensureAuditPartitions(ctx context.Context, db *bun.DB, now time.Time) error {
	for m := monthStart(now).AddDate(0, -1, 0); !m.After(monthStart(now).AddDate(0, 3, 0)); m = m.AddDate(0, 1, 0) {
		name := fmt.Sprintf("audit_events_%04d%02d", m.Year(), int(m.Month()))
		_, err := db.ExecContext(ctx, fmt.Sprintf(
			"CREATE TABLE IF NOT EXISTS %s PARTITION OF audit_events FOR VALUES FROM ('%s') TO ('%s')",
			name, m.Format(time.RFC3339), m.AddDate(0, 1, 0).Format(time.RFC3339)))
		if err != nil {
			return fmt.Errorf("create audit partition %s: %w", name, err)
		}
	}
	return nil
}

// ensureAuditPartitions has nothing to create: SQLite has no partitions,
// and expiry deletes rows one by one.
func (sqliteDialect) ensureAuditPartitions(context.Context, *bun.DB, time.Time) error { return nil }

// logRetention is one log's retention as ExpireAudit applies it.
type logRetention struct {
	TenantID string `bun:"tenant_id"`
	Days     *int   `bun:"days"` // nil: the default
}

// ExpireAudit deletes the event bodies older than their log's retention
// (defaultDays for logs without one; 0 keeps forever), recording in each
// log's head the highest seq removed; the tree's hashes stay. On
// PostgreSQL a past month whose events have all expired is detached and
// dropped whole; events of a month that also holds events kept longer are
// deleted one by one. Idempotency keys go with their events.
func (db *DB) ExpireAudit(ctx context.Context, now time.Time, defaultDays int) (Expiry, error) {
	var out Expiry
	var logs []logRetention
	err := db.bun.NewRaw(`SELECT h.tenant_id, r.days FROM audit_chain_heads AS h
		LEFT JOIN audit_retention AS r ON r.tenant_id = h.tenant_id ORDER BY h.tenant_id`).Scan(ctx, &logs)
	if err != nil {
		return out, err
	}
	cutoff := map[string]time.Time{} // by log; absent: kept forever
	for _, l := range logs {
		days := defaultDays
		if l.Days != nil {
			days = *l.Days
		}
		if days > 0 {
			cutoff[l.TenantID] = now.AddDate(0, 0, -days)
		}
	}
	if err := db.dialect.dropExpiredAuditPartitions(ctx, db.bun, now, cutoff, &out); err != nil {
		return out, err
	}
	for _, l := range logs {
		before, ok := cutoff[l.TenantID]
		if !ok {
			continue
		}
		n, err := db.expireLog(ctx, l.TenantID, before)
		if err != nil {
			return out, fmt.Errorf("expire the audit log of %q: %w", l.TenantID, err)
		}
		out.Events += n
	}
	return out, nil
}

// expireLog deletes one log's events received before the cutoff, in one
// transaction with its head's expired_through and its idempotency keys.
func (db *DB) expireLog(ctx context.Context, tenantID string, before time.Time) (int64, error) {
	var n int64
	err := db.bun.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var gone struct {
			Count int64 `bun:"count"`
			Max   int64 `bun:"max"`
		}
		err := tx.NewRaw(`SELECT count(*) AS count, coalesce(max(seq), 0) AS max FROM audit_events
			WHERE tenant_id = ? AND receive_time < ?`, tenantID, before).Scan(ctx, &gone)
		if err != nil || gone.Count == 0 {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM audit_events WHERE tenant_id = ? AND receive_time < ?", tenantID, before); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM audit_external_ids WHERE tenant_id = ? AND receive_time < ?", tenantID, before); err != nil {
			return err
		}
		n = gone.Count
		return raiseExpired(ctx, tx, tenantID, gone.Max)
	})
	return n, err
}

// raiseExpired records that a log's events up to seq are gone.
func raiseExpired(ctx context.Context, db bun.IDB, tenantID string, seq int64) error {
	_, err := db.ExecContext(ctx, `UPDATE audit_chain_heads SET expired_through = ? WHERE tenant_id = ? AND expired_through < ?`,
		seq, tenantID, seq)
	return err
}

// keysPerDelete bounds the idempotency keys one statement of
// deleteMonthsKeys deletes (a variable for the tests).
var keysPerDelete = 10_000

// deleteMonthsKeys deletes a log's idempotency keys received in [start,
// end), a range of keys per statement, walking the keys' primary key,
// and after each statement pauses as long as it took: a month may hold
// millions of keys, and deleting them at once would take the database's
// CPU from the appends running meanwhile, for seconds.
func deleteMonthsKeys(ctx context.Context, db *bun.DB, tenantID string, start, end time.Time) error {
	// Keys are walked from after ("", ""): every stored key names a
	// product and an external id, so every key comes after it.
	type key struct {
		Product    string `bun:"product"`
		ExternalID string `bun:"external_id"`
	}
	var after key
	for {
		began := time.Now()
		var upTo []key
		err := db.NewRaw(`SELECT product, external_id FROM audit_external_ids
			WHERE tenant_id = ? AND (product, external_id) > (?, ?)
			ORDER BY product, external_id LIMIT 1 OFFSET ?`,
			tenantID, after.Product, after.ExternalID, keysPerDelete-1).Scan(ctx, &upTo)
		if err != nil {
			return err
		}
		q := `DELETE FROM audit_external_ids WHERE tenant_id = ? AND receive_time >= ? AND receive_time < ?
			AND (product, external_id) > (?, ?)`
		args := []any{tenantID, start, end, after.Product, after.ExternalID}
		if len(upTo) == 0 { // fewer keys than a range left: the rest
			_, err := db.ExecContext(ctx, q, args...)
			return err
		}
		if _, err := db.ExecContext(ctx, q+" AND (product, external_id) <= (?, ?)", append(args, upTo[0].Product, upTo[0].ExternalID)...); err != nil {
			return err
		}
		after = upTo[0]
		select {
		case <-time.After(time.Since(began)):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// dropExpiredAuditPartitions drops each past monthly partition whose
// every event has expired: it records each log's highest seq there first,
// then detaches the partition without blocking appends and drops it.
func (postgresDialect) dropExpiredAuditPartitions(ctx context.Context, db *bun.DB, now time.Time, cutoff map[string]time.Time, out *Expiry) error {
	var names []string
	err := db.NewRaw(`SELECT c.relname FROM pg_inherits AS i
		JOIN pg_class AS c ON c.oid = i.inhrelid JOIN pg_class AS p ON p.oid = i.inhparent
		WHERE p.relname = 'audit_events' ORDER BY c.relname`).Scan(ctx, &names)
	if err != nil {
		return err
	}
	for _, name := range names {
		m := partitionPattern.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		start, err := time.Parse("200601", m[1]+m[2])
		if err != nil {
			continue
		}
		end := start.AddDate(0, 1, 0)
		if !end.Before(monthStart(now).AddDate(0, -1, 0)) {
			continue // the current month, the one before it, and those ahead stay
		}
		var logs []struct {
			TenantID string `bun:"tenant_id"`
			Max      int64  `bun:"max"`
			Count    int64  `bun:"count"`
		}
		if err := db.NewRaw(fmt.Sprintf(`SELECT tenant_id, max(seq) AS max, count(*) AS count FROM %s GROUP BY tenant_id`, name)).Scan(ctx, &logs); err != nil {
			return err
		}
		expired := true
		for _, l := range logs {
			if before, ok := cutoff[l.TenantID]; !ok || before.Before(end) {
				expired = false // some of its events are kept longer
			}
		}
		if !expired {
			continue
		}
		// The month's idempotency keys go first, each log's in a statement
		// of its own: deleting a million of them takes seconds, and must
		// not hold the log's head, which every append locks. A replay of
		// one of these ids from now on appends anew, as after any expiry.
		for _, l := range logs {
			if err := deleteMonthsKeys(ctx, db, l.TenantID, start, end); err != nil {
				return err
			}
		}
		// Then the heads, in one short transaction: from its commit on, the
		// month's events are expired for proofs and listings alike.
		err = db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			for _, l := range logs {
				if err := raiseExpired(ctx, tx, l.TenantID, l.Max); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		// CONCURRENTLY waits for the transactions that use the partition,
		// without blocking appends to the others; it may not run in a
		// transaction block, so each statement runs on its own.
		if _, err := db.ExecContext(ctx, "ALTER TABLE audit_events DETACH PARTITION "+name+" CONCURRENTLY"); err != nil {
			return fmt.Errorf("detach %s: %w", name, err)
		}
		if _, err := db.ExecContext(ctx, "DROP TABLE "+name); err != nil {
			return fmt.Errorf("drop %s: %w", name, err)
		}
		for _, l := range logs {
			out.Events += l.Count
		}
		out.PartitionsDropped = append(out.PartitionsDropped, name)
	}
	return nil
}

// dropExpiredAuditPartitions has none to drop: ExpireAudit deletes every
// expired event of a SQLite database.
func (sqliteDialect) dropExpiredAuditPartitions(context.Context, *bun.DB, time.Time, map[string]time.Time, *Expiry) error {
	return nil
}

// auditMaintenanceLock is the PostgreSQL advisory lock that keeps audit
// maintenance to one replica at a time.
const auditMaintenanceLock = 7_311_001

// MaintainAudit creates the coming months' partitions and applies
// retention (ExpireAudit), on one replica at a time: when another holds
// the lock it does nothing and reports false.
func (db *DB) MaintainAudit(ctx context.Context, now time.Time, defaultDays int) (Expiry, bool, error) {
	var e Expiry
	ran, err := db.dialect.alone(ctx, db.bun, func() error {
		if err := db.EnsureAuditPartitions(ctx, now); err != nil {
			return err
		}
		var err error
		e, err = db.ExpireAudit(ctx, now, defaultDays)
		return err
	})
	return e, ran, err
}

// alone runs fn while this session holds the maintenance lock, and not at
// all when another replica holds it.
func (postgresDialect) alone(ctx context.Context, db *bun.DB, fn func() error) (bool, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	var locked bool
	if err := conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock(?)", auditMaintenanceLock).Scan(&locked); err != nil || !locked {
		return false, err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(?)", auditMaintenanceLock) //nolint:errcheck // the session's end releases it too
	return true, fn()
}

// alone runs fn at once: one process owns the file.
func (sqliteDialect) alone(_ context.Context, _ *bun.DB, fn func() error) (bool, error) {
	return true, fn()
}
