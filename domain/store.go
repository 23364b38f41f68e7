package domain

import (
	"context"
	"time"
)

// Reads are the repositories' reads outside a transaction: what a service
// looks up before it decides, or answers with. They offer no writes, so
// that every change goes through Store.Atomically, with its audit event.
type Reads interface {
	Tenants() TenantReader
	Audit() AuditReader
	ApiKeys() ApiKeyReader
	Entitlements() EntitlementReader
	Products() ProductReader
	ProductRequests() ProductRequestReader
}

// Repositories gives access to every repository, reads and writes, bound
// to the one transaction of a Store.Atomically callback.
type Repositories interface {
	Tenants() TenantRepository
	Audit() AuditLog
	ApiKeys() ApiKeyRepository
	Entitlements() EntitlementRepository
	Products() ProductRepository
	ProductRequests() ProductRequestRepository
	Trials() TrialRepository
	Invalidations() Invalidations
}

// Store is the persistence port: single reads, and units of work that
// commit all or nothing.
type Store interface {
	Reads
	// Atomically runs fn in one database transaction and commits it when fn
	// returns nil; any error rolls everything back. A change and the audit
	// event describing it are written through the same callback, so neither
	// exists without the other.
	Atomically(ctx context.Context, fn func(Repositories) error) error
	// StoredTime is t as the store keeps it: what a later read of a
	// stored t returns (the zero time stays zero). The services take the
	// clock's and their callers' times in this form where they compare
	// them with stored ones or return them, so that an answer equals what
	// a later read returns (times are part of etags).
	StoredTime(t time.Time) time.Time
}
