package domain

import "context"

// Invalidations announce, from inside a transaction, that cached answers
// about a tenant or a key are stale. They take effect when the transaction
// commits: at once in this process, and through the database (PostgreSQL
// NOTIFY) in every other replica; a rolled-back change announces nothing.
type Invalidations interface {
	// Tenant marks everything cached about a tenant's keys as stale: its
	// status or its entitlements changed.
	Tenant(ctx context.Context, tenantID string) error
	// Key marks the cached answer for one key hash as stale.
	Key(ctx context.Context, keyHash string) error
}

// Invalidation is one announced invalidation, as delivered to caches.
type Invalidation struct {
	TenantID string // set for a tenant-wide invalidation
	KeyHash  string // set for a single key
}
