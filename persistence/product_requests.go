package persistence

import (
	"context"
	"time"

	"github.com/uptrace/bun"

	"github.com/tenant-registry/tenant-registry/domain"
)

// productRequestRow is the product_requests table.
type productRequestRow struct {
	bun.BaseModel `bun:"table:product_requests"`

	ID          string    `bun:"id,pk"`
	TenantID    string    `bun:"tenant_id,notnull"`
	Product     string    `bun:"product,notnull"`
	Note        string    `bun:"note,notnull"`
	Status      string    `bun:"status,notnull"`
	RequestedBy string    `bun:"requested_by,notnull"`
	CreateTime  time.Time `bun:"create_time,notnull"`
}

func newProductRequestRow(pr *domain.ProductRequest) *productRequestRow {
	return &productRequestRow{
		ID: pr.ID, TenantID: pr.TenantID, Product: pr.Product, Note: pr.Note, Status: string(pr.Status),
		RequestedBy: pr.RequestedBy, CreateTime: storedTime(pr.CreateTime),
	}
}

func (r *productRequestRow) domain() *domain.ProductRequest {
	return &domain.ProductRequest{
		ID: r.ID, TenantID: r.TenantID, Product: r.Product, Note: r.Note,
		Status: domain.ProductRequestStatus(r.Status), RequestedBy: r.RequestedBy, CreateTime: r.CreateTime.UTC(),
	}
}

// ProductRequestRepository implements domain.ProductRequestRepository.
type ProductRequestRepository struct{ conn }

var _ domain.ProductRequestRepository = ProductRequestRepository{}

// Create inserts pr; the partial unique index on open requests makes a
// second open one for the same tenant and product KindAlreadyExists.
func (r ProductRequestRepository) Create(ctx context.Context, pr *domain.ProductRequest) error {
	_, err := r.db.NewInsert().Model(newProductRequestRow(pr)).Exec(ctx)
	return duplicateError(err, "the tenant has an open request for "+pr.Product+" already")
}

// GetOpen returns the tenant's open request for the product.
func (r ProductRequestRepository) GetOpen(ctx context.Context, tenantID, product string) (*domain.ProductRequest, error) {
	var row productRequestRow
	err := r.db.NewSelect().Model(&row).
		Where("tenant_id = ? AND product = ? AND status = ?", tenantID, product, domain.RequestOpen).
		Limit(1).Scan(ctx)
	if err != nil {
		return nil, missingRowError(err, "no open request for "+product)
	}
	return row.domain(), nil
}

// List returns up to limit requests in status (any when empty) after
// afterID, in id order.
func (r ProductRequestRepository) List(ctx context.Context, status domain.ProductRequestStatus, afterID string, limit int) ([]*domain.ProductRequest, error) {
	var rows []productRequestRow
	q := r.db.NewSelect().Model(&rows).OrderExpr("id ASC").Limit(limit)
	if status != "" {
		q = q.Where("status = ?", status)
	}
	if afterID != "" {
		q = q.Where("id > ?", afterID)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, dbError(err)
	}
	out := make([]*domain.ProductRequest, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}
