package persistence_test

import (
	"context"
	"testing"

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
	verifier := domain.NewKeyVerifier(db.Store(), domain.SystemClock, domain.NewKeyCache(domain.DefaultKeyCacheConfig))
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
	verifier := domain.NewKeyVerifier(db.Store(), domain.SystemClock, domain.NewKeyCache(domain.DefaultKeyCacheConfig))
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
			verifier := domain.NewKeyVerifier(db.Store(), domain.SystemClock, domain.NewKeyCache(c.cache))
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
