package persistence

import (
	"context"
	"time"

	"github.com/uptrace/bun"

	"github.com/tenant-registry/tenant-registry/domain"
)

// entitlementRow is the entitlements table: one row per tenant and product.
type entitlementRow struct {
	bun.BaseModel `bun:"table:entitlements"`

	TenantID   string    `bun:"tenant_id,pk"`
	Product    string    `bun:"product,pk"`
	Status     string    `bun:"status,notnull"`
	Source     string    `bun:"source,notnull"`
	StartTime  time.Time `bun:"start_time,notnull"`
	ExpireTime time.Time `bun:"expire_time,nullzero"` // NULL: no end
	CreateTime time.Time `bun:"create_time,notnull"`
	UpdateTime time.Time `bun:"update_time,notnull"`
}

func newEntitlementRow(e *domain.Entitlement) *entitlementRow {
	return &entitlementRow{
		TenantID: e.TenantID, Product: e.Product, Status: string(e.Status), Source: string(e.Source),
		StartTime: e.StartTime, ExpireTime: e.ExpireTime, CreateTime: e.CreateTime, UpdateTime: e.UpdateTime,
	}
}

func (r *entitlementRow) domain() *domain.Entitlement {
	e := &domain.Entitlement{
		TenantID: r.TenantID, Product: r.Product, Status: domain.EntitlementStatus(r.Status),
		Source: domain.EntitlementSource(r.Source), StartTime: r.StartTime.UTC(),
		CreateTime: r.CreateTime.UTC(), UpdateTime: r.UpdateTime.UTC(),
	}
	if !r.ExpireTime.IsZero() {
		e.ExpireTime = r.ExpireTime.UTC()
	}
	return e
}

// EntitlementRepository implements domain.EntitlementRepository.
type EntitlementRepository struct{ db bun.IDB }

var _ domain.EntitlementRepository = EntitlementRepository{}

// ListByTenant returns a tenant's entitlements, by product.
func (r EntitlementRepository) ListByTenant(ctx context.Context, tenantID string) ([]*domain.Entitlement, error) {
	var rows []entitlementRow
	// Byte order on both dialects, as for products.
	order := "product ASC"
	if isPostgres(r.db) {
		order = `product COLLATE "C" ASC`
	}
	if err := r.db.NewSelect().Model(&rows).Where("tenant_id = ?", tenantID).OrderExpr(order).Scan(ctx); err != nil {
		return nil, dbError(err, "", "")
	}
	out := make([]*domain.Entitlement, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// Get returns the tenant's entitlement for the product.
func (r EntitlementRepository) Get(ctx context.Context, tenantID, product string) (*domain.Entitlement, error) {
	var row entitlementRow
	err := r.db.NewSelect().Model(&row).Where("tenant_id = ? AND product = ?", tenantID, product).Limit(1).Scan(ctx)
	if err != nil {
		return nil, dbError(err, "entitlement not found", "")
	}
	return row.domain(), nil
}

// Upsert inserts e or replaces the row of its tenant and product; the
// row's create_time is kept.
func (r EntitlementRepository) Upsert(ctx context.Context, e *domain.Entitlement) error {
	_, err := r.db.NewInsert().Model(newEntitlementRow(e)).
		On("CONFLICT (tenant_id, product) DO UPDATE").
		Set("status = EXCLUDED.status").
		Set("source = EXCLUDED.source").
		Set("start_time = EXCLUDED.start_time").
		Set("expire_time = EXCLUDED.expire_time").
		Set("update_time = EXCLUDED.update_time").
		Exec(ctx)
	return dbError(err, "", "")
}

// trialRow is the trials table: every trial ever started.
type trialRow struct {
	bun.BaseModel `bun:"table:trials"`

	TenantID  string    `bun:"tenant_id,pk"`
	Product   string    `bun:"product,pk"`
	StartTime time.Time `bun:"start_time,notnull"`
}

// TrialRepository implements domain.TrialRepository.
type TrialRepository struct{ db bun.IDB }

var _ domain.TrialRepository = TrialRepository{}

// Start records a trial; a second one of the same tenant and product is
// KindAlreadyExists, also when two race.
func (r TrialRepository) Start(ctx context.Context, tenantID, product string, start time.Time) error {
	_, err := r.db.NewInsert().Model(&trialRow{TenantID: tenantID, Product: product, StartTime: start}).Exec(ctx)
	return dbError(err, "", "tenant already had a trial of "+product)
}
