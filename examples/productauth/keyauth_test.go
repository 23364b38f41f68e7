package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	registryv1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// countingTransport counts the calls that reach the registry, to tell a
// cached answer from a fresh one.
type countingTransport struct {
	calls atomic.Int64
	next  http.RoundTripper
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.calls.Add(1)
	return c.next.RoundTrip(r)
}

// fakeClock is the middleware's clock, moved by the test.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestKeyAuth runs a product behind KeyAuth against the real registry
// server, on SQLite and PostgreSQL: a tenant's key is let in with its
// tenant, a bad one is not, answers are cached, and a revoked key stops
// working once its cached answer is older than the TTL.
func TestKeyAuth(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		registry := testserver.Start(t, db)
		admin := testserver.HTTP1

		// The registry's side: a product, a tenant entitled to it, a key.
		catalog := tenantregistryv1connect.NewCatalogServiceClient(admin, registry.URL)
		if _, err := catalog.CreateProduct(ctx, &registryv1.CreateProductRequest{
			Key: "reports", DisplayName: "Reports", TrialDays: proto.Int32(14),
		}); err != nil {
			t.Fatal(err)
		}
		tenants := tenantregistryv1connect.NewTenantServiceClient(admin, registry.URL)
		created, err := tenants.CreateTenant(ctx, &registryv1.CreateTenantRequest{Slug: "initech", DisplayName: "Initech"})
		if err != nil {
			t.Fatal(err)
		}
		tenantID := created.GetTenant().GetId()
		if _, err := catalog.StartTrial(ctx, &registryv1.StartTrialRequest{TenantId: tenantID, Product: "reports"}); err != nil {
			t.Fatal(err)
		}
		keys := tenantregistryv1connect.NewApiKeyServiceClient(admin, registry.URL)
		key, err := keys.CreateApiKey(ctx, &registryv1.CreateApiKeyRequest{
			TenantId: tenantID, Name: "reports-export", Scopes: []string{"reports:read"},
		})
		if err != nil {
			t.Fatal(err)
		}
		narrow, err := keys.CreateApiKey(ctx, &registryv1.CreateApiKeyRequest{TenantId: tenantID, Name: "no-scopes"})
		if err != nil {
			t.Fatal(err)
		}

		// The product's side: its API behind KeyAuth, with its own
		// connection to the registry.
		counter := &countingTransport{next: &http.Transport{}}
		clock := &fakeClock{now: time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)}
		auth := &KeyAuth{
			Registry:       NewRegistryClient(&http.Client{Transport: counter}, registry.URL, "bp_product-service-key"),
			Product:        "reports",
			RequiredScopes: []string{"reports:read"},
			TTL:            10 * time.Second,
			Now:            clock.Now,
		}
		product := httptest.NewServer(NewProductHandler(auth))
		t.Cleanup(product.Close)

		call := func(authorization string) (int, map[string]any) {
			t.Helper()
			req, _ := http.NewRequest(http.MethodGet, product.URL+"/v1/whoami", nil)
			if authorization != "" {
				req.Header.Set("Authorization", authorization)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var body map[string]any
			if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
				t.Fatalf("status %d, body not JSON: %v", res.StatusCode, err)
			}
			return res.StatusCode, body
		}

		good := "Bearer " + key.GetPlaintextKey()
		status, body := call(good)
		if status != http.StatusOK || body["tenantSlug"] != "initech" || body["tenantId"] != tenantID {
			t.Fatalf("good key: %d %v, want 200 for initech", status, body)
		}
		if products, _ := body["products"].([]any); len(products) != 1 || products[0] != "reports" {
			t.Errorf("products = %v, want [reports]", body["products"])
		}
		if status, _ := call(good); status != http.StatusOK {
			t.Fatalf("good key again: %d", status)
		}
		if n := counter.calls.Load(); n != 1 {
			t.Errorf("registry calls after two requests with one key = %d, want 1 (cached)", n)
		}

		for _, tc := range []struct {
			name, authorization string
			want                int
		}{
			{"no header", "", http.StatusUnauthorized},
			{"not bearer", "Basic " + key.GetPlaintextKey(), http.StatusUnauthorized},
			{"malformed", "Bearer bp_not-a-key", http.StatusUnauthorized},
			{"mistyped", "Bearer " + mistype(key.GetPlaintextKey()), http.StatusUnauthorized},
			{"missing scope", "Bearer " + narrow.GetPlaintextKey(), http.StatusForbidden},
		} {
			if status, body := call(tc.authorization); status != tc.want {
				t.Errorf("%s: %d %v, want %d", tc.name, status, body, tc.want)
			}
		}
		before := counter.calls.Load()
		if status, _ := call("Bearer bp_not-a-key"); status != http.StatusUnauthorized {
			t.Errorf("bad key again: %d", status)
		}
		if n := counter.calls.Load(); n != before {
			t.Errorf("a bad key asked the registry again within the TTL")
		}

		// Revoked: still let in from the cache within the TTL, refused after.
		if _, err := keys.RevokeApiKey(ctx, &registryv1.RevokeApiKeyRequest{Id: key.GetApiKey().GetId()}); err != nil {
			t.Fatal(err)
		}
		clock.Advance(9 * time.Second)
		if status, _ := call(good); status != http.StatusOK {
			t.Errorf("revoked key within the TTL: %d, want 200 from the cache", status)
		}
		clock.Advance(2 * time.Second)
		if status, body := call(good); status != http.StatusUnauthorized || !strings.Contains(body["error"].(string), "REVOKED") {
			t.Errorf("revoked key after the TTL: %d %v, want 401 REVOKED", status, body)
		}
	})
}

// TestKeyAuthRegistryDown answers 503, not 401, when the registry cannot be
// asked, and caches nothing.
func TestKeyAuthRegistryDown(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	auth := &KeyAuth{Registry: NewRegistryClient(http.DefaultClient, down.URL, ""), Product: "reports"}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/v1/whoami", nil)
	req.Header.Set("Authorization", "Bearer bp_whatever")
	NewProductHandler(auth).ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", rec.Code)
	}
	if len(auth.cache) != 0 {
		t.Errorf("cached %d answers of a registry that is down", len(auth.cache))
	}
}

// TestKeyAuthCacheBounded keeps the cache under MaxEntries.
func TestKeyAuthCacheBounded(t *testing.T) {
	auth := &KeyAuth{MaxEntries: 100}
	auth.Registry = stubRegistry{}
	for i := range 1000 {
		if _, err := auth.verify(context.Background(), "bp_"+strings.Repeat("x", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(auth.cache); n > 100 {
		t.Errorf("cache holds %d answers, want at most 100", n)
	}
}

// stubRegistry answers NOT_FOUND for every key.
type stubRegistry struct {
	tenantregistryv1connect.ApiKeyServiceClient
}

func (stubRegistry) VerifyApiKey(context.Context, *registryv1.VerifyApiKeyRequest) (*registryv1.VerifyApiKeyResponse, error) {
	return &registryv1.VerifyApiKeyResponse{Code: registryv1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_NOT_FOUND}, nil
}

// mistype changes one character of a key, as a typo would.
func mistype(key string) string {
	b := []byte(key)
	if b[10] == 'a' {
		b[10] = 'b'
	} else {
		b[10] = 'a'
	}
	return string(b)
}
