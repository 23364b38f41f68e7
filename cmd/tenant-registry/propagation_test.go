package main

import (
	"context"
	"testing"
	"time"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
)

// replica is one server process's worth of wiring on a shared database.
type replica struct {
	m       *Main
	url     string
	tenants tenantregistryv1connect.TenantServiceClient
	keys    tenantregistryv1connect.ApiKeyServiceClient
}

func startReplica(t *testing.T, dbURL string) *replica {
	t.Helper()
	srv := serve(t, map[string]string{"DATABASE_URL": dbURL})
	return &replica{
		m: srv.m, url: srv.baseURL,
		tenants: tenantregistryv1connect.NewTenantServiceClient(testserver.HTTP1, srv.baseURL),
		keys:    tenantregistryv1connect.NewApiKeyServiceClient(testserver.HTTP1, srv.baseURL),
	}
}

func (r *replica) code(t *testing.T, key string) v1.ApiKeyVerificationCode {
	t.Helper()
	res, err := r.keys.VerifyApiKey(context.Background(), &v1.VerifyApiKeyRequest{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return res.GetCode()
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
	start := time.Now()
	for {
		if b.code(t, key) == want {
			return time.Since(start)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("replica still answers the old result after 5 s, want %v", want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestChangesReachOtherReplicas runs two server processes' wiring on one
// PostgreSQL: a revocation, a rotation and a tenant's freezing made through
// one must be refused by the other, which had the key cached, within 1 s.
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
	scenarios := []struct {
		name   string
		change func(keyID string)
		want   v1.ApiKeyVerificationCode
	}{
		{"revoke", func(id string) {
			if _, err := a.keys.RevokeApiKey(ctx, &v1.RevokeApiKeyRequest{Id: id}); err != nil {
				t.Fatal(err)
			}
		}, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_REVOKED},
		{"rotate", func(id string) {
			if _, err := a.keys.RotateApiKey(ctx, &v1.RotateApiKeyRequest{Id: id}); err != nil {
				t.Fatal(err)
			}
		}, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_EXPIRED},
		{"cancel tenant", func(string) {
			if _, err := a.tenants.CancelTenant(ctx, &v1.CancelTenantRequest{Id: tenantID}); err != nil {
				t.Fatal(err)
			}
		}, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_TENANT_FROZEN},
	}
	for _, s := range scenarios {
		id, key := newKey()
		s.change(id)
		if d := propagation(t, b, key, s.want); d > time.Second {
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

func lookups(r *replica) uint64 {
	_, n := r.m.KeyCache.HitRatio()
	return n
}
