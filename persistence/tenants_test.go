package persistence_test

import (
	"context"
	"testing"
	"time"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/persistence"
)

func newTenant(slug string, now time.Time) *domain.Tenant {
	return &domain.Tenant{
		ID: domain.NewID(), Slug: slug, DisplayName: "Tenant " + slug, Status: domain.TenantTrial,
		Metadata: map[string]string{"plan": "pro", "ünïcode": "välue"}, CreateTime: now, UpdateTime: now,
	}
}

// write runs fn in a transaction of db's store: the only way to write.
func write(ctx context.Context, db *persistence.DB, fn func(r domain.Repositories) error) error {
	return db.Store().Atomically(ctx, fn)
}

func TestTenantRepository(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		repo := db.Store().Tenants()
		now := time.Date(2026, 11, 22, 10, 0, 0, 123456000, time.UTC)

		a := newTenant("alpha", now)
		if err := write(ctx, db, func(r domain.Repositories) error { return r.Tenants().Create(ctx, a) }); err != nil {
			t.Fatal(err)
		}
		got, err := repo.Get(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Slug != "alpha" || got.Metadata["ünïcode"] != "välue" || !got.CreateTime.Equal(now) || got.Status != domain.TenantTrial {
			t.Fatalf("round trip changed the tenant: %+v", got)
		}
		if got, err := repo.GetBySlug(ctx, "alpha"); err != nil || got.ID != a.ID {
			t.Fatalf("GetBySlug = %v, %v", got, err)
		}

		dup := newTenant("alpha", now)
		if err := write(ctx, db, func(r domain.Repositories) error { return r.Tenants().Create(ctx, dup) }); domain.ErrorKind(err) != domain.KindAlreadyExists {
			t.Fatalf("duplicate slug: got %v, want AlreadyExists", err)
		}
		if _, err := repo.Get(ctx, domain.NewID()); domain.ErrorKind(err) != domain.KindNotFound {
			t.Fatalf("missing tenant: got %v, want NotFound", err)
		}

		a.DisplayName, a.Status, a.Metadata = "Alpha Inc", domain.TenantActive, map[string]string{}
		if err := write(ctx, db, func(r domain.Repositories) error { return r.Tenants().Update(ctx, a) }); err != nil {
			t.Fatal(err)
		}
		got, _ = repo.Get(ctx, a.ID)
		if got.DisplayName != "Alpha Inc" || got.Status != domain.TenantActive || len(got.Metadata) != 0 {
			t.Fatalf("update not stored: %+v", got)
		}
		if err := write(ctx, db, func(r domain.Repositories) error { return r.Tenants().Update(ctx, newTenant("ghost", now)) }); domain.ErrorKind(err) != domain.KindNotFound {
			t.Fatalf("update of a missing tenant: got %v, want NotFound", err)
		}
	})
}

func TestTenantRepositoryList(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		repo := db.Store().Tenants()
		now := time.Now().UTC()
		var ids []string
		for _, slug := range []string{"red-one", "blue-two", "red-three", "green_4x", "percent"} {
			tn := newTenant(slug, now)
			if slug == "green_4x" {
				tn.Slug = "green-4x"
				tn.DisplayName = "Green 100%_off"
			}
			if slug == "red-three" {
				tn.Status = domain.TenantFrozen
			}
			if err := write(ctx, db, func(r domain.Repositories) error { return r.Tenants().Create(ctx, tn) }); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, tn.ID)
		}
		tests := []struct {
			name   string
			filter domain.TenantFilter
			after  string
			limit  int
			want   []string
		}{
			{"all", domain.TenantFilter{}, "", 10, []string{"red-one", "blue-two", "red-three", "green-4x", "percent"}},
			{"limit", domain.TenantFilter{}, "", 2, []string{"red-one", "blue-two"}},
			{"after", domain.TenantFilter{}, ids[1], 2, []string{"red-three", "green-4x"}},
			{"status", domain.TenantFilter{Status: domain.TenantFrozen}, "", 10, []string{"red-three"}},
			{"query slug", domain.TenantFilter{Query: "RED"}, "", 10, []string{"red-one", "red-three"}},
			{"query name", domain.TenantFilter{Query: "tenant blue"}, "", 10, []string{"blue-two"}},
			{"like metacharacters are literal", domain.TenantFilter{Query: "%_"}, "", 10, []string{"green-4x"}},
			{"status and query", domain.TenantFilter{Status: domain.TenantTrial, Query: "red"}, "", 10, []string{"red-one"}},
		}
		for _, tc := range tests {
			got, err := repo.List(ctx, tc.filter, tc.after, tc.limit)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			var slugs []string
			for _, tn := range got {
				slugs = append(slugs, tn.Slug)
			}
			if len(slugs) != len(tc.want) {
				t.Fatalf("%s: got %v, want %v", tc.name, slugs, tc.want)
			}
			for i := range slugs {
				if slugs[i] != tc.want[i] {
					t.Fatalf("%s: got %v, want %v", tc.name, slugs, tc.want)
				}
			}
		}
	})
}
