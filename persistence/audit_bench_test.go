package persistence_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/persistence"
)

func benchEvents(tenantID string, n int, now time.Time) []*domain.AuditEvent {
	events := make([]*domain.AuditEvent, n)
	for i := range events {
		events[i] = &domain.AuditEvent{
			ID: domain.NewID(), TenantID: tenantID, Product: "analytics", Action: "report.viewed", CRUD: "r",
			Actor: domain.AuditActor{ID: "user-1", Name: "Ada", Type: "user"}, Target: domain.AuditTarget{ID: "r-1", Type: "report"},
			SourceIP: "192.0.2.1", Fields: map[string]string{"k": "v"}, OccurTime: now, ReceiveTime: now,
		}
	}
	return events
}

// plainInsert writes the same rows without the chain: no head lock, no
// hashing, one multi-row INSERT; the baseline the chained append is
// compared with.
func plainInsert(ctx context.Context, db *persistence.DB, events []*domain.AuditEvent, seq *int64) error {
	values := make([]string, len(events))
	var args []any
	for i, e := range events {
		*seq++
		values[i] = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
		args = append(args, e.ID, e.TenantID, *seq, e.Product, e.Action, e.CRUD, e.Actor.ID, e.Actor.Name,
			e.Actor.Type, e.Target.ID, e.Target.Type, e.SourceIP, `{"k":"v"}`, e.OccurTime, e.ReceiveTime)
	}
	_, err := db.Bun().NewRaw(`INSERT INTO audit_events (id, tenant_id, seq, product, action, crud, actor_id, actor_name,
		actor_type, target_id, target_type, source_ip, fields, occur_time, receive_time, hash)
		VALUES `+strings.ReplaceAll(strings.Join(values, ", "), "?)", "?, '')"), args...).Exec(ctx)
	return err
}

// BenchmarkAuditAppend compares the chained append (head row locked, every
// event hashed) with a plain insert of the same rows, single and in
// batches of 100, in one transaction each. The ratio of their ns/op is
// what the chain costs.
func BenchmarkAuditAppend(b *testing.B) {
	for _, dialect := range testdb.Dialects {
		db := testdb.MustOpen(b, dialect)
		ctx := domain.WithCaller(context.Background(), bootstrapCaller)
		now := time.Now().UTC().Truncate(time.Microsecond)
		tenants := domain.NewTenantService(db.Store(), domain.SystemClock)
		for _, size := range []int{1, 100} {
			chained, err := tenants.Create(ctx, domain.CreateTenant{Slug: fmt.Sprint("chained-", size), DisplayName: "c"})
			if err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("%s/chained/batch-%d", dialect, size), func(b *testing.B) {
				for b.Loop() {
					events := benchEvents(chained.ID, size, now)
					err := db.Store().Atomically(ctx, func(r domain.Repositories) error { return r.Audit().Append(ctx, events) })
					if err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
			})
			plain := fmt.Sprint("plain-", domain.NewID())
			var seq int64
			b.Run(fmt.Sprintf("%s/plain/batch-%d", dialect, size), func(b *testing.B) {
				for b.Loop() {
					if err := plainInsert(ctx, db, benchEvents(plain, size, now), &seq); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}
