package main

import (
	"context"
	"testing"
	"time"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// replica is one server process's worth of wiring on a shared database.
type replica struct {
	m            *Main
	url          string
	tenants      tenantregistryv1connect.TenantServiceClient
	keys         tenantregistryv1connect.ApiKeyServiceClient
	entitlements tenantregistryv1connect.EntitlementServiceClient
	catalog      tenantregistryv1connect.CatalogServiceClient
}

func startReplica(t *testing.T, dbURL string) *replica {
	t.Helper()
	srv := serve(t, map[string]string{"DATABASE_URL": dbURL})
	return &replica{
		m: srv.m, url: srv.baseURL,
		tenants:      tenantregistryv1connect.NewTenantServiceClient(testserver.HTTP1, srv.baseURL),
		keys:         tenantregistryv1connect.NewApiKeyServiceClient(testserver.HTTP1, srv.baseURL),
		entitlements: tenantregistryv1connect.NewEntitlementServiceClient(testserver.HTTP1, srv.baseURL),
		catalog:      tenantregistryv1connect.NewCatalogServiceClient(testserver.HTTP1, srv.baseURL),
	}
}

func (r *replica) code(t *testing.T, key string) v1.ApiKeyVerificationCode {
	t.Helper()
	return r.verify(t, key).GetCode()
}

func (r *replica) verify(t *testing.T, key string) *v1.VerifyApiKeyResponse {
	t.Helper()
	res, err := r.keys.VerifyApiKey(context.Background(), &v1.VerifyApiKeyRequest{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// waitTrusted waits until the replica's key cache is fed by its listener.
func (r *replica) waitTrusted(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !r.m.KeyCache.Trusted() {
		if time.Now().After(deadline) {
			t.Fatal("the invalidation listener did not connect")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// propagation returns how long replica b took to answer want for key.
func propagation(t *testing.T, b *replica, key string, want v1.ApiKeyVerificationCode) time.Duration {
	t.Helper()
	return propagationOf(t, b, key, want.String(), func(res *v1.VerifyApiKeyResponse) bool { return res.GetCode() == want })
}

// propagationOf returns how long replica b took to give for key an answer
// that reached says is the new one.
func propagationOf(t *testing.T, b *replica, key, want string, reached func(*v1.VerifyApiKeyResponse) bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		res, err := b.keys.VerifyApiKey(context.Background(), &v1.VerifyApiKeyRequest{Key: key})
		if err != nil {
			t.Fatal(err)
		}
		if reached(res) {
			return time.Since(start)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("replica still answers the old result after 5 s, want %s", want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// seatsAt answers whether a verification carries product's seats limit n.
func seatsAt(product string, n int64) func(*v1.VerifyApiKeyResponse) bool {
	return func(res *v1.VerifyApiKeyResponse) bool {
		for _, e := range res.GetEntitlements() {
			if e.GetProduct() == product && e.GetLimits()["seats"] == n {
				return true
			}
		}
		return false
	}
}

// TestChangesReachOtherReplicas runs two server processes' wiring on one
// PostgreSQL: a revocation, a rotation, a disabling, an enabling, a change of
// a key's metadata or of a product's limits and a tenant's freezing made
// through one must be answered by the other, which had the key cached,
// within 1 s.
func TestChangesReachOtherReplicas(t *testing.T) {
	dbURL := testdb.PostgresURL(t)
	a, b := startReplica(t, dbURL), startReplica(t, dbURL)
	b.waitTrusted(t)
	ctx := context.Background()
	tn, err := a.tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: "replicated", DisplayName: "Replicated"})
	if err != nil {
		t.Fatal(err)
	}
	tenantID := tn.GetTenant().GetId()
	catalog, entitlements := a.catalog, a.entitlements
	if _, err := catalog.CreateProduct(ctx, &v1.CreateProductRequest{Key: "seated", DisplayName: "Seated", DefaultLimits: map[string]int64{"seats": 5}}); err != nil {
		t.Fatal(err)
	}
	if _, err := entitlements.GrantEntitlement(ctx, &v1.GrantEntitlementRequest{TenantId: tenantID, Product: "seated"}); err != nil {
		t.Fatal(err)
	}
	newKey := func() (string, string) {
		res, err := a.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: tenantID, Name: "k"})
		if err != nil {
			t.Fatal(err)
		}
		key := res.GetPlaintextKey()
		hitsBefore := lookups(b)
		for range 3 { // warm b's cache
			if c := b.code(t, key); c != v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID {
				t.Fatalf("fresh key on the other replica: %v", c)
			}
		}
		if lookups(b) == hitsBefore {
			t.Fatal("the other replica did not use its cache")
		}
		return res.GetApiKey().GetId(), key
	}
	valid := v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID
	is := func(want v1.ApiKeyVerificationCode) func(*v1.VerifyApiKeyResponse) bool {
		return func(res *v1.VerifyApiKeyResponse) bool { return res.GetCode() == want }
	}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	scenarios := []struct {
		name    string
		change  func(keyID, key string)
		want    string
		reached func(*v1.VerifyApiKeyResponse) bool
	}{
		{"revoke", func(id, _ string) {
			must(a.keys.RevokeApiKey(ctx, &v1.RevokeApiKeyRequest{Id: id}))
		}, "revoked", is(v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_REVOKED)},
		{"rotate", func(id, _ string) {
			must(a.keys.RotateApiKey(ctx, &v1.RotateApiKeyRequest{Id: id}))
		}, "expired", is(v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_EXPIRED)},
		{"disable", func(id, _ string) {
			must(a.keys.DisableApiKey(ctx, &v1.DisableApiKeyRequest{Id: id}))
		}, "disabled", is(v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_DISABLED)},
		{"enable", func(id, key string) {
			must(a.keys.DisableApiKey(ctx, &v1.DisableApiKeyRequest{Id: id}))
			propagation(t, b, key, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_DISABLED)
			must(a.keys.EnableApiKey(ctx, &v1.EnableApiKeyRequest{Id: id}))
		}, "valid again", is(valid)},
		{"update metadata", func(id, _ string) {
			must(a.keys.UpdateApiKey(ctx, &v1.UpdateApiKeyRequest{
				Id: id, Metadata: map[string]string{"plan": "gold"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"metadata"}},
			}))
		}, "the new metadata", func(res *v1.VerifyApiKeyResponse) bool {
			return res.GetCode() == valid && res.GetMetadata()["plan"] == "gold"
		}},
		{"change product limits", func(_, key string) {
			if !seatsAt("seated", 5)(b.verify(t, key)) {
				t.Fatal("the other replica does not answer the product's limits")
			}
			must(catalog.UpdateProduct(ctx, &v1.UpdateProductRequest{Key: "seated", DefaultLimits: map[string]int64{"seats": 9}}))
		}, "9 seats", seatsAt("seated", 9)},
		{"cancel tenant", func(string, string) {
			must(a.tenants.CancelTenant(ctx, &v1.CancelTenantRequest{Id: tenantID}))
		}, "tenant frozen", is(v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_TENANT_FROZEN)},
	}
	for _, s := range scenarios {
		id, key := newKey()
		s.change(id, key)
		if d := propagationOf(t, b, key, s.want, s.reached); d > time.Second {
			t.Errorf("%s reached the other replica after %v, want within 1 s", s.name, d)
		} else {
			t.Logf("%s reached the other replica after %v", s.name, d)
		}
	}
}

// TestReplicaDistrustsCacheWhileListenerIsDown cuts the other replica's
// listener connection: while it is down the replica must not answer from
// its cache, and it must flush and trust the cache again once reconnected.
func TestReplicaDistrustsCacheWhileListenerIsDown(t *testing.T) {
	dbURL := testdb.PostgresURL(t)
	a, b := startReplica(t, dbURL), startReplica(t, dbURL)
	b.waitTrusted(t)
	ctx := context.Background()
	tn, err := a.tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: "cut-off", DisplayName: "Cut off"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: tn.GetTenant().GetId(), Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	key := res.GetPlaintextKey()
	b.code(t, key)

	// Terminate every LISTEN connection of the database; both replicas reconnect.
	if _, err := b.m.DB.Bun().ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for b.m.KeyCache.Trusted() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if b.m.KeyCache.Trusted() {
		t.Fatal("the replica kept trusting its cache after its listener was cut")
	}
	if _, err := a.keys.RevokeApiKey(ctx, &v1.RevokeApiKeyRequest{Id: res.GetApiKey().GetId()}); err != nil {
		t.Fatal(err)
	}
	if c := b.code(t, key); c != v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_REVOKED {
		t.Fatalf("while its listener was down the replica answered %v from its cache", c)
	}
	b.waitTrusted(t)
	if c := b.code(t, key); c != v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_REVOKED {
		t.Fatalf("after reconnecting: %v", c)
	}
}

// TestEntitlementChecksReachOtherReplicas: the other replica answers
// CheckEntitlement from its cache, and every change of what it answers,
// made through the first, reaches it within 1 s.
func TestEntitlementChecksReachOtherReplicas(t *testing.T) {
	dbURL := testdb.PostgresURL(t)
	a, b := startReplica(t, dbURL), startReplica(t, dbURL)
	b.waitTrusted(t)
	ctx := context.Background()
	tn, err := a.tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: "checked", DisplayName: "Checked"})
	if err != nil {
		t.Fatal(err)
	}
	tenantID := tn.GetTenant().GetId()
	if _, err := a.catalog.CreateProduct(ctx, &v1.CreateProductRequest{Key: "checked", DisplayName: "Checked", DefaultLimits: map[string]int64{"seats": 5}}); err != nil {
		t.Fatal(err)
	}
	check := func() *v1.CheckEntitlementResponse {
		res, err := b.entitlements.CheckEntitlement(ctx, &v1.CheckEntitlementRequest{TenantId: tenantID, Product: "checked"})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	entitled := func(seats int64) func(*v1.CheckEntitlementResponse) bool {
		return func(res *v1.CheckEntitlementResponse) bool {
			return res.GetEntitled() && res.GetLimits()["seats"] == seats
		}
	}
	refused := func(reason v1.EntitlementCheckReason) func(*v1.CheckEntitlementResponse) bool {
		return func(res *v1.CheckEntitlementResponse) bool { return res.GetReason() == reason }
	}
	steps := []struct {
		name    string
		change  func()
		reached func(*v1.CheckEntitlementResponse) bool
	}{
		{"grant", func() {
			must(a.entitlements.GrantEntitlement(ctx, &v1.GrantEntitlementRequest{TenantId: tenantID, Product: "checked"}))
		}, entitled(5)},
		{"override a limit", func() {
			must(a.entitlements.GrantEntitlement(ctx, &v1.GrantEntitlementRequest{TenantId: tenantID, Product: "checked", Limits: map[string]int64{"seats": 7}}))
		}, entitled(7)},
		{"change the product's limits", func() {
			must(a.catalog.UpdateProduct(ctx, &v1.UpdateProductRequest{Key: "checked", DefaultLimits: map[string]int64{"seats": 6, "projects": 2}}))
		}, func(res *v1.CheckEntitlementResponse) bool {
			return entitled(7)(res) && res.GetLimits()["projects"] == 2
		}},
		{"cancel the tenant", func() {
			must(a.tenants.CancelTenant(ctx, &v1.CancelTenantRequest{Id: tenantID}))
		}, refused(v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_TENANT_FROZEN)},
		{"activate the tenant", func() {
			must(a.tenants.ActivateTenant(ctx, &v1.ActivateTenantRequest{Id: tenantID}))
		}, entitled(7)},
		{"revoke", func() {
			must(a.entitlements.RevokeEntitlement(ctx, &v1.RevokeEntitlementRequest{TenantId: tenantID, Product: "checked"}))
		}, refused(v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_REVOKED)},
	}
	for _, s := range steps {
		before := hits(b)
		for range 3 { // warm b's cache
			check()
		}
		if hits(b) < before+2 {
			t.Fatalf("before %s: the other replica did not answer from its cache", s.name)
		}
		s.change()
		start := time.Now()
		for !s.reached(check()) {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("%s: the other replica still answers %v after 5 s", s.name, check())
			}
			time.Sleep(5 * time.Millisecond)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s reached the other replica after %v, want within 1 s", s.name, d)
		} else {
			t.Logf("%s reached the other replica after %v", s.name, d)
		}
	}
}

// hits counts the lookups r's cache answered.
func hits(r *replica) uint64 {
	ratio, n := r.m.KeyCache.HitRatio()
	return uint64(ratio*float64(n) + 0.5)
}

func lookups(r *replica) uint64 {
	_, n := r.m.KeyCache.HitRatio()
	return n
}
