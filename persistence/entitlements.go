package persistence

import (
	"context"
	"database/sql"
	"time"

	"github.com/uptrace/bun"

	"github.com/tenant-registry/tenant-registry/domain"
)

// entitlementRow is the entitlements table: one row per tenant and product.
type entitlementRow struct {
	bun.BaseModel `bun:"table:entitlements,alias:e"`

	TenantID   string           `bun:"tenant_id,pk"`
	Product    string           `bun:"product,pk"`
	Status     string           `bun:"status,notnull"`
	Source     string           `bun:"source,notnull"`
	StartTime  time.Time        `bun:"start_time,notnull"`
	ExpireTime time.Time        `bun:"expire_time,nullzero"` // NULL: no end
	CreateTime time.Time        `bun:"create_time,notnull"`
	UpdateTime time.Time        `bun:"update_time,notnull"`
	Limits     map[string]int64 `bun:"limits,notnull"` // overriding the product's
}

func newEntitlementRow(e *domain.Entitlement) *entitlementRow {
	return &entitlementRow{
		TenantID: e.TenantID, Product: e.Product, Status: string(e.Status), Source: string(e.Source),
		StartTime: storedTime(e.StartTime), ExpireTime: storedTime(e.ExpireTime),
		CreateTime: storedTime(e.CreateTime), UpdateTime: storedTime(e.UpdateTime),
		Limits: limitsRow(e.Limits),
	}
}

// entitlementRead is an entitlement read with the limits of its product.
type entitlementRead struct {
	entitlementRow `bun:",extend"`

	DefaultLimits map[string]int64 `bun:"p_default_limits,scanonly"`
	TrialLimits   map[string]int64 `bun:"p_trial_limits,scanonly"`
}

func (r *entitlementRead) domain() *domain.Entitlement {
	e := &domain.Entitlement{
		TenantID: r.TenantID, Product: r.Product, Status: domain.EntitlementStatus(r.Status),
		Source: domain.EntitlementSource(r.Source), StartTime: r.StartTime.UTC(),
		CreateTime: r.CreateTime.UTC(), UpdateTime: r.UpdateTime.UTC(),
		Limits: domain.Limits(r.Limits), Base: productBase(r.Source, r.DefaultLimits, r.TrialLimits),
	}
	if !r.ExpireTime.IsZero() {
		e.ExpireTime = r.ExpireTime.UTC()
	}
	return e
}

// productBase is domain.Product's base limits for an entitlement of
// source src, from the product's columns.
func productBase(src string, defaults, trial map[string]int64) domain.Limits {
	p := &domain.Product{DefaultLimits: defaults, TrialLimits: trial}
	if src == string(domain.SourceTrial) && len(p.TrialLimits) > 0 {
		return p.TrialLimits
	}
	return p.DefaultLimits
}

// EntitlementRepository implements domain.EntitlementRepository.
type EntitlementRepository struct{ conn }

var _ domain.EntitlementRepository = EntitlementRepository{}

// withProduct selects entitlements with their product's limits.
func (r EntitlementRepository) withProduct(rows *[]entitlementRead) *bun.SelectQuery {
	return r.db.NewSelect().Model(rows).
		ColumnExpr("e.*").ColumnExpr("p.default_limits AS p_default_limits, p.trial_limits AS p_trial_limits").
		Join("JOIN products AS p ON p.key = e.product")
}

// ListByTenant returns a tenant's entitlements, by product.
func (r EntitlementRepository) ListByTenant(ctx context.Context, tenantID string) ([]*domain.Entitlement, error) {
	var rows []entitlementRead
	if err := r.withProduct(&rows).Where("e.tenant_id = ?", tenantID).OrderExpr(r.dialect.byteOrder("e.product")).Scan(ctx); err != nil {
		return nil, dbError(err)
	}
	out := make([]*domain.Entitlement, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// Get returns the tenant's entitlement for the product.
func (r EntitlementRepository) Get(ctx context.Context, tenantID, product string) (*domain.Entitlement, error) {
	var rows []entitlementRead
	err := r.withProduct(&rows).Where("e.tenant_id = ? AND e.product = ?", tenantID, product).Limit(1).Scan(ctx)
	if err == nil && len(rows) == 0 {
		err = sql.ErrNoRows
	}
	if err != nil {
		return nil, missingRowError(err, "entitlement not found")
	}
	return rows[0].domain(), nil
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
		Set("limits = EXCLUDED.limits").
		Exec(ctx)
	return dbError(err)
}

// trialRow is the trials table: every trial ever started.
type trialRow struct {
	bun.BaseModel `bun:"table:trials"`

	TenantID  string    `bun:"tenant_id,pk"`
	Product   string    `bun:"product,pk"`
	StartTime time.Time `bun:"start_time,notnull"`
}

// TrialRepository implements domain.TrialRepository.
type TrialRepository struct{ conn }

var _ domain.TrialRepository = TrialRepository{}

// Start records a trial; a second one of the same tenant and product is
// KindAlreadyExists, also when two race.
func (r TrialRepository) Start(ctx context.Context, tenantID, product string, start time.Time) error {
	_, err := r.db.NewInsert().Model(&trialRow{TenantID: tenantID, Product: product, StartTime: storedTime(start)}).Exec(ctx)
	return duplicateError(err, "tenant already had a trial of "+product)
}
