package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	registryv1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/tcpproxy"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
	"github.com/tenant-registry/tenant-registry/sdk/go/keyauth"
)

// verifyCounter counts the VerifyApiKey calls that reach the registry, to
// tell a cached answer from a fresh one.
type verifyCounter struct {
	calls atomic.Int64
	next  http.RoundTripper
}

func (c *verifyCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == tenantregistryv1connect.ApiKeyServiceVerifyApiKeyProcedure {
		c.calls.Add(1)
	}
	return c.next.RoundTrip(r)
}

// product is the example product running against a registry.
type product struct {
	url      string
	auth     *keyauth.Verifier
	verifies *verifyCounter
}

// startProduct serves the product until t ends, its change stream
// running, and waits until the stream is live.
func startProduct(t testing.TB, registryURL string, cfg keyauth.Config) *product {
	t.Helper()
	counter := &verifyCounter{next: &http.Transport{MaxIdleConnsPerHost: 64}}
	cfg.RegistryURL, cfg.HTTPClient = registryURL, &http.Client{Transport: counter}
	auth, err := keyauth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		_ = auth.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-ran
	})
	srv := httptest.NewUnstartedServer(NewProductHandler(auth))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true) // for gRPC callers
	srv.Start()
	t.Cleanup(srv.Close)
	deadline := time.Now().Add(10 * time.Second)
	for auth.Stats().State != keyauth.StreamLive {
		if time.Now().After(deadline) {
			t.Fatalf("the product's change stream is not live after 10 s: %+v", auth.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &product{url: srv.URL, auth: auth, verifies: counter}
}

// heard waits until the product has heard n changes on its stream.
func (p *product) heard(t testing.TB, n uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.auth.Stats().Changes < n {
		if time.Now().After(deadline) {
			t.Fatalf("the product heard %d changes, want %d", p.auth.Stats().Changes, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// call sends GET /v1/whoami with key as a bearer token ("" for none, or a
// whole Authorization header when it has a space).
func (p *product) call(t testing.TB, key string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, p.url+"/v1/whoami", nil)
	switch {
	case strings.Contains(key, " "):
		req.Header.Set("Authorization", key)
	case key != "":
		req.Header.Set("Authorization", "Bearer "+key)
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

// within polls the product with key until it answers want, for at most
// limit, and returns how long that took.
func (p *product) within(t testing.TB, what, key string, want int, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		status, body := p.call(t, key)
		if status == want {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("%s: the product still answers %d %v after %v, want %d", what, status, body, limit, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// registryFixture is the registry's side: a product, a tenant with a
// trial of it, and calls to change them.
type registryFixture struct {
	catalog tenantregistryv1connect.CatalogServiceClient
	tenants tenantregistryv1connect.TenantServiceClient
	ents    tenantregistryv1connect.EntitlementServiceClient
	keys    tenantregistryv1connect.ApiKeyServiceClient
}

func newRegistryFixture(url string) *registryFixture {
	h := testserver.HTTP1
	return &registryFixture{
		catalog: tenantregistryv1connect.NewCatalogServiceClient(h, url),
		tenants: tenantregistryv1connect.NewTenantServiceClient(h, url),
		ents:    tenantregistryv1connect.NewEntitlementServiceClient(h, url),
		keys:    tenantregistryv1connect.NewApiKeyServiceClient(h, url),
	}
}

func (f *registryFixture) tenant(t testing.TB, slug string, trial bool) string {
	t.Helper()
	ctx := context.Background()
	created, err := f.tenants.CreateTenant(ctx, &registryv1.CreateTenantRequest{Slug: slug, DisplayName: slug})
	if err != nil {
		t.Fatal(err)
	}
	if trial {
		if _, err := f.catalog.StartTrial(ctx, &registryv1.StartTrialRequest{TenantId: created.GetTenant().GetId(), Product: "reports"}); err != nil {
			t.Fatal(err)
		}
	}
	return created.GetTenant().GetId()
}

func (f *registryFixture) key(t testing.TB, tenantID string, scopes ...string) (id, plaintext string) {
	t.Helper()
	res, err := f.keys.CreateApiKey(context.Background(), &registryv1.CreateApiKeyRequest{TenantId: tenantID, Name: "k", Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return res.GetApiKey().GetId(), res.GetPlaintextKey()
}

func must[T any](t testing.TB) func(T, error) {
	return func(_ T, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestProductAuth runs the product behind the SDK against the real
// registry, on SQLite and PostgreSQL: a tenant's key is let in with its
// tenant and cached; bad keys are refused; and every change that makes a
// cached answer wrong (revocation, rotation, a frozen tenant, an
// entitlement granted or revoked) is felt at the product within 1 s, far
// below the TTL.
func TestProductAuth(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		registry := testserver.Start(t, db)
		f := newRegistryFixture(registry.URL)
		must[*registryv1.CreateProductResponse](t)(f.catalog.CreateProduct(ctx, &registryv1.CreateProductRequest{
			Key: "reports", DisplayName: "Reports", TrialDays: proto.Int32(14),
		}))
		initech := f.tenant(t, "initech", true)
		keyID, key := f.key(t, initech, "reports:read")
		_, narrow := f.key(t, initech)
		p := startProduct(t, registry.URL, keyauth.Config{Product: "reports", RequiredScopes: []string{"reports:read"}, TTL: time.Hour})

		status, body := p.call(t, key)
		if status != http.StatusOK || body["tenantSlug"] != "initech" || body["tenantId"] != initech || body["keyId"] != keyID {
			t.Fatalf("good key: %d %v, want 200 for initech", status, body)
		}
		if products, _ := body["products"].([]any); len(products) != 1 || products[0] != "reports" {
			t.Errorf("products = %v, want [reports]", body["products"])
		}
		if status, _ := p.call(t, key); status != http.StatusOK {
			t.Fatalf("good key again: %d", status)
		}
		if n := p.verifies.calls.Load(); n != 1 {
			t.Errorf("registry calls after two requests with one key = %d, want 1 (cached)", n)
		}
		for _, tc := range []struct {
			name, key string
			want      int
		}{
			{"no header", "", http.StatusUnauthorized},
			{"not bearer", "Basic " + key, http.StatusUnauthorized},
			{"malformed", "bp_not-a-key", http.StatusUnauthorized},
			{"mistyped", mistype(key), http.StatusUnauthorized},
			{"missing scope", narrow, http.StatusForbidden},
		} {
			if status, body := p.call(t, tc.key); status != tc.want {
				t.Errorf("%s: %d %v, want %d", tc.name, status, body, tc.want)
			}
		}
		before := p.verifies.calls.Load()
		if status, _ := p.call(t, mistype(key)); status != http.StatusUnauthorized || p.verifies.calls.Load() != before {
			t.Errorf("a bad key asked the registry again (%d), or was let in (%d)", p.verifies.calls.Load()-before, status)
		}

		must[*registryv1.RevokeApiKeyResponse](t)(f.keys.RevokeApiKey(ctx, &registryv1.RevokeApiKeyRequest{Id: keyID}))
		d := p.within(t, "revoked key", key, http.StatusUnauthorized, time.Second)
		t.Logf("revocation felt at the product after %v", d)
		if _, body := p.call(t, key); !strings.Contains(body["error"].(string), "REVOKED") {
			t.Errorf("revoked key: %v, want REVOKED", body)
		}

		rotateID, rotated := f.key(t, initech, "reports:read")
		p.within(t, "new key", rotated, http.StatusOK, time.Second)
		must[*registryv1.RotateApiKeyResponse](t)(f.keys.RotateApiKey(ctx, &registryv1.RotateApiKeyRequest{Id: rotateID, GracePeriod: durationpb.New(0)}))
		p.within(t, "rotated key, no grace", rotated, http.StatusUnauthorized, time.Second)

		// A tenant without the product: refused (403, cached), let in once
		// granted, refused again once revoked; frozen, and reactivated.
		globex := f.tenant(t, "globex", false)
		heard := p.auth.Stats().Changes
		_, gkey := f.key(t, globex, "reports:read")
		p.heard(t, heard+1) // the key's creation, which would keep the answer out of the cache
		p.within(t, "key of a tenant without the product", gkey, http.StatusForbidden, time.Second)
		before = p.verifies.calls.Load()
		if status, _ := p.call(t, gkey); status != http.StatusForbidden || p.verifies.calls.Load() != before {
			t.Errorf("NOT_ENTITLED again: %d, %d registry calls; want 403 from the cache", status, p.verifies.calls.Load()-before)
		}
		must[*registryv1.GrantEntitlementResponse](t)(f.ents.GrantEntitlement(ctx, &registryv1.GrantEntitlementRequest{TenantId: globex, Product: "reports"}))
		p.within(t, "entitlement granted", gkey, http.StatusOK, time.Second)
		must[*registryv1.RevokeEntitlementResponse](t)(f.ents.RevokeEntitlement(ctx, &registryv1.RevokeEntitlementRequest{TenantId: globex, Product: "reports"}))
		p.within(t, "entitlement revoked", gkey, http.StatusForbidden, time.Second)
		must[*registryv1.GrantEntitlementResponse](t)(f.ents.GrantEntitlement(ctx, &registryv1.GrantEntitlementRequest{TenantId: globex, Product: "reports"}))
		p.within(t, "entitlement granted again", gkey, http.StatusOK, time.Second)
		must[*registryv1.CancelTenantResponse](t)(f.tenants.CancelTenant(ctx, &registryv1.CancelTenantRequest{Id: globex}))
		p.within(t, "tenant frozen", gkey, http.StatusUnauthorized, time.Second)
		must[*registryv1.ActivateTenantResponse](t)(f.tenants.ActivateTenant(ctx, &registryv1.ActivateTenantRequest{Id: globex}))
		p.within(t, "tenant reactivated", gkey, http.StatusOK, time.Second)
		if s := p.auth.Stats(); s.Hits == 0 || s.Changes == 0 || s.State != keyauth.StreamLive {
			t.Errorf("stats %+v: want cache hits, changes heard and a live stream", s)
		}
	})
}

// TestProductAuthRegistryDown answers 503, not 401, when the registry
// cannot be asked, and caches nothing.
func TestProductAuthRegistryDown(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	auth, err := keyauth.New(keyauth.Config{RegistryURL: down.URL, Product: "reports"})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/v1/whoami", nil)
	req.Header.Set("Authorization", "Bearer bp_whatever")
	NewProductHandler(auth).ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("status %d (Retry-After %q), want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	if n := auth.Stats().Entries; n != 0 {
		t.Errorf("cached %d answers of a registry that is down", n)
	}
}

// TestProductAuthConnect calls the product's Connect procedure, behind the
// SDK's interceptor, over Connect and gRPC.
func TestProductAuthConnect(t *testing.T) {
	db := testdb.MustOpen(t, "sqlite")
	registry := testserver.Start(t, db)
	f := newRegistryFixture(registry.URL)
	must[*registryv1.CreateProductResponse](t)(f.catalog.CreateProduct(context.Background(), &registryv1.CreateProductRequest{
		Key: "reports", DisplayName: "Reports", TrialDays: proto.Int32(14),
	}))
	initech := f.tenant(t, "initech", true)
	_, key := f.key(t, initech, "reports:read")
	_, narrow := f.key(t, initech)
	p := startProduct(t, registry.URL, keyauth.Config{Product: "reports", RequiredScopes: []string{"reports:read"}})
	for _, proto := range []struct {
		name   string
		client *http.Client
		opts   []connect.ClientOption
	}{
		{"connect", testserver.HTTP1, nil},
		{"grpc", testserver.H2C, []connect.ClientOption{connect.WithGRPC()}},
	} {
		client := connect.NewClient[emptypb.Empty, structpb.Struct](proto.client, p.url+WhoamiProcedure, proto.opts...)
		call := func(key string) (*connect.Response[structpb.Struct], error) {
			req := connect.NewRequest(&emptypb.Empty{})
			if key != "" {
				req.Header().Set("Authorization", "Bearer "+key)
			}
			return client.CallUnary(context.Background(), req)
		}
		res, err := call(key)
		if err != nil || res.Msg.GetFields()["tenantId"].GetStringValue() != initech {
			t.Fatalf("%s, good key: %v, %v", proto.name, res, err)
		}
		for _, tc := range []struct {
			key  string
			want connect.Code
		}{{"", connect.CodeUnauthenticated}, {mistype(key), connect.CodeUnauthenticated}, {narrow, connect.CodePermissionDenied}} {
			if _, err := call(tc.key); connect.CodeOf(err) != tc.want {
				t.Errorf("%s, key %q: %v, want %v", proto.name, tc.key, err, tc.want)
			}
		}
	}
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

// TestProductReconnectsPastAFrozenLink starts the product with its link to
// the registry frozen (connections accepted, no byte moving, as behind a
// black hole): its change stream gives up each silent attempt and tries
// again, the product fails closed meanwhile, and once the link thaws the
// stream is live.
func TestProductReconnectsPastAFrozenLink(t *testing.T) {
	registry := testserver.Start(t, testdb.MustOpen(t, "sqlite"))
	proxy := tcpproxy.Start(t, strings.TrimPrefix(registry.URL, "http://"))
	proxy.Freeze(true)
	auth, err := keyauth.New(keyauth.Config{RegistryURL: "http://" + proxy.Addr(), VerifyTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		_ = auth.Run(ctx)
	}()
	t.Cleanup(func() {
		proxy.Freeze(false)
		cancel()
		<-ran
	})
	deadline := time.Now().Add(10 * time.Second)
	for auth.Stats().Connects < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the stream was opened %d times in 10 s over a frozen link: an attempt hangs", auth.Stats().Connects)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := auth.Verify(context.Background(), "bp_0123456789012345678901234567890123456789012abcdef"); !errors.Is(err, keyauth.ErrUnavailable) || auth.Trusted() {
		t.Errorf("over a frozen link: %v, trusted %v; want ErrUnavailable, untrusted", err, auth.Trusted())
	}
	proxy.Freeze(false)
	for deadline := time.Now().Add(10 * time.Second); auth.Stats().State != keyauth.StreamLive; {
		if time.Now().After(deadline) {
			t.Fatalf("not live 10 s after the thaw: %+v", auth.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
