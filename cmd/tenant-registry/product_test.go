package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/tcpproxy"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/sdk/go/keyauth"
)

// sdkProduct is a product using the Go SDK, reaching a registry replica
// through a proxy the test controls.
type sdkProduct struct {
	url   string
	auth  *keyauth.Verifier
	proxy *tcpproxy.Proxy
}

func startSDKProduct(t *testing.T, registryURL string) *sdkProduct {
	t.Helper()
	u, err := url.Parse(registryURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := tcpproxy.Start(t, u.Host)
	auth, err := keyauth.New(keyauth.Config{
		RegistryURL: "http://" + proxy.Addr(), Product: "reports",
		VerifyTimeout: 300 * time.Millisecond, TTL: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		_ = auth.Run(ctx)
	}()
	srv := httptest.NewServer(auth.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := keyauth.FromContext(r.Context())
		_ = json.NewEncoder(w).Encode(map[string]string{"tenantId": id.TenantID})
	})))
	t.Cleanup(func() {
		proxy.Freeze(false)
		srv.Close()
		cancel()
		<-ran
	})
	p := &sdkProduct{url: srv.URL, auth: auth, proxy: proxy}
	p.waitLive(t)
	return p
}

func (p *sdkProduct) waitLive(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for p.auth.Stats().State != keyauth.StreamLive {
		if time.Now().After(deadline) {
			t.Fatalf("the product's change stream is not live: %+v", p.auth.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *sdkProduct) status(t *testing.T, key string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, p.url, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// refusedWithin polls the product until it refuses key, for at most 1 s
// after since.
func (p *sdkProduct) refusedWithin(t *testing.T, what, key string, since time.Time) time.Duration {
	t.Helper()
	for {
		status := p.status(t, key)
		if status == http.StatusUnauthorized || status == http.StatusForbidden {
			return time.Since(since)
		}
		if time.Since(since) > time.Second {
			t.Fatalf("%s: the product still answers %d more than 1 s later", what, status)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestProductFeelsChangesWithin1s runs two replicas on one PostgreSQL and
// a product using the SDK against replica B; changes are made through A.
// A revocation, a rotation without grace and a tenant's cancellation are
// refused at the product within 1 s of the call that made them; with the
// product's connection to the registry frozen, the product stops answering
// from its cache within 1 s, and serves again once the connection thaws.
func TestProductFeelsChangesWithin1s(t *testing.T) {
	dbURL := testdb.PostgresURL(t)
	a, b := startReplica(t, dbURL), startReplica(t, dbURL)
	b.waitTrusted(t)
	ctx := context.Background()
	catalog := tenantregistryv1connect.NewCatalogServiceClient(testserver.HTTP1, a.url)
	if _, err := catalog.CreateProduct(ctx, &v1.CreateProductRequest{Key: "reports", DisplayName: "Reports", TrialDays: proto.Int32(14)}); err != nil {
		t.Fatal(err)
	}
	tn, err := a.tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: "initech", DisplayName: "Initech"})
	if err != nil {
		t.Fatal(err)
	}
	tenantID := tn.GetTenant().GetId()
	if _, err := catalog.StartTrial(ctx, &v1.StartTrialRequest{TenantId: tenantID, Product: "reports"}); err != nil {
		t.Fatal(err)
	}
	p := startSDKProduct(t, b.url)
	// cachedKey is a new key, let in by the product and answered from its
	// cache the second time.
	cachedKey := func() (id, key string) {
		t.Helper()
		created, err := a.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: tenantID, Name: "k"})
		if err != nil {
			t.Fatal(err)
		}
		key = created.GetPlaintextKey()
		// The first answers may miss the cache: the key's creation, heard
		// meanwhile, keeps an answer asked for before it out.
		for deadline := time.Now().Add(5 * time.Second); ; {
			hits := p.auth.Stats().Hits
			if p.status(t, key) == http.StatusOK && p.auth.Stats().Hits > hits {
				return created.GetApiKey().GetId(), key
			}
			if time.Now().After(deadline) {
				t.Fatal("the product does not answer a new key from its cache: the test would prove nothing")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	id, key := cachedKey()
	start := time.Now()
	if _, err := a.keys.RevokeApiKey(ctx, &v1.RevokeApiKeyRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	t.Logf("revocation through A refused at the product after %v", p.refusedWithin(t, "revoked", key, start))

	id, key = cachedKey()
	start = time.Now()
	if _, err := a.keys.RotateApiKey(ctx, &v1.RotateApiKeyRequest{Id: id, GracePeriod: durationpb.New(0)}); err != nil {
		t.Fatal(err)
	}
	t.Logf("rotation without grace refused at the product after %v", p.refusedWithin(t, "rotated", key, start))

	_, key = cachedKey()
	start = time.Now()
	if _, err := a.tenants.CancelTenant(ctx, &v1.CancelTenantRequest{Id: tenantID}); err != nil {
		t.Fatal(err)
	}
	t.Logf("tenant cancellation refused at the product after %v", p.refusedWithin(t, "tenant cancelled", key, start))
	if _, err := a.tenants.ActivateTenant(ctx, &v1.ActivateTenantRequest{Id: tenantID}); err != nil {
		t.Fatal(err)
	}

	// Frozen: the product keeps answering from its cache for at most 1 s,
	// then refuses (503: it cannot ask the registry), never lets in.
	_, key = cachedKey()
	frozen := time.Now()
	p.proxy.Freeze(true)
	var untrustedAfter time.Duration
	for sent := time.Now(); sent.Before(frozen.Add(2 * time.Second)); sent = time.Now() {
		if untrustedAfter == 0 && !p.auth.Trusted() {
			untrustedAfter = time.Since(frozen)
		}
		status := p.status(t, key)
		if sent.After(frozen.Add(time.Second)) && status != http.StatusServiceUnavailable {
			t.Fatalf("%v after its connection to the registry froze, the product answered %d, want 503", sent.Sub(frozen), status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if untrustedAfter == 0 || untrustedAfter > time.Second {
		t.Errorf("the product stopped trusting its cache %v after the freeze, want within 1 s", untrustedAfter)
	}
	t.Logf("the product stopped answering from its cache %v after the freeze", untrustedAfter)
	p.proxy.Freeze(false)
	p.waitLive(t)
	if status := p.status(t, key); status != http.StatusOK {
		t.Errorf("after the thaw the product answers %d, want 200", status)
	}
}
