package persistence_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// TestAnswersEqualLaterReads runs the services on a clock, and with caller
// times, finer than the databases keep: what a service answers equals
// what a later read returns (etags include times), and a retry with the
// same times is told apart from a change.
func TestAnswersEqualLaterReads(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := domain.WithCaller(context.Background(), bootstrapCaller)
		base := time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC)
		var ticks atomic.Int64
		now := func() time.Time { return base.Add(time.Duration(ticks.Add(1)) * 777 * time.Nanosecond) }
		store := db.Store()
		s := domain.NewServices(store, now, db.KeyVerifier(now, domain.DefaultKeyCacheConfig), db.Changes(), domain.AuditSettings{})
		same := func(what string, answered, read time.Time) {
			t.Helper()
			if !answered.Equal(read) {
				t.Errorf("%s: answered %v, read back %v", what, answered, read)
			}
		}
		events := func(tenantID string) int64 {
			t.Helper()
			head, err := store.Audit().Head(ctx, tenantID)
			if err != nil {
				t.Fatal(err)
			}
			return head.Size
		}

		tn, err := s.Tenants.Create(ctx, domain.CreateTenant{Slug: "precise", DisplayName: "Precise"})
		if err != nil {
			t.Fatal(err)
		}
		read, err := s.Tenants.Get(ctx, tn.ID)
		if err != nil {
			t.Fatal(err)
		}
		same("tenant create_time", tn.CreateTime, read.CreateTime)

		p, err := s.Catalog.CreateProduct(ctx, domain.CreateProduct{Key: "precise", DisplayName: "Precise"})
		if err != nil {
			t.Fatal(err)
		}
		expire := base.Add(30*24*time.Hour + 999*time.Nanosecond)
		granted, err := s.Entitlements.Grant(ctx, domain.GrantEntitlement{TenantID: tn.ID, Product: p.Key, ExpireTime: expire})
		if err != nil {
			t.Fatal(err)
		}
		ents, err := s.Entitlements.List(ctx, tn.ID)
		if err != nil || len(ents) != 1 {
			t.Fatalf("entitlements %v, %v", ents, err)
		}
		same("entitlement expire_time", granted.ExpireTime, ents[0].ExpireTime)
		if granted.Etag() != ents[0].Etag() {
			t.Errorf("entitlement etag answered %s, read back %s", granted.Etag(), ents[0].Etag())
		}
		before := events(tn.ID)
		again, err := s.Entitlements.Grant(ctx, domain.GrantEntitlement{TenantID: tn.ID, Product: p.Key, ExpireTime: expire})
		if err != nil || again.Etag() != granted.Etag() || events(tn.ID) != before {
			t.Errorf("granting again with the same expiry: %v, etag %s (was %s), %d events (were %d); want a retry",
				err, again.Etag(), granted.Etag(), events(tn.ID), before)
		}

		key, _, err := s.ApiKeys.Create(ctx, domain.CreateApiKey{TenantID: tn.ID, Name: "precise", ExpireTime: expire})
		if err != nil {
			t.Fatal(err)
		}
		disabled, err := s.ApiKeys.Disable(ctx, key.ID, key.Etag())
		if err != nil {
			t.Fatal(err)
		}
		readKey, err := s.ApiKeys.Get(ctx, key.ID)
		if err != nil {
			t.Fatal(err)
		}
		same("key disable_time", disabled.DisableTime, readKey.DisableTime)
		if disabled.Etag() != readKey.Etag() {
			t.Errorf("key etag answered %s, read back %s", disabled.Etag(), readKey.Etag())
		}
		before = events(tn.ID)
		if _, err := s.ApiKeys.Update(ctx, domain.UpdateApiKey{ID: key.ID, ExpireTime: expire, Mask: []string{"expire_time"}, Etag: readKey.Etag()}); err != nil {
			t.Fatal(err)
		}
		if events(tn.ID) != before {
			t.Error("setting a key's expiry to the one it has was recorded as a change")
		}

		e, err := s.Audit.Record(ctx, &domain.AuditEvent{
			TenantID: tn.ID, Product: "precise", Action: "thing.done", CRUD: "c", Actor: domain.AuditActor{ID: "someone"},
			OccurTime: base.Add(-time.Hour + time.Nanosecond),
		})
		if err != nil {
			t.Fatal(err)
		}
		stored, err := store.Audit().List(ctx, domain.AuditFilter{TenantID: tn.ID, Product: "precise"}, 0, 1, 1<<20)
		if err != nil || len(stored) != 1 {
			t.Fatalf("recorded events %v, %v", stored, err)
		}
		same("event occur_time", e.OccurTime, stored[0].OccurTime)
		same("event receive_time", e.ReceiveTime, stored[0].ReceiveTime)
		if report, err := s.Audit.VerifyChain(ctx, tn.ID, nil); err != nil || !report.OK {
			t.Errorf("the tenant's chain: %+v, %v", report, err)
		}
	})
}
