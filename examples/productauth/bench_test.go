package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"google.golang.org/protobuf/proto"

	registryv1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/sdk/go/keyauth"
)

// benchProduct is the product of the benchmarks, against a registry on
// SQLite, with a good key cached.
func benchProduct(b *testing.B) (*product, string) {
	b.Helper()
	registry := testserver.Start(b, testdb.MustOpen(b, "sqlite"))
	f := newRegistryFixture(registry.URL)
	must[*registryv1.CreateProductResponse](b)(f.catalog.CreateProduct(context.Background(), &registryv1.CreateProductRequest{
		Key: "reports", DisplayName: "Reports", TrialDays: proto.Int32(14),
	}))
	_, key := f.key(b, f.tenant(b, "initech", true), "reports:read")
	p := startProduct(b, registry.URL, keyauth.Config{Product: "reports", RequiredScopes: []string{"reports:read"}})
	if _, err := p.auth.Verify(context.Background(), key); err != nil {
		b.Fatal(err)
	}
	return p, key
}

// BenchmarkCachedVerification is the SDK's cost per request once a key is
// cached: hashing the key and one lookup, the change stream live.
func BenchmarkCachedVerification(b *testing.B) {
	p, key := benchProduct(b)
	ctx := context.Background()
	before := p.auth.Stats()
	b.ReportAllocs()
	for b.Loop() {
		if id, err := p.auth.Verify(ctx, key); err != nil || id == nil {
			b.Fatal(id, err)
		}
	}
	after := p.auth.Stats()
	b.ReportMetric(float64(after.Hits-before.Hits)/float64(after.Hits+after.Misses-before.Hits-before.Misses), "hit-ratio")
}

// BenchmarkProductHandler serves GET /v1/whoami in-process, with the SDK's
// middleware and, as the baseline, the same handler with the identity
// given instead of verified.
func BenchmarkProductHandler(b *testing.B) {
	p, key := benchProduct(b)
	withAuth := NewProductHandler(p.auth)
	id, err := p.auth.Verify(context.Background(), key)
	if err != nil {
		b.Fatal(err)
	}
	withoutAuth := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(whoami(id))
	})
	for _, h := range []struct {
		name    string
		handler http.Handler
	}{{"no-auth", withoutAuth}, {"sdk-middleware", withAuth}} {
		b.Run(h.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "/v1/whoami", nil)
			req.Header.Set("Authorization", "Bearer "+key)
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.handler.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatal(rec.Code, rec.Body)
				}
			}
		})
	}
}
