package persistence_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// heard collects what a subscriber of a feed hears.
type heard struct {
	mu      sync.Mutex
	changes []domain.Change
}

func (h *heard) add(c domain.Change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.changes = append(h.changes, c)
}

func (h *heard) kinds() []domain.ChangeKind {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []domain.ChangeKind
	for _, c := range h.changes {
		out = append(out, c.Kind)
	}
	return out
}

// has reports whether a change of kind about key or tenant id was heard.
func (h *heard) has(kind domain.ChangeKind, id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.changes {
		if c.Kind == kind && (c.KeyID == id || c.TenantID == id || c.KeyHash == id) {
			return true
		}
	}
	return false
}

// waitFor polls cond every 5 ms for up to limit.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// TestAfterCommit: announcements and the audit counter take effect when
// the transaction commits, in order, and not at all when it rolls back.
func TestAfterCommit(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := domain.WithCaller(context.Background(), bootstrapCaller)
		waitFor(t, "the feed current", 10*time.Second, db.Changes().Current) // its listener connected, and reset
		cache := &heard{}
		db.Changes().Subscribe(cache.add)
		now := time.Now().UTC().Truncate(time.Microsecond)
		tn := newTenant("after-commit", now)
		if err := write(ctx, db, func(r domain.Repositories) error { return r.Tenants().Create(ctx, tn) }); err != nil {
			t.Fatal(err)
		}
		event := func() []*domain.AuditEvent {
			return []*domain.AuditEvent{{ID: domain.NewID(), TenantID: tn.ID, Product: "test", Action: "x.done", CRUD: "c", OccurTime: now, ReceiveTime: now}}
		}
		appended := db.AuditEventsAppended()
		rollback := errors.New("roll back")
		err := db.Store().Atomically(ctx, func(r domain.Repositories) error {
			if err := r.Invalidations().Announce(ctx, domain.Change{Kind: domain.ChangeTenantFrozen, TenantID: tn.ID}); err != nil {
				return err
			}
			if err := r.Audit().Append(ctx, event()); err != nil {
				return err
			}
			return rollback
		})
		if err == nil {
			t.Fatal("Atomically = nil, want the callback's error")
		}
		if got := cache.kinds(); len(got) != 0 || db.AuditEventsAppended() != appended {
			t.Fatalf("a rolled-back transaction delivered %v and counted %d events", got, db.AuditEventsAppended()-appended)
		}
		err = db.Store().Atomically(ctx, func(r domain.Repositories) error {
			for _, kind := range []domain.ChangeKind{domain.ChangeTenantFrozen, domain.ChangeTenantActivated} {
				if err := r.Invalidations().Announce(ctx, domain.Change{Kind: kind, TenantID: tn.ID}); err != nil {
					return err
				}
				if len(cache.kinds()) != 0 {
					t.Error("a change was delivered before its transaction committed")
				}
			}
			if err := r.Invalidations().Repeat(ctx, domain.Change{Kind: domain.ChangeEntitlementRevoked, TenantID: tn.ID}); err != nil {
				return err
			}
			return r.Audit().Append(ctx, event())
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []domain.ChangeKind{domain.ChangeTenantFrozen, domain.ChangeTenantActivated, domain.ChangeEntitlementRevoked}
		if got := cache.kinds(); len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
			t.Errorf("delivered %v after the commit, want %v", got, want)
		}
		if n := db.AuditEventsAppended() - appended; n != 1 {
			t.Errorf("counted %d audit events, want 1", n)
		}
	})
}

// TestChangesReachOtherHandles runs two handles on one PostgreSQL database,
// as two replicas would: what one announces the other hears, its ordered
// subscribers once; what one repeats (a retry) stays in it; a change in the
// format of an earlier version is heard as such.
func TestChangesReachOtherHandles(t *testing.T) {
	dbURL := testdb.PostgresURL(t)
	a, b := testdb.MustOpenURL(t, dbURL), testdb.MustOpenURL(t, dbURL)
	ctx := context.Background()
	aCache, aOrdered, bCache, bOrdered := &heard{}, &heard{}, &heard{}, &heard{}
	a.Changes().Subscribe(aCache.add)
	a.Changes().SubscribeOrdered(aOrdered.add)
	b.Changes().Subscribe(bCache.add)
	b.Changes().SubscribeOrdered(bOrdered.add)
	waitFor(t, "both feeds current", 10*time.Second, func() bool { return a.Changes().Current() && b.Changes().Current() })

	announce := func(db *persistence.DB, c domain.Change, repeat bool) {
		t.Helper()
		err := db.Store().Atomically(ctx, func(r domain.Repositories) error {
			if repeat {
				return r.Invalidations().Repeat(ctx, c)
			}
			return r.Invalidations().Announce(ctx, c)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	revoked := domain.Change{Kind: domain.ChangeKeyRevoked, TenantID: domain.NewID(), KeyID: domain.NewID(), KeyHash: "abc123"}
	announce(a, revoked, false)
	if !aCache.has(domain.ChangeKeyRevoked, revoked.KeyID) {
		t.Fatal("the announcing handle's cache did not hear its change at once")
	}
	waitFor(t, "the other handle hearing the change", time.Second, func() bool { return bCache.has(domain.ChangeKeyRevoked, revoked.KeyID) })
	waitFor(t, "ordered subscribers hearing it", time.Second, func() bool {
		return aOrdered.has(domain.ChangeKeyRevoked, revoked.KeyID) && bOrdered.has(domain.ChangeKeyRevoked, revoked.KeyID)
	})

	retried := domain.Change{Kind: domain.ChangeTenantFrozen, TenantID: domain.NewID()}
	announce(a, retried, true)
	// An earlier version's replica announces a key hash alone; a marker
	// after it tells when b has heard everything before.
	if _, err := b.Bun().ExecContext(ctx, "SELECT pg_notify('tenant_registry_invalidations', 'k:oldhash')"); err != nil {
		t.Fatal(err)
	}
	marker := domain.Change{Kind: domain.ChangeTenantActivated, TenantID: domain.NewID()}
	announce(a, marker, false)
	waitFor(t, "the marker", time.Second, func() bool { return bCache.has(domain.ChangeTenantActivated, marker.TenantID) })
	if bCache.has(domain.ChangeTenantFrozen, retried.TenantID) || bOrdered.has(domain.ChangeTenantFrozen, retried.TenantID) {
		t.Error("a retry's change reached another replica")
	}
	if !aCache.has(domain.ChangeTenantFrozen, retried.TenantID) {
		t.Error("a retry's change did not reach its own replica's cache")
	}
	if !bCache.has(domain.ChangeUnknown, "oldhash") || !bOrdered.has(domain.ChangeUnknown, "oldhash") {
		t.Error("a change of the earlier version was not heard")
	}
	for _, h := range []*heard{aCache, aOrdered, bCache, bOrdered} {
		n := 0
		for _, k := range h.kinds() {
			if k == domain.ChangeUnknown {
				n++
			}
		}
		if n != 1 {
			t.Errorf("heard %d changes of the earlier version's format (%v), want 1: this version's own twins must be skipped", n, h.kinds())
		}
	}
}

// TestHeartbeatsPassASaturatedPool fills a replica's pool with slow
// queries: its heartbeats, on a connection of their own, keep its feed
// current, and a change another replica commits meanwhile is heard.
func TestHeartbeatsPassASaturatedPool(t *testing.T) {
	dbURL := testdb.PostgresURL(t)
	testdb.MustOpenURL(t, dbURL) // migrated
	ctx := context.Background()
	b, err := persistence.Open(ctx, dbURL, persistence.WithMaxConns(2))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a := testdb.MustOpenURL(t, dbURL)
	bCache := &heard{}
	b.Changes().Subscribe(bCache.add)
	waitFor(t, "b's feed current", 10*time.Second, b.Changes().Current)

	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { _, _ = b.Bun().ExecContext(ctx, "SELECT pg_sleep(3)") })
	}
	defer wg.Wait()
	time.Sleep(time.Second) // the pool is full, and a heartbeat through it would have stalled by now
	busy, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := b.Ready(busy); err == nil {
		t.Fatal("b's pool answered: it is not saturated, and the test proves nothing")
	}
	c := domain.Change{Kind: domain.ChangeKeyRevoked, TenantID: domain.NewID(), KeyID: domain.NewID(), KeyHash: "saturated"}
	if err := a.Store().Atomically(ctx, func(r domain.Repositories) error { return r.Invalidations().Announce(ctx, c) }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b hearing a change with its pool saturated", time.Second, func() bool { return bCache.has(domain.ChangeKeyRevoked, c.KeyID) })
	if !b.Changes().Current() {
		t.Error("b's feed is not current with its pool saturated")
	}
}
