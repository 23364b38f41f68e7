package domain

import "context"

// ChangeKind says what a committed change did, so that whoever caches
// answers about keys knows what to forget.
type ChangeKind string

// Change kinds. Every change that can make a cached verification wrong is
// one of these.
const (
	// ChangeReset is no change but a warning: changes may have been missed
	// (a feed reconnected, a subscriber fell behind), so forget everything.
	ChangeReset ChangeKind = "reset"
	// ChangeUnknown is a change heard from a replica of an earlier version,
	// which says only which key hash or tenant it concerns.
	ChangeUnknown ChangeKind = "unknown"

	ChangeKeyCreated         ChangeKind = "api_key.created"
	ChangeKeyRevoked         ChangeKind = "api_key.revoked"
	ChangeKeyRotated         ChangeKind = "api_key.rotated" // the key expires at the end of its grace period
	ChangeTenantFrozen       ChangeKind = "tenant.frozen"
	ChangeTenantActivated    ChangeKind = "tenant.activated" // from TRIAL, or reactivated from FROZEN
	ChangeEntitlementGranted ChangeKind = "entitlement.granted"
	ChangeEntitlementChanged ChangeKind = "entitlement.changed" // an active grant's end moved
	ChangeEntitlementRevoked ChangeKind = "entitlement.revoked"
	ChangeKeyDisabled        ChangeKind = "api_key.disabled"
	ChangeKeyEnabled         ChangeKind = "api_key.enabled"
	ChangeKeyUpdated         ChangeKind = "api_key.updated" // scopes, expiry or metadata
	// ChangeProductChanged names a product whose limits changed: every
	// tenant's answers that name it are stale.
	ChangeProductChanged ChangeKind = "product.changed"
)

// Change is one committed change, as announced to caches: ids only.
type Change struct {
	Kind     ChangeKind
	TenantID string
	KeyID    string // for the key changes
	// KeyHash is the digest the registry's own cache keys a key by. It
	// stays inside the registry: the change stream carries KeyID instead.
	// Empty for tenant-wide changes, and for keys of the previous format
	// (cached under the digest of a plaintext never seen), whose change
	// then drops the whole tenant from the cache.
	KeyHash string
	Product string // for the entitlement changes
}

// Invalidations announce, from inside a transaction, which cached answers
// its changes make stale. They take effect when the transaction commits: at
// once in this process, and through the database (PostgreSQL NOTIFY) in
// every other replica and on to the products watching the change stream; a
// rolled-back change announces nothing.
type Invalidations interface {
	// Announce announces c once the transaction commits.
	Announce(ctx context.Context, c Change) error
	// Repeat is for a retry that finds its change already made: it
	// delivers c in this process only, once the transaction ends. The
	// first call, which may have committed without having been delivered
	// here yet, announces it everywhere; the retry answers only once this
	// replica's cache feels it.
	Repeat(ctx context.Context, c Change) error
}
