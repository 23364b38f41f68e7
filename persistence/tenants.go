package persistence

import (
	"context"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/tenant-registry/tenant-registry/domain"
)

// tenantRow is the tenants table.
type tenantRow struct {
	bun.BaseModel `bun:"table:tenants"`

	ID          string            `bun:"id,pk"`
	Slug        string            `bun:"slug,notnull"`
	DisplayName string            `bun:"display_name,notnull"`
	Status      string            `bun:"status,notnull"`
	ExternalID  string            `bun:"external_id,notnull"`
	Metadata    map[string]string `bun:"metadata,notnull"`
	CreateTime  time.Time         `bun:"create_time,notnull"`
	UpdateTime  time.Time         `bun:"update_time,notnull"`
	Search      string            `bun:"search,notnull"`
}

func newTenantRow(t *domain.Tenant) *tenantRow {
	return &tenantRow{
		ID: t.ID, Slug: t.Slug, DisplayName: t.DisplayName, Status: string(t.Status),
		ExternalID: t.ExternalID, Metadata: t.Metadata, CreateTime: storedTime(t.CreateTime), UpdateTime: storedTime(t.UpdateTime),
		Search: strings.ToLower(t.Slug + "\n" + t.DisplayName),
	}
}

func (r *tenantRow) domain() *domain.Tenant {
	md := r.Metadata
	if md == nil {
		md = map[string]string{}
	}
	return &domain.Tenant{
		ID: r.ID, Slug: r.Slug, DisplayName: r.DisplayName, Status: domain.TenantStatus(r.Status),
		ExternalID: r.ExternalID, Metadata: md, CreateTime: r.CreateTime.UTC(), UpdateTime: r.UpdateTime.UTC(),
	}
}

// TenantRepository implements domain.TenantRepository on a database or a
// transaction.
type TenantRepository struct{ conn }

var _ domain.TenantRepository = TenantRepository{}

// Create inserts t; a taken slug is KindAlreadyExists.
func (r TenantRepository) Create(ctx context.Context, t *domain.Tenant) error {
	_, err := r.db.NewInsert().Model(newTenantRow(t)).Exec(ctx)
	return duplicateError(err, "a tenant with slug "+t.Slug+" already exists")
}

// Get returns the tenant with the given id.
func (r TenantRepository) Get(ctx context.Context, id string) (*domain.Tenant, error) {
	return r.one(ctx, r.db.NewSelect().Where("id = ?", id))
}

// GetBySlug returns the tenant with the given slug.
func (r TenantRepository) GetBySlug(ctx context.Context, slug string) (*domain.Tenant, error) {
	return r.one(ctx, r.db.NewSelect().Where("slug = ?", slug))
}

// GetForUpdate returns the tenant with the given id, keeping concurrent
// writers of it out until the transaction ends.
func (r TenantRepository) GetForUpdate(ctx context.Context, id string) (*domain.Tenant, error) {
	return r.one(ctx, r.dialect.forUpdate(r.db.NewSelect().Where("id = ?", id)))
}

func (r TenantRepository) one(ctx context.Context, q *bun.SelectQuery) (*domain.Tenant, error) {
	var row tenantRow
	if err := q.Model(&row).Limit(1).Scan(ctx); err != nil {
		return nil, missingRowError(err, domain.TenantNotFoundMessage)
	}
	return row.domain(), nil
}

// List returns up to limit tenants matching f after afterID, in id order.
func (r TenantRepository) List(ctx context.Context, f domain.TenantFilter, afterID string, limit int) ([]*domain.Tenant, error) {
	var rows []tenantRow
	q := r.db.NewSelect().Model(&rows).Where("id <> ?", domain.PlatformTenantID).OrderExpr("id ASC").Limit(limit)
	if f.Status != "" {
		q = q.Where("status = ?", f.Status)
	}
	if f.Query != "" {
		q = q.Where(`search LIKE ? ESCAPE '\'`, "%"+escapeLike(strings.ToLower(f.Query))+"%")
	}
	if afterID != "" {
		q = q.Where("id > ?", afterID)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, dbError(err)
	}
	out := make([]*domain.Tenant, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// Update writes every mutable column of t.
func (r TenantRepository) Update(ctx context.Context, t *domain.Tenant) error {
	res, err := r.db.NewUpdate().Model(newTenantRow(t)).
		Column("display_name", "status", "metadata", "update_time", "search").WherePK().Exec(ctx)
	if err != nil {
		return dbError(err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return domain.Errorf(domain.KindNotFound, "%s", domain.TenantNotFoundMessage)
	}
	return nil
}

// escapeLike makes s match literally inside a LIKE pattern with ESCAPE '\'.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
