package domain

import "context"

// Repositories gives access to every repository. The set handed to a
// Store.Atomically callback is bound to one transaction.
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

// Store is the persistence port: repositories for single reads and writes,
// and units of work that commit all or nothing.
type Store interface {
	Repositories
	// Atomically runs fn in one database transaction and commits it when fn
	// returns nil; any error rolls everything back. A change and the audit
	// event describing it are written through the same callback, so neither
	// exists without the other.
	Atomically(ctx context.Context, fn func(Repositories) error) error
}
