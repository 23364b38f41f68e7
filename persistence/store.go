package persistence

import (
	"context"
	"database/sql"

	"github.com/uptrace/bun"

	"github.com/tenant-registry/tenant-registry/domain"
)

// repositories binds every repository to one bun.IDB: the database itself,
// or a transaction.
type repositories struct{ db bun.IDB }

func (r repositories) Tenants() domain.TenantRepository { return TenantRepository{db: r.db} }
func (r repositories) Audit() domain.AuditLog           { return AuditLog{db: r.db} }

// Store implements domain.Store.
type Store struct {
	repositories
	db *bun.DB
}

var _ domain.Store = (*Store)(nil)

// Store returns the domain's persistence port on db.
func (db *DB) Store() *Store {
	return &Store{repositories: repositories{db: db.bun}, db: db.bun}
}

// Atomically runs fn in a transaction whose repositories it hands to fn.
func (s *Store) Atomically(ctx context.Context, fn func(domain.Repositories) error) error {
	err := s.db.RunInTx(ctx, &sql.TxOptions{}, func(ctx context.Context, tx bun.Tx) error {
		return fn(repositories{db: tx})
	})
	return dbError(err, "not found", "already exists")
}
