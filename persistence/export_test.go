package persistence

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// VerificationRows returns the rows of the verification query for hash,
// each as text with its times in UTC, sorted: as PostgreSQL runs it
// through its function (function true), or as the query text SQLite runs.
func VerificationRows(ctx context.Context, db *DB, hash string, function bool) ([]string, error) {
	query := verificationQuery
	if function {
		query = verificationFunction
	}
	var rows []verificationRow
	if err := db.bun.NewRaw(query, hash).Scan(ctx, &rows); err != nil {
		return nil, err
	}
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = fmt.Sprintf("%s %s %q %s %s %q created=%s updated=%s expires=%s revoked=%s used=%s tenant=%s/%s entitlement=%s/%s/%s %s-%s",
			r.ID, r.TenantID, r.Name, r.Prefix, r.Hash, r.Scopes, utc(r.CreateTime), utc(r.UpdateTime), utc(r.ExpireTime),
			utc(r.RevokeTime), utc(r.LastUsedTime), r.TenantSlug, r.TenantStatus, deref(r.Product), deref(r.EntStatus),
			deref(r.EntSource), utc(r.EntStart), utc(r.EntExpire))
	}
	slices.Sort(out)
	return out, nil
}

// SetKeysPerDelete makes a month's drop delete n idempotency keys per
// statement until restore is called.
func SetKeysPerDelete(n int) (restore func()) {
	old := keysPerDelete
	keysPerDelete = n
	return func() { keysPerDelete = old }
}

// DeleteMonthsKeys deletes a log's idempotency keys received in [start, end).
func DeleteMonthsKeys(ctx context.Context, db *DB, tenantID string, start, end time.Time) error {
	return deleteMonthsKeys(ctx, db.bun, tenantID, start, end)
}
