package persistence_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// TestPlatformKeysMigration: every database has the platform tenant, and
// the migration that introduced it strips platform scopes from the keys of
// ordinary tenants (written before the trust model), leaving every other
// scope and every platform key as they were.
func TestPlatformKeysMigration(t *testing.T) {
	const migration = "20261201000001"
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		store := db.Store()
		platform, err := store.Tenants().Get(ctx, domain.PlatformTenantID)
		if err != nil || platform.Slug != "platform" || platform.Status != domain.TenantActive {
			t.Fatalf("platform tenant: %+v, %v", platform, err)
		}
		now := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
		acme := newTenant("acme", now)
		if err := write(ctx, db, func(r domain.Repositories) error { return r.Tenants().Create(ctx, acme) }); err != nil {
			t.Fatal(err)
		}
		keys := map[string]struct{ tenant, before, after []string }{
			"escalated": {[]string{acme.ID}, []string{"analytics:read", domain.ScopeAdmin, domain.ScopeVerify, "product:analytics", domain.ScopeKeysManage},
				[]string{"analytics:read", domain.ScopeKeysManage}},
			"only platform": {[]string{acme.ID}, []string{domain.ScopeAuditWrite, domain.ScopeEntitlementsRead}, []string{}},
			"clean":         {[]string{acme.ID}, []string{"analytics:read"}, []string{"analytics:read"}},
			"platform key":  {[]string{domain.PlatformTenantID}, []string{domain.ScopeVerify, "product:analytics"}, []string{domain.ScopeVerify, "product:analytics"}},
		}
		ids := map[string]string{}
		for name, k := range keys {
			key := &domain.ApiKey{
				ID: domain.NewID(), TenantID: k.tenant[0], Name: name, Prefix: "bp_" + name[:3] + "00000",
				Hash: "sha256|" + domain.NewID(), Scopes: k.before, CreateTime: now, UpdateTime: now,
			}
			if err := write(ctx, db, func(r domain.Repositories) error { return r.ApiKeys().Create(ctx, key) }); err != nil {
				t.Fatal(err)
			}
			ids[name] = key.ID
		}
		// Run the migration again over these rows, as an upgrade would.
		if _, err := db.Bun().NewDelete().Table("bun_migrations").Where("name = ?", migration).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		m, err := db.Migrator()
		if err != nil {
			t.Fatal(err)
		}
		if applied, err := m.Up(ctx); err != nil || !slices.Equal(applied, []string{migration + "_platform_keys"}) {
			t.Fatalf("migrate up: %v, %v", applied, err)
		}
		for name, k := range keys {
			got, err := store.ApiKeys().Get(ctx, ids[name])
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Scopes, k.after) {
				t.Errorf("%s: scopes %v after the migration, want %v", name, got.Scopes, k.after)
			}
		}
	})
}
