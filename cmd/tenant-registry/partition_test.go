package main

import (
	"context"
	"net/url"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/tcpproxy"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
)

// partitionedReplica is replica B of two on one PostgreSQL: it reaches the
// database through a proxy the test controls, with a small pool.
func partitionedReplica(t *testing.T, dbURL string) (*replica, *tcpproxy.Proxy) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := tcpproxy.Start(t, u.Host)
	env := devEnv(proxy.URL(t, dbURL))
	env["DB_MAX_CONNS"] = "4"
	srv := serve(t, env)
	// Cleanups run last first: thaw before the server stops, or its
	// shutdown would wait on frozen connections.
	t.Cleanup(func() { proxy.Freeze(false) })
	return &replica{
		m: srv.m, url: srv.baseURL,
		tenants: tenantregistryv1connect.NewTenantServiceClient(testserver.HTTP1, srv.baseURL),
		keys:    tenantregistryv1connect.NewApiKeyServiceClient(testserver.HTTP1, srv.baseURL),
	}, proxy
}

// saturate fills r's pool with slow queries, and returns once every
// connection is taken; they end after d.
func saturate(t *testing.T, r *replica, d time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { _, _ = r.m.DB.Bun().ExecContext(context.Background(), "SELECT pg_sleep(?)", d.Seconds()) })
	}
	t.Cleanup(wg.Wait)
	deadline := time.Now().Add(5 * time.Second)
	for r.m.DB.Bun().Stats().InUse < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("the pool did not fill: %+v", r.m.DB.Bun().Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// verifyWithin asks r about key with a deadline of its own: an answer, or
// the error of a replica that cannot answer.
func verifyWithin(r *replica, key string, d time.Duration) (*v1.VerifyApiKeyResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return r.keys.VerifyApiKey(ctx, &v1.VerifyApiKeyRequest{Key: key})
}

// TestReplicaCutOffFailsClosed cuts replica B off from PostgreSQL the
// ways that send no error: its connections frozen (held open, no byte
// moving), its pool saturated by slow queries, or both. A key B has
// cached is revoked through replica A: from 1 s after the revocation, B
// never again answers valid: true (failing to answer is fine: it fails
// closed), and once B reaches the database again it answers REVOKED.
func TestReplicaCutOffFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name             string
		freeze, saturate bool
	}{
		{"frozen", true, false},
		{"pool saturated", false, true},
		{"frozen with pool saturated", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dbURL := testdb.PostgresURL(t)
			a := startReplica(t, dbURL)
			b, proxy := partitionedReplica(t, dbURL)
			b.waitTrusted(t)
			ctx := context.Background()
			tn, err := a.tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: "partitioned", DisplayName: "Partitioned"})
			if err != nil {
				t.Fatal(err)
			}
			created, err := a.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: tn.GetTenant().GetId(), Name: "k"})
			if err != nil {
				t.Fatal(err)
			}
			key := created.GetPlaintextKey()
			before := lookups(b)
			for range 3 {
				if res, err := verifyWithin(b, key, 5*time.Second); err != nil || !res.GetValid() {
					t.Fatalf("fresh key on B: %v, %v", res, err)
				}
			}
			if lookups(b) == before || !b.m.KeyCache.Trusted() {
				t.Fatal("B did not answer from its cache: the test would prove nothing")
			}

			if tc.saturate {
				saturate(t, b, 4*time.Second)
			}
			if tc.freeze {
				proxy.Freeze(true)
			}
			revokedAt := time.Now()
			if _, err := a.keys.RevokeApiKey(ctx, &v1.RevokeApiKeyRequest{Id: created.GetApiKey().GetId()}); err != nil {
				t.Fatal(err)
			}
			var validLate, failed, answered int
			for sent := time.Now(); sent.Before(revokedAt.Add(3 * time.Second)); sent = time.Now() {
				res, err := verifyWithin(b, key, 300*time.Millisecond)
				switch {
				case err != nil:
					failed++
					if code := connect.CodeOf(err); code != connect.CodeDeadlineExceeded && code != connect.CodeUnavailable {
						t.Errorf("B failed with %v, want DeadlineExceeded or Unavailable: %v", code, err)
					}
				case res.GetValid() && sent.After(revokedAt.Add(time.Second)):
					validLate++
				default:
					answered++
				}
				if tc.freeze && sent.After(revokedAt.Add(time.Second)) && b.m.KeyCache.Trusted() {
					t.Fatalf("B trusts its cache %v after being cut off", sent.Sub(revokedAt))
				}
				time.Sleep(20 * time.Millisecond)
			}
			if validLate > 0 {
				t.Errorf("B answered valid: true %d times more than 1 s after the revocation", validLate)
			}
			t.Logf("3 s after the revocation: %d answers, %d failed to answer (fail closed)", answered, failed)

			proxy.Freeze(false)
			deadline := time.Now().Add(15 * time.Second)
			for {
				res, err := verifyWithin(b, key, time.Second)
				if err == nil && res.GetCode() == v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_REVOKED {
					break
				}
				if err == nil && res.GetValid() {
					t.Fatal("B answered valid: true after it could reach the database again")
				}
				if time.Now().After(deadline) {
					t.Fatalf("B did not answer REVOKED within 15 s of reaching the database again: %v, %v", res, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			b.waitTrusted(t)
			if res, err := verifyWithin(b, key, time.Second); err != nil || res.GetCode() != v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_REVOKED {
				t.Fatalf("B with its cache trusted again: %v, %v", res, err)
			}
		})
	}
}
