package persistence

import (
	"context"
	"time"

	"github.com/uptrace/bun"

	"github.com/tenant-registry/tenant-registry/domain"
)

// productRow is the products table.
type productRow struct {
	bun.BaseModel `bun:"table:products"`

	Key         string    `bun:"key,pk"`
	DisplayName string    `bun:"display_name,notnull"`
	Description string    `bun:"description,notnull"`
	TrialDays   int       `bun:"trial_days,notnull"`
	CreateTime  time.Time `bun:"create_time,notnull"`
	UpdateTime  time.Time `bun:"update_time,notnull"`
	// Limits as JSON objects of counts; trial_limits {} means the defaults.
	DefaultLimits map[string]int64 `bun:"default_limits,notnull"`
	TrialLimits   map[string]int64 `bun:"trial_limits,notnull"`
}

func newProductRow(p *domain.Product) *productRow {
	return &productRow{
		Key: p.Key, DisplayName: p.DisplayName, Description: p.Description, TrialDays: p.TrialDays,
		CreateTime: storedTime(p.CreateTime), UpdateTime: storedTime(p.UpdateTime),
		DefaultLimits: limitsRow(p.DefaultLimits), TrialLimits: limitsRow(p.TrialLimits),
	}
}

// limitsRow is limits as stored: never NULL.
func limitsRow(l domain.Limits) map[string]int64 {
	if l == nil {
		return map[string]int64{}
	}
	return l
}

func (r *productRow) domain() *domain.Product {
	return &domain.Product{
		Key: r.Key, DisplayName: r.DisplayName, Description: r.Description, TrialDays: r.TrialDays,
		CreateTime: r.CreateTime.UTC(), UpdateTime: r.UpdateTime.UTC(),
		DefaultLimits: domain.Limits(r.DefaultLimits), TrialLimits: domain.Limits(r.TrialLimits),
	}
}

// ProductRepository implements domain.ProductRepository.
type ProductRepository struct{ conn }

var _ domain.ProductRepository = ProductRepository{}

// Create inserts p; a taken key is KindAlreadyExists.
func (r ProductRepository) Create(ctx context.Context, p *domain.Product) error {
	_, err := r.db.NewInsert().Model(newProductRow(p)).Exec(ctx)
	return duplicateError(err, "a product with key "+p.Key+" already exists")
}

// Get returns the product with the given key.
func (r ProductRepository) Get(ctx context.Context, key string) (*domain.Product, error) {
	return r.one(ctx, key, r.db.NewSelect())
}

// GetForUpdate returns the product, keeping concurrent writers of it out
// until the transaction ends.
func (r ProductRepository) GetForUpdate(ctx context.Context, key string) (*domain.Product, error) {
	return r.one(ctx, key, r.dialect.forUpdate(r.db.NewSelect()))
}

func (r ProductRepository) one(ctx context.Context, key string, q *bun.SelectQuery) (*domain.Product, error) {
	var row productRow
	if err := q.Model(&row).Where("key = ?", key).Limit(1).Scan(ctx); err != nil {
		return nil, missingRowError(err, "product "+key+" not found")
	}
	return row.domain(), nil
}

// List returns every product, by key.
func (r ProductRepository) List(ctx context.Context) ([]*domain.Product, error) {
	var rows []productRow
	if err := r.db.NewSelect().Model(&rows).OrderExpr(r.dialect.byteOrder("key")).Scan(ctx); err != nil {
		return nil, dbError(err)
	}
	out := make([]*domain.Product, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// Update writes every mutable column of p.
func (r ProductRepository) Update(ctx context.Context, p *domain.Product) error {
	res, err := r.db.NewUpdate().Model(newProductRow(p)).
		Column("display_name", "description", "trial_days", "update_time", "default_limits", "trial_limits").WherePK().Exec(ctx)
	if err != nil {
		return dbError(err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return domain.Errorf(domain.KindNotFound, "product %s not found", p.Key)
	}
	return nil
}
