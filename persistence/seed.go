package persistence

import (
	"context"
	"time"

	"github.com/uptrace/bun"

	"github.com/tenant-registry/tenant-registry/domain"
)

// SeedTenantID is the id of the dev seed's tenant, acme.
const SeedTenantID = "00000000-0000-0000-0000-000000000001"

// SeedDev inserts the dev data (the acme tenant and a small demo catalog)
// unless it is there already, so a portal has something to show at once.
// It is for the embedded default and APP_ENV=dev only, never a migration.
func (db *DB) SeedDev(ctx context.Context, now time.Time) error {
	acme := newTenantRow(&domain.Tenant{
		ID: SeedTenantID, Slug: "acme", DisplayName: "Acme Corporation", Status: domain.TenantActive,
		Metadata: map[string]string{"seed": "dev"}, CreateTime: now, UpdateTime: now,
	})
	catalog := []domain.Product{
		{Key: "analytics", DisplayName: "Analytics", Description: "Dashboards and reports over your product data.", TrialDays: 14,
			DefaultLimits: domain.Limits{"seats": 10, "dashboards": 50}, TrialLimits: domain.Limits{"seats": 3, "dashboards": 5}},
		{Key: "helpdesk", DisplayName: "Helpdesk", Description: "Shared inbox and ticketing for support teams.", TrialDays: 30,
			DefaultLimits: domain.Limits{"agents": 5}},
		{Key: "data-warehouse", DisplayName: "Data Warehouse", Description: "Managed warehouse; available through sales only.", TrialDays: 0,
			DefaultLimits: domain.Limits{"storage_gb": 100}},
	}
	products := make([]productRow, len(catalog))
	for i := range catalog {
		catalog[i].CreateTime, catalog[i].UpdateTime = now, now
		products[i] = *newProductRow(&catalog[i])
	}
	return db.bun.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(acme).On("CONFLICT DO NOTHING").Exec(ctx); err != nil {
			return err
		}
		_, err := tx.NewInsert().Model(&products).On("CONFLICT DO NOTHING").Exec(ctx)
		return err
	})
}
