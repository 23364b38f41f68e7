package persistence_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// TestAuditTreeBackfill: the migration that turned hash chains into trees
// rebuilds, from the events alone, the tree and head appends would have
// written; and it refuses a log with a gap, naming the missing seq.
func TestAuditTreeBackfill(t *testing.T) {
	const migration = "20261201000003"
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := domain.WithCaller(context.Background(), bootstrapCaller)
		now := time.Now().UTC().Truncate(time.Microsecond)
		store := db.Store()
		tenant := newTenant("backfill", now)
		if err := write(ctx, db, func(r domain.Repositories) error { return r.Tenants().Create(ctx, tenant) }); err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{1, 5, 64, 3} {
			events := benchEvents(tenant.ID, n, now)
			if err := store.Atomically(ctx, func(r domain.Repositories) error { return r.Audit().Append(ctx, events) }); err != nil {
				t.Fatal(err)
			}
		}
		want, err := store.Audit().Head(ctx, tenant.ID)
		if err != nil || want.Size != 73 {
			t.Fatalf("head %+v, %v", want, err)
		}
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := db.Bun().ExecContext(ctx, q, args...); err != nil {
				t.Fatal(err)
			}
		}
		rerun := func() ([]string, error) {
			exec("DELETE FROM bun_migrations WHERE name = ?", migration)
			m, err := db.Migrator()
			if err != nil {
				t.Fatal(err)
			}
			return m.Up(ctx)
		}
		// The state before the tree: chain hashes, no stored tree hashes.
		exec("DELETE FROM audit_tree_hashes")
		exec("UPDATE audit_events SET hash = 'chain'")
		exec("UPDATE audit_chain_heads SET hash = 'chain'")
		if applied, err := rerun(); err != nil || len(applied) != 1 {
			t.Fatalf("backfill: %v, %v", applied, err)
		}
		got, err := store.Audit().Head(ctx, tenant.ID)
		if err != nil || got != want {
			t.Fatalf("head after the backfill %+v, %v; appends had written %+v", got, err, want)
		}
		report, err := domain.NewAuditService(store, domain.SystemClock, domain.AuditSettings{}).VerifyChain(ctx, tenant.ID, nil)
		if err != nil || !report.OK || report.EventsChecked != 73 {
			t.Fatalf("the rebuilt log: %+v, %v", report, err)
		}

		exec("DELETE FROM audit_tree_hashes")
		exec("DELETE FROM audit_events WHERE tenant_id = ? AND seq = 40", tenant.ID)
		_, err = rerun()
		if err == nil || !strings.Contains(err.Error(), "seq 40 is missing") || !strings.Contains(err.Error(), tenant.ID) {
			t.Fatalf("backfill of a log with a gap: %v, want an error naming the tenant and seq 40", err)
		}
	})
}
