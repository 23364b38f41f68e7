package transport_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// TestConcurrentRevokeAndVerify revokes keys while they are being verified
// from many goroutines over every protocol, with the key cached: once
// RevokeApiKey has answered, no verification that starts afterwards may
// answer VALID. Concurrent revocations of one key all succeed and leave one
// audit event.
func TestConcurrentRevokeAndVerify(t *testing.T) {
	const (
		rounds    = 10
		verifiers = 8
		revokers  = 3
	)
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		srv := testserver.Start(t, db)
		tenants := tenantregistryv1connect.NewTenantServiceClient(testserver.HTTP1, srv.URL)
		audit := tenantregistryv1connect.NewAuditServiceClient(testserver.HTTP1, srv.URL)
		tn, err := tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: "revoke-race", DisplayName: "Revoke race"})
		if err != nil {
			t.Fatal(err)
		}
		tenantID := tn.GetTenant().GetId()
		clients := make([]tenantregistryv1connect.ApiKeyServiceClient, len(testserver.Protocols))
		for i, p := range testserver.Protocols {
			clients[i] = tenantregistryv1connect.NewApiKeyServiceClient(p.HTTP, srv.URL, p.Options...)
		}
		for round := range rounds {
			created, err := clients[0].CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: tenantID, Name: fmt.Sprint("round ", round)})
			if err != nil {
				t.Fatal(err)
			}
			key, id := created.GetPlaintextKey(), created.GetApiKey().GetId()
			res, err := clients[0].VerifyApiKey(ctx, &v1.VerifyApiKeyRequest{Key: key})
			if err != nil || !res.GetValid() {
				t.Fatalf("fresh key: %v, %v", res, err) // and now it is cached
			}

			var revoked atomic.Bool // set once a RevokeApiKey has answered
			var calls, stale, afterRevoke atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for v := range verifiers {
				c := clients[v%len(clients)]
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						startedAfter := revoked.Load()
						res, err := c.VerifyApiKey(ctx, &v1.VerifyApiKeyRequest{Key: key})
						if err != nil {
							t.Errorf("VerifyApiKey: %v", err)
							return
						}
						calls.Add(1)
						if startedAfter {
							afterRevoke.Add(1)
							if res.GetValid() {
								stale.Add(1)
							}
						}
					}
				})
			}
			// Let the verifiers get going, then revoke from several goroutines.
			for calls.Load() < 2*verifiers && !t.Failed() {
				time.Sleep(time.Millisecond)
			}
			var revokes sync.WaitGroup
			for r := range revokers {
				c := clients[(round+r)%len(clients)]
				revokes.Go(func() {
					res, err := c.RevokeApiKey(ctx, &v1.RevokeApiKeyRequest{Id: id})
					if err != nil || res.GetApiKey().GetRevokeTime() == nil {
						t.Errorf("RevokeApiKey: %v, %v", res, err)
					}
					revoked.Store(true)
				})
			}
			revokes.Wait()
			// Keep verifying until every verifier has had a few goes after
			// the revocation.
			for afterRevoke.Load() < 5*verifiers && !t.Failed() {
				time.Sleep(time.Millisecond)
			}
			close(stop)
			wg.Wait()
			if n := stale.Load(); n > 0 {
				t.Errorf("round %d: %d of %d verifications started after RevokeApiKey answered said VALID", round, n, afterRevoke.Load())
			}
			events, err := audit.ListAuditEvents(ctx, &v1.ListAuditEventsRequest{TenantId: tenantID, Action: "api_key.revoked", TargetId: id})
			if err != nil || len(events.GetEvents()) != 1 {
				t.Errorf("round %d: %d api_key.revoked events after %d concurrent revocations, want 1 (%v)", round, len(events.GetEvents()), revokers, err)
			}
		}
		chain, err := audit.VerifyAuditChain(ctx, &v1.VerifyAuditChainRequest{TenantId: tenantID})
		if err != nil || !chain.GetOk() {
			t.Errorf("VerifyAuditChain: %v, %v", chain, err)
		}
	})
}
