package persistence_test

import (
	"context"
	"testing"
	"time"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// TestEntitlementAndTrialRepositories checks what the domain relies on:
// one entitlement row per tenant and product, a NULL expire time read back
// as the zero time, and a second trial refused as KindAlreadyExists.
func TestEntitlementAndTrialRepositories(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		store := db.Store()
		now := time.Date(2026, 11, 22, 10, 0, 0, 123456000, time.UTC)
		tn := newTenant("entitled", now)
		if err := write(ctx, db, func(r domain.Repositories) error { return r.Tenants().Create(ctx, tn) }); err != nil {
			t.Fatal(err)
		}
		p := &domain.Product{Key: "helpdesk", DisplayName: "Helpdesk", TrialDays: 14, CreateTime: now, UpdateTime: now}
		if err := write(ctx, db, func(r domain.Repositories) error { return r.Products().Create(ctx, p) }); err != nil {
			t.Fatal(err)
		}
		trial := &domain.Entitlement{TenantID: tn.ID, Product: "helpdesk", Status: domain.EntitlementTrial, Source: domain.SourceTrial,
			StartTime: now, ExpireTime: p.TrialEnd(now), CreateTime: now, UpdateTime: now}
		grant := &domain.Entitlement{TenantID: tn.ID, Product: "helpdesk", Status: domain.EntitlementActive, Source: domain.SourceGrant,
			StartTime: now.Add(time.Hour), CreateTime: now, UpdateTime: now.Add(time.Hour)}
		for _, e := range []*domain.Entitlement{trial, grant} {
			if err := write(ctx, db, func(r domain.Repositories) error { return r.Entitlements().Upsert(ctx, e) }); err != nil {
				t.Fatal(err)
			}
		}
		ents, err := store.Entitlements().ListByTenant(ctx, tn.ID)
		if err != nil || len(ents) != 1 {
			t.Fatalf("ListByTenant = %v, %v; want the one upserted row", ents, err)
		}
		if got := ents[0]; got.Status != domain.EntitlementActive || !got.ExpireTime.IsZero() || !got.StartTime.Equal(grant.StartTime) || !got.CreateTime.Equal(now) {
			t.Fatalf("stored %+v, want the grant without an end", got)
		}
		if _, err := store.Entitlements().Get(ctx, tn.ID, "crm"); domain.ErrorKind(err) != domain.KindNotFound {
			t.Fatalf("Get of none: %v", err)
		}
		if err := write(ctx, db, func(r domain.Repositories) error { return r.Trials().Start(ctx, tn.ID, "helpdesk", now) }); err != nil {
			t.Fatal(err)
		}
		if err := write(ctx, db, func(r domain.Repositories) error { return r.Trials().Start(ctx, tn.ID, "helpdesk", now.Add(time.Hour)) }); domain.ErrorKind(err) != domain.KindAlreadyExists {
			t.Fatalf("second trial: %v, want KindAlreadyExists", err)
		}
		if err := write(ctx, db, func(r domain.Repositories) error { return r.Products().Create(ctx, p) }); domain.ErrorKind(err) != domain.KindAlreadyExists {
			t.Fatalf("duplicate product: %v, want KindAlreadyExists", err)
		}
	})
}
