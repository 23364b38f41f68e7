package persistence_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/persistence"
)

var bootstrapCaller = domain.Caller{Principal: domain.Principal{ID: "test", Type: "dev", Roles: []string{domain.RolePlatformAdmin}}}

// issueKey creates a tenant and a key through the domain services.
func issueKey(tb testing.TB, db *persistence.DB) string {
	tb.Helper()
	ctx := domain.WithCaller(context.Background(), bootstrapCaller)
	t, err := domain.NewTenantService(db.Store(), domain.SystemClock).Create(ctx, domain.CreateTenant{Slug: "verifier", DisplayName: "Verifier"})
	if err != nil {
		tb.Fatal(err)
	}
	verifier := db.KeyVerifier(domain.SystemClock, domain.DefaultKeyCacheConfig)
	_, plaintext, err := domain.NewApiKeyService(db.Store(), domain.SystemClock, verifier).Create(ctx, domain.CreateApiKey{TenantID: t.ID, Name: "bench"})
	if err != nil {
		tb.Fatal(err)
	}
	return plaintext
}

// TestMalformedKeysNeedNoDatabase verifies malformed keys with the
// database closed: the checksum refuses them before any query.
func TestMalformedKeysNeedNoDatabase(t *testing.T) {
	db := testdb.MustOpen(t, "sqlite")
	good := issueKey(t, db)
	verifier := db.KeyVerifier(domain.SystemClock, domain.DefaultKeyCacheConfig)
	db.Close()
	otherSum := good[:len(good)-1] + map[bool]string{true: "A", false: "B"}[good[len(good)-1] != 'A']
	for _, key := range []string{"", "bp_", good[:len(good)-1] + "!", otherSum, "sk_" + good[3:], good + "x"} {
		v, err := verifier.Verify(context.Background(), key, "", nil)
		if err != nil || v.Code != domain.VerifyMalformed {
			t.Errorf("Verify(%q) = %v, %v; want MALFORMED without touching the database", key, v, err)
		}
	}
	if _, err := verifier.Verify(context.Background(), good, "", nil); err == nil {
		t.Fatal("a well-formed key was answered with the database closed; the check above proves nothing")
	}
}

// BenchmarkVerify measures the verification path: a cache hit (hash and
// lookup) and the database path (hash and one query), per dialect.
func BenchmarkVerify(b *testing.B) {
	for _, dialect := range testdb.Dialects {
		db := testdb.MustOpen(b, dialect)
		key := issueKey(b, db)
		ctx := context.Background()
		for _, c := range []struct {
			name  string
			cache domain.KeyCacheConfig
		}{
			{"cache-hit", domain.DefaultKeyCacheConfig},
			{"database", domain.KeyCacheConfig{Disabled: true}},
		} {
			verifier := db.KeyVerifier(domain.SystemClock, c.cache)
			for deadline := time.Now().Add(10 * time.Second); !c.cache.Disabled && !verifier.Cache().Trusted(); {
				if time.Now().After(deadline) {
					b.Fatal("the change feed did not become current: every verification would read the database")
				}
				time.Sleep(10 * time.Millisecond)
			}
			b.Run(dialect+"/"+c.name, func(b *testing.B) {
				for b.Loop() {
					if v, err := verifier.Verify(ctx, key, "", nil); err != nil || !v.Valid() {
						b.Fatalf("%v %v", v, err)
					}
				}
			})
		}
	}
}

// TestVerificationQueryAgrees holds the verification query to one answer:
// on PostgreSQL its function and its text return the same rows, and those
// rows are SQLite's for the same data, row for row. The data covers what
// the join can get wrong: a tenant with several entitlements of every
// state and with none, keys with and without scopes, expiry, revocation
// and last use, and a hash matching nothing.
func TestVerificationQueryAgrees(t *testing.T) {
	ctx := context.Background()
	at := func(h int) time.Time { return time.Date(2026, 11, 22, h, 0, 0, 123456000, time.UTC) }
	const (
		tenant1, tenant2 = "0190d9e1-0000-7000-8000-000000000001", "0190d9e1-0000-7000-8000-000000000002"
	)
	keys := []*domain.ApiKey{
		{ID: "0190d9e1-0000-7000-8000-0000000000a1", TenantID: tenant1, Name: "full", Prefix: "bp_aaaaaaaa", Hash: "sha256|aa",
			Scopes: []string{"reports:read", "reports:write"}, CreateTime: at(1), UpdateTime: at(2), LastUsedTime: at(3)},
		{ID: "0190d9e1-0000-7000-8000-0000000000a2", TenantID: tenant1, Name: "gone", Prefix: "bp_bbbbbbbb", Hash: "sha256|bb",
			Scopes: []string{}, CreateTime: at(1), UpdateTime: at(4), ExpireTime: at(5), RevokeTime: at(4)},
		{ID: "0190d9e1-0000-7000-8000-0000000000a3", TenantID: tenant2, Name: "frozen's", Prefix: "bp_cccccccc", Hash: "sha256|cc",
			Scopes: []string{"x"}, CreateTime: at(1), UpdateTime: at(1)},
	}
	ents := []*domain.Entitlement{
		{TenantID: tenant1, Product: "analytics", Status: domain.EntitlementActive, Source: domain.SourceGrant, StartTime: at(1), CreateTime: at(1), UpdateTime: at(1)},
		{TenantID: tenant1, Product: "helpdesk", Status: domain.EntitlementTrial, Source: domain.SourceTrial, StartTime: at(1), ExpireTime: at(9), CreateTime: at(1), UpdateTime: at(1)},
		{TenantID: tenant1, Product: "crm", Status: domain.EntitlementRevoked, Source: domain.SourceGrant, StartTime: at(1), CreateTime: at(1), UpdateTime: at(2)},
	}
	rows := map[string]map[string][]string{} // dialect → hash → rows
	for _, dialect := range testdb.Dialects {
		db := testdb.MustOpen(t, dialect)
		for _, p := range []string{"analytics", "helpdesk", "crm"} {
			product := &domain.Product{Key: p, DisplayName: p, CreateTime: at(0), UpdateTime: at(0)}
			if err := write(ctx, db, func(r domain.Repositories) error { return r.Products().Create(ctx, product) }); err != nil {
				t.Fatal(err)
			}
		}
		for id, status := range map[string]domain.TenantStatus{tenant1: domain.TenantActive, tenant2: domain.TenantFrozen} {
			tn := newTenant("t-"+id[len(id)-1:], at(0))
			tn.ID, tn.Status = id, status
			if err := write(ctx, db, func(r domain.Repositories) error { return r.Tenants().Create(ctx, tn) }); err != nil {
				t.Fatal(err)
			}
		}
		for _, k := range keys {
			if err := write(ctx, db, func(r domain.Repositories) error { return r.ApiKeys().Create(ctx, k) }); err != nil {
				t.Fatal(err)
			}
		}
		used := map[string]time.Time{keys[0].ID: at(3)}
		if err := write(ctx, db, func(r domain.Repositories) error { return r.ApiKeys().TouchLastUsed(ctx, used) }); err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if err := write(ctx, db, func(r domain.Repositories) error { return r.Entitlements().Upsert(ctx, e) }); err != nil {
				t.Fatal(err)
			}
		}
		rows[dialect] = map[string][]string{}
		for _, hash := range []string{"sha256|aa", "sha256|bb", "sha256|cc", "sha256|none"} {
			text, err := persistence.VerificationRows(ctx, db, hash, false)
			if err != nil {
				t.Fatalf("%s, %s: %v", dialect, hash, err)
			}
			rows[dialect][hash] = text
			if dialect != "postgres" {
				continue
			}
			function, err := persistence.VerificationRows(ctx, db, hash, true)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(function, text) {
				t.Errorf("%s: PostgreSQL's function answers\n%s\nits text\n%s", hash, strings.Join(function, "\n"), strings.Join(text, "\n"))
			}
		}
	}
	if n := len(rows["sqlite"]["sha256|aa"]); n != 3 {
		t.Fatalf("the key of a tenant with 3 entitlements has %d rows, want 3", n)
	}
	for hash, sqlite := range rows["sqlite"] {
		if pg := rows["postgres"][hash]; !slices.Equal(sqlite, pg) {
			t.Errorf("%s: SQLite answers\n%s\nPostgreSQL\n%s", hash, strings.Join(sqlite, "\n"), strings.Join(pg, "\n"))
		}
	}
}
