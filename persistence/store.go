package persistence

import (
	"context"
	"database/sql"

	"github.com/uptrace/bun"

	"github.com/tenant-registry/tenant-registry/domain"
)

// repositories binds every repository to one bun.IDB: the database itself,
// or a transaction, whose invalidations wait in pending until it commits.
type repositories struct {
	db      bun.IDB
	pending *[]domain.Invalidation
	subs    *subscribers
}

func (r repositories) Tenants() domain.TenantRepository { return TenantRepository{db: r.db} }
func (r repositories) Audit() domain.AuditLog           { return AuditLog{db: r.db} }
func (r repositories) ApiKeys() domain.ApiKeyRepository { return ApiKeyRepository{db: r.db} }
func (r repositories) Entitlements() domain.EntitlementRepository {
	return EntitlementRepository{db: r.db}
}
func (r repositories) Products() domain.ProductRepository { return ProductRepository{db: r.db} }
func (r repositories) ProductRequests() domain.ProductRequestRepository {
	return ProductRequestRepository{db: r.db}
}
func (r repositories) Trials() domain.TrialRepository { return TrialRepository{db: r.db} }
func (r repositories) Invalidations() domain.Invalidations {
	return invalidations{db: r.db, pending: r.pending, subs: r.subs}
}

// Store implements domain.Store.
type Store struct {
	repositories
	db *bun.DB
}

var _ domain.Store = (*Store)(nil)

// Store returns the domain's persistence port on db.
func (db *DB) Store() *Store {
	return &Store{repositories: repositories{db: db.bun, subs: db.subs}, db: db.bun}
}

// Atomically runs fn in a transaction whose repositories it hands to fn.
func (s *Store) Atomically(ctx context.Context, fn func(domain.Repositories) error) error {
	var pending []domain.Invalidation
	err := s.db.RunInTx(ctx, &sql.TxOptions{}, func(ctx context.Context, tx bun.Tx) error {
		pending = pending[:0] // a retried callback starts afresh
		return fn(repositories{db: tx, pending: &pending, subs: s.subs})
	})
	if err != nil {
		return dbError(err, "not found", "already exists")
	}
	for _, inv := range pending {
		s.subs.deliver(inv)
	}
	return nil
}
