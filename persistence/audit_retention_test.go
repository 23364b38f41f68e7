package persistence_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/persistence"
	"github.com/tenant-registry/tenant-registry/sdk/go/auditlog"
)

// TestAuditRetention: logs keep their events as long as their retention
// says and no longer, across month partitions, while appends go on; a
// month whose events all expired is dropped whole on PostgreSQL; what
// remains still verifies and still proves against the tree, whose leaves
// outlive the bodies; idempotency keys span partitions and go with their
// events.
func TestAuditRetention(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := domain.WithCaller(context.Background(), bootstrapCaller)
		now := time.Date(2027, 3, 10, 12, 0, 0, 0, time.UTC)
		months := []time.Time{ // when each batch was received
			time.Date(2026, 11, 5, 0, 0, 0, 0, time.UTC),
			time.Date(2026, 12, 20, 0, 0, 0, 0, time.UTC),
			time.Date(2027, 1, 15, 0, 0, 0, 0, time.UTC),
			time.Date(2027, 2, 25, 0, 0, 0, 0, time.UTC),
			time.Date(2027, 3, 9, 0, 0, 0, 0, time.UTC),
		}
		for _, m := range months {
			if err := db.EnsureAuditPartitions(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		store := db.Store()
		mk := func(slug string) string {
			tn := newTenant(slug, now)
			if err := write(ctx, db, func(r domain.Repositories) error { return r.Tenants().Create(ctx, tn) }); err != nil {
				t.Fatal(err)
			}
			return tn.ID
		}
		short, forever, usual := mk("short"), mk("forever"), mk("usual")
		appendAt := func(tenant string, at time.Time, n int, externalID string) []*domain.AuditEvent {
			t.Helper()
			events := benchEvents(tenant, n, at)
			if externalID != "" {
				for i, e := range events[1:] { // keys enough for the drop to delete in several statements
					e.ExternalID = fmt.Sprint(externalID, ".", i+1)
				}
				events[0].ExternalID = externalID
			}
			if err := store.Atomically(ctx, func(r domain.Repositories) error { return r.Audit().Append(ctx, events) }); err != nil {
				t.Fatal(err)
			}
			return events
		}
		// short: 10 events a month for five months; forever: from January;
		// usual: the last two months.
		for i, m := range months {
			appendAt(short, m, 10, fmt.Sprint("short-", i))
			if i >= 2 {
				appendAt(forever, m, 5, "")
			}
			if i >= 3 {
				appendAt(usual, m, 5, "")
			}
		}
		// An idempotent replay a month later reads the event from its month.
		replayed := appendAt(short, months[4], 1, "short-3")
		if replayed[0].Seq != 31 {
			t.Errorf("a replay across a partition boundary got seq %d, want the stored 31", replayed[0].Seq)
		}
		for tenant, days := range map[string]int{short: 45, forever: 0} {
			if err := write(ctx, db, func(r domain.Repositories) error { return r.Audit().SetRetention(ctx, tenant, days) }); err != nil {
				t.Fatal(err)
			}
		}

		// Appends go on while retention runs.
		stop := make(chan struct{})
		var appends sync.WaitGroup
		appends.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				appendAt(usual, months[4], 3, "")
				// Paced: SQLite lets a waiting writer in only when it polls
				// and finds the lock free, and appends back to back on
				// another connection can keep it out past busy_timeout.
				time.Sleep(time.Millisecond)
			}
		})
		defer persistence.SetKeysPerDelete(3)()
		expiry, err := db.ExpireAudit(ctx, now, 400)
		close(stop)
		appends.Wait()
		if err != nil {
			t.Fatal(err)
		}
		// Keys go with their events, a month's in several statements on
		// PostgreSQL: short keeps February's and March's, 10 each.
		var keys struct {
			Expired int `bun:"expired"`
			Kept    int `bun:"kept"`
		}
		err = db.Bun().NewRaw(`SELECT count(*) FILTER (WHERE receive_time < ?) AS expired, count(*) FILTER (WHERE receive_time >= ?) AS kept
			FROM audit_external_ids WHERE tenant_id = ?`, months[3], months[3], short).Scan(ctx, &keys)
		if err != nil {
			t.Fatal(err)
		}
		if keys.Expired != 0 || keys.Kept != 20 {
			t.Errorf("short's idempotency keys after retention: %d expired, %d kept; want 0 and 20", keys.Expired, keys.Kept)
		}
		// 45 days before 10 March: November, December and January's events of short.
		if expiry.Events != 30 {
			t.Errorf("%d events expired, want 30", expiry.Events)
		}
		// October (empty), November and December go whole; January holds
		// forever's events too, so its expired rows are deleted and it stays.
		if db.Dialect() == "pg" && !slices.Equal(expiry.PartitionsDropped, []string{"audit_events_202610", "audit_events_202611", "audit_events_202612"}) {
			t.Errorf("partitions dropped: %v, want October's to December's", expiry.PartitionsDropped)
		}
		svc := domain.NewAuditService(store, func() time.Time { return now }, domain.AuditSettings{RetentionDays: 400})
		for tenant, want := range map[string]struct{ checked, expired int64 }{short: {20, 30}, forever: {15, 0}} {
			r, err := svc.VerifyChain(ctx, tenant, nil)
			if err != nil || !r.OK || r.EventsChecked != want.checked || r.ExpiredThrough != want.expired {
				t.Errorf("log after retention: %+v, %v; want %d events checked and %d expired", r, err, want.checked, want.expired)
			}
		}
		// The expired event's key went with it: the same external id
		// records a new event; a kept event's key still holds.
		if again := appendAt(short, now, 1, "short-0"); again[0].Seq != 51 {
			t.Errorf("an expired event's external id appended seq %d, want a new event (51)", again[0].Seq)
		}
		if kept := appendAt(short, now, 1, "short-4"); kept[0].Seq != 41 {
			t.Errorf("a kept event's external id appended seq %d, want the stored 41", kept[0].Seq)
		}
		// Every leaf, expired ones included, still proves against the root.
		head, err := store.Audit().Head(ctx, short)
		if err != nil {
			t.Fatal(err)
		}
		reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) { return store.Audit().ReadHashes(ctx, short, idx) })
		for _, seq := range []int64{1, 15, 30, 31, head.Size} {
			proof, err := tlog.ProveRecord(head.Size, seq-1, reader)
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := store.Audit().ReadHashes(ctx, short, []int64{tlog.StoredHashIndex(0, seq-1)})
			if err != nil {
				t.Fatal(err)
			}
			if err := tlog.CheckRecord(proof, head.Size, head.Root, seq-1, leaf[0]); err != nil {
				t.Errorf("seq %d after retention: %v", seq, err)
			}
		}
		var tree auditlog.Tree
		for seq := int64(1); seq <= head.Size; seq++ {
			leaf, _ := store.Audit().ReadHashes(ctx, short, []int64{tlog.StoredHashIndex(0, seq-1)})
			tree.Append(leaf[0])
		}
		if tree.Root() != head.Root {
			t.Error("the tree's leaves no longer hash to its root after retention")
		}
	})
}

// TestAMonthsKeysGoInRanges: a month's idempotency keys are deleted a range
// of keys at a time, every one of them, and no key of another month or log.
func TestAMonthsKeysGoInRanges(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		march, april := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(2027, 4, 1, 0, 0, 0, 0, time.UTC)
		insert := func(tenant, product string, n int, at time.Time) {
			for i := range n {
				_, err := db.Bun().ExecContext(ctx, "INSERT INTO audit_external_ids (tenant_id, product, external_id, seq, receive_time) VALUES (?, ?, ?, ?, ?)",
					tenant, product, fmt.Sprintf("%s-%s-%02d", product, at.Month(), i), i+1, at.Add(time.Duration(i)*time.Hour))
				if err != nil {
					t.Fatal(err)
				}
			}
		}
		log, other := domain.NewID(), domain.NewID()
		insert(log, "analytics", 10, march)
		insert(log, "helpdesk", 4, march)
		insert(log, "analytics", 3, april)
		insert(other, "analytics", 5, march)
		defer persistence.SetKeysPerDelete(3)()
		if err := persistence.DeleteMonthsKeys(ctx, db, log, march, april); err != nil {
			t.Fatal(err)
		}
		var left []string
		if err := db.Bun().NewRaw("SELECT tenant_id || ' ' || external_id FROM audit_external_ids").Scan(ctx, &left); err != nil {
			t.Fatal(err)
		}
		slices.Sort(left)
		want := []string{log + " analytics-April-00", log + " analytics-April-01", log + " analytics-April-02"}
		for i := range 5 {
			want = append(want, fmt.Sprintf("%s analytics-March-%02d", other, i))
		}
		slices.Sort(want)
		if !slices.Equal(left, want) {
			t.Errorf("keys left: %v\nwant %v", left, want)
		}
	})
}
