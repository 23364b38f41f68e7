package persistence_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// gatedStore is a real store whose first transaction waits for open, and
// which counts its transactions; with failShared it rolls back the first
// transaction that appends more than one event, after its work, as a
// failed commit would.
type gatedStore struct {
	domain.Store
	open       chan struct{}
	entered    chan struct{}
	first      sync.Once
	txs        atomic.Int64
	failShared bool
	failed     atomic.Bool
}

var errInjected = errors.New("injected failure")

func (s *gatedStore) Atomically(ctx context.Context, fn func(domain.Repositories) error) error {
	s.txs.Add(1)
	s.first.Do(func() {
		close(s.entered)
		<-s.open
	})
	return s.Store.Atomically(ctx, func(r domain.Repositories) error {
		counted := &countingRepositories{Repositories: r}
		if err := fn(counted); err != nil {
			return err
		}
		if s.failShared && counted.appended > 1 && s.failed.CompareAndSwap(false, true) {
			return errInjected
		}
		return nil
	})
}

// countingRepositories counts the events appended through it.
type countingRepositories struct {
	domain.Repositories
	appended int
}

func (r *countingRepositories) Audit() domain.AuditLog { return countingLog{r.Repositories.Audit(), r} }

type countingLog struct {
	domain.AuditLog
	r *countingRepositories
}

func (l countingLog) Append(ctx context.Context, events []*domain.AuditEvent) error {
	l.r.appended += len(events)
	return l.AuditLog.Append(ctx, events)
}

// TestConcurrentSingleAppendsShareTransactions holds the first single
// append's transaction while 63 more arrive: they must be committed in a
// few shared transactions, each caller answered with its own event, an
// event of an unknown tenant refused alone, repeats of one external id
// answered with one event, and both chains gapless and verifying. When
// the shared transaction fails, its events are appended one by one and
// the same holds.
func TestConcurrentSingleAppendsShareTransactions(t *testing.T) {
	for _, failShared := range []bool{false, true} {
		t.Run(fmt.Sprint("shared transaction fails=", failShared), func(t *testing.T) { groupCommit(t, failShared) })
	}
}

func groupCommit(t *testing.T, failShared bool) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := domain.WithCaller(context.Background(), bootstrapCaller)
		tenants := domain.NewTenantService(db.Store(), domain.SystemClock)
		var ids [2]string
		for i := range ids {
			tn, err := tenants.Create(ctx, domain.CreateTenant{Slug: fmt.Sprint("grouped-", i), DisplayName: "g"})
			if err != nil {
				t.Fatal(err)
			}
			ids[i] = tn.ID
		}
		store := &gatedStore{Store: db.Store(), open: make(chan struct{}), entered: make(chan struct{}), failShared: failShared}
		audit := domain.NewAuditService(store, domain.SystemClock, domain.AuditSettings{})
		now := time.Now().UTC().Truncate(time.Microsecond)

		const n = 64
		unknown := domain.NewID()
		type result struct {
			event *domain.AuditEvent
			err   error
		}
		results := make([]result, n)
		var wg sync.WaitGroup
		call := func(i int) {
			defer wg.Done()
			tenant := ids[i%2]
			if i == 10 || i == 11 {
				tenant = unknown
			}
			once := i >= 20 && i < 24 // one event, asked for four times
			if once {
				tenant = ids[0]
			}
			e := benchEvents(tenant, 1, now)[0]
			if once {
				e.ExternalID = "once"
			}
			out, err := audit.Record(ctx, e)
			results[i] = result{out, err}
		}
		wg.Add(1)
		go call(0)
		<-store.entered // the first transaction is held: the others queue
		for i := 1; i < n; i++ {
			wg.Add(1)
			go call(i)
		}
		time.Sleep(50 * time.Millisecond) // let them reach the queue; a straggler only adds a transaction
		close(store.open)
		wg.Wait()

		byID := map[string]int{}
		for i, r := range results {
			switch {
			case i == 10 || i == 11:
				if domain.ErrorKind(r.err) != domain.KindNotFound {
					t.Errorf("event %d of an unknown tenant: %v, want NotFound", i, r.err)
				}
			case r.err != nil:
				t.Errorf("event %d: %v", i, r.err)
			case r.event.Seq == 0 || r.event.Hash == "":
				t.Errorf("event %d came back without its place in the chain: %+v", i, r.event)
			default:
				byID[r.event.ID]++
			}
		}
		if len(byID) != n-2-3 || byID[results[20].event.ID] != 4 {
			t.Errorf("%d distinct events for %d appends with one external id used four times", len(byID), n-2)
		}
		if failShared && !store.failed.Load() {
			t.Error("no shared transaction was made to fail")
		}
		if got := store.txs.Load(); got > n/4 && !failShared {
			t.Errorf("%d transactions for %d concurrent single appends, want them shared", got, n)
		}
		t.Logf("%d transactions for %d concurrent single appends", store.txs.Load(), n)
		for _, id := range ids {
			report, err := audit.VerifyChain(ctx, id, nil)
			if err != nil || !report.OK {
				t.Fatalf("chain of %s: %+v, %v", id, report, err)
			}
			page, err := audit.List(ctx, domain.AuditFilter{TenantID: id}, domain.PageRequest{Size: 100})
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range page.Items { // newest first, gapless
				if want := int64(len(page.Items) - i); e.Seq != want {
					t.Fatalf("chain of %s: seq %d at %d, want %d", id, e.Seq, i, want)
				}
			}
		}
	})
}

// TestAppendsToHeadsThatKeepNoEdge: a head written before heads kept their
// tree's right edge (or whose edge does not fit its size) has its edge read
// from the stored hashes at its next append, and the log goes on verifying.
func TestAppendsToHeadsThatKeepNoEdge(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx, tn, audit, now := auditOfNewTenant(t, db, "edgeless")
		for round, edge := range []string{"", "00"} {
			if _, err := audit.RecordBatch(ctx, benchEvents(tn.ID, 7, now)); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Bun().ExecContext(ctx, "UPDATE audit_chain_heads SET edge = ? WHERE tenant_id = ?", edge, tn.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := audit.RecordBatch(ctx, benchEvents(tn.ID, 5, now)); err != nil {
				t.Fatalf("round %d: appending to a head with edge %q: %v", round, edge, err)
			}
			report, err := audit.VerifyChain(ctx, tn.ID, nil)
			if err != nil || !report.OK {
				t.Fatalf("round %d: the log after appending to a head with edge %q: %+v, %v", round, edge, report, err)
			}
		}
	})
}

// TestAppendsThatCollideAreAlreadyExists: an append whose rows collide
// with stored ones (here a stored tree hash where the next leaf goes) is
// refused as AlreadyExists, whichever of its statements collides, and
// writes nothing.
func TestAppendsThatCollideAreAlreadyExists(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := domain.WithCaller(context.Background(), bootstrapCaller)
		tn, err := domain.NewTenantService(db.Store(), domain.SystemClock).Create(ctx, domain.CreateTenant{Slug: "colliding", DisplayName: "c"})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC().Truncate(time.Microsecond)
		head, err := db.Store().Audit().Head(ctx, tn.ID)
		if err != nil {
			t.Fatal(err)
		}
		next := tlog.StoredHashIndex(0, head.Size)
		if _, err := db.Bun().ExecContext(ctx, "INSERT INTO audit_tree_hashes (tenant_id, idx, hash) VALUES (?, ?, ?)", tn.ID, next, make([]byte, tlog.HashSize)); err != nil {
			t.Fatal(err)
		}
		err = db.Store().Atomically(ctx, func(r domain.Repositories) error { return r.Audit().Append(ctx, benchEvents(tn.ID, 1, now)) })
		if domain.ErrorKind(err) != domain.KindAlreadyExists || !strings.Contains(err.Error(), "audit event already exists") {
			t.Errorf("an append colliding with a stored hash: %v, want AlreadyExists saying the audit event exists", err)
		}
		if after, _ := db.Store().Audit().Head(ctx, tn.ID); after.Size != head.Size {
			t.Errorf("the refused append moved the head from %d to %d", head.Size, after.Size)
		}
	})
}

// TestAppendsKeepEveryCharacter: the writes of an append travel as one
// script on PostgreSQL, so text that looks like SQL, placeholders or a
// statement's end is stored as it was sent, by a single append and by a
// batch, and the log verifies.
func TestAppendsKeepEveryCharacter(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx, tn, audit, now := auditOfNewTenant(t, db, "verbatim")
		texts := []string{"why? it's $1", "a'); DELETE FROM audit_events; --", `back\slash ?? $$ "quoted"`, "line\nbreak;\tand ünïcödé ✓"}
		var sent []*domain.AuditEvent
		for i, text := range texts {
			e := benchEvents(tn.ID, 1, now)[0]
			name := strings.NewReplacer("\n", " ", "\t", " ").Replace(text) // names and ids refuse control characters
			e.Description, e.Target.Name, e.ExternalID = text, name, fmt.Sprint(name, i)
			e.Fields = map[string]string{"text": text, "k?": "$2"}
			if i%2 == 0 {
				if _, err := audit.Record(ctx, e); err != nil {
					t.Fatalf("record %q: %v", text, err)
				}
			} else if _, err := audit.RecordBatch(ctx, []*domain.AuditEvent{e}); err != nil {
				t.Fatalf("record %q in a batch: %v", text, err)
			}
			sent = append(sent, e)
		}
		page, err := audit.List(ctx, domain.AuditFilter{TenantID: tn.ID, Product: "analytics"}, domain.PageRequest{Size: 100})
		if err != nil {
			t.Fatal(err)
		}
		stored := map[string]*domain.AuditEvent{}
		for _, e := range page.Items {
			stored[e.ID] = e
		}
		for _, e := range sent {
			got := stored[e.ID]
			switch {
			case got == nil:
				t.Errorf("event %q was not stored", e.Description)
			case got.Description != e.Description || got.Target.Name != e.Target.Name || got.ExternalID != e.ExternalID ||
				got.Fields["text"] != e.Fields["text"] || got.Fields["k?"] != "$2":
				t.Errorf("stored %+v, sent %+v", got, e)
			}
		}
		report, err := audit.VerifyChain(ctx, tn.ID, nil)
		if err != nil || !report.OK {
			t.Fatalf("the log: %+v, %v", report, err)
		}
	})
}

// auditOfNewTenant creates a tenant with slug and returns a platform
// caller's context, the tenant, an audit service on db and the time,
// truncated as the store keeps it.
func auditOfNewTenant(t *testing.T, db *persistence.DB, slug string) (context.Context, *domain.Tenant, *domain.AuditService, time.Time) {
	t.Helper()
	ctx := domain.WithCaller(context.Background(), bootstrapCaller)
	tn, err := domain.NewTenantService(db.Store(), domain.SystemClock).Create(ctx, domain.CreateTenant{Slug: slug, DisplayName: slug})
	if err != nil {
		t.Fatal(err)
	}
	return ctx, tn, domain.NewAuditService(db.Store(), domain.SystemClock, domain.AuditSettings{}), time.Now().UTC().Truncate(time.Microsecond)
}
