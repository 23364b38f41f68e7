package transport_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// TestAKeyCannotMakeItselfTooCostlyToRevoke: a key that created thousands
// of keys, which created more, is revoked with all of them in a handful of
// statements, and a descendant the cache held is refused at once. Revoking
// them one by one, a statement or more each, would outlast the request's
// deadline and roll back, leaving the key and its brood valid; counting
// statements rather than timing the call keeps the test exact on a slow
// machine.
func TestAKeyCannotMakeItselfTooCostlyToRevoke(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		statements := &statementCounter{}
		db.Bun().AddQueryHook(statements) // before the server runs anything
		srv := testserver.Start(t, db)
		c := keyClientsOn(srv)
		tn := c.createTenant(t, "prolific")
		root := c.create(t, tn.Id, "analytics:read").GetApiKey()
		child := c.create(t, tn.Id, "analytics:read")
		wantCode(t, "a child before the revocation", c.verify(t, child.GetPlaintextKey(), ""), v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID)
		if _, err := db.Bun().ExecContext(ctx, "UPDATE api_keys SET created_by_key = ? WHERE id = ?", root.GetId(), child.GetApiKey().GetId()); err != nil {
			t.Fatal(err)
		}
		// 50 keys made by the root, and 99 by each of them: 5,000 in all.
		now := time.Now().UTC()
		err := db.Store().Atomically(ctx, func(r domain.Repositories) error {
			for i := range 50 {
				parent := descendant(tn.Id, root.GetId(), now)
				if err := r.ApiKeys().Create(ctx, parent); err != nil {
					return err
				}
				for range 99 {
					if err := r.ApiKeys().Create(ctx, descendant(tn.Id, parent.ID, now)); err != nil {
						return fmt.Errorf("descendant of %d: %w", i, err)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		statements.counting.Store(true)
		_, err = c.keys.RevokeApiKey(ctx, &v1.RevokeApiKeyRequest{Id: root.GetId()})
		statements.counting.Store(false)
		if err != nil {
			t.Fatalf("RevokeApiKey of a key with 5,001 descendants: %v", err)
		}
		// The revocation's own statements, and whatever the server's
		// background work ran meanwhile: far fewer than one per key.
		if n := statements.n.Load(); n > 100 {
			t.Errorf("revoking 5,001 descendants ran %d statements, want a number that does not grow with them", n)
		}
		wantCode(t, "a child after the revocation", c.verify(t, child.GetPlaintextKey(), ""), v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_REVOKED)
		var live int
		if err := db.Bun().NewRaw("SELECT count(*) FROM api_keys WHERE tenant_id = ? AND revoke_time IS NULL", tn.Id).Scan(ctx, &live); err != nil {
			t.Fatal(err)
		}
		if live != 0 {
			t.Errorf("%d of the tenant's keys are still unrevoked", live)
		}
		events, err := c.audit.ListAuditEvents(ctx, &v1.ListAuditEventsRequest{TenantId: tn.Id, Action: "api_key.revoked"})
		if err != nil {
			t.Fatal(err)
		}
		var counted []string
		for _, e := range events.GetEvents() {
			counted = append(counted, e.GetFields()["descendants_revoked"]+"/"+e.GetFields()["keys_revoked"])
		}
		if fmt.Sprint(counted) != "[/5001 5001/]" {
			t.Errorf("revocation events counted %v, want the root's and one for the tenant's 5,001 keys", counted)
		}
	})
}

// statementCounter counts the statements a database runs while counting.
type statementCounter struct {
	counting atomic.Bool
	n        atomic.Int64
}

func (c *statementCounter) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context {
	if c.counting.Load() {
		c.n.Add(1)
	}
	return ctx
}

func (c *statementCounter) AfterQuery(context.Context, *bun.QueryEvent) {}

// descendant is a key of tenant created by key parent, stored directly.
func descendant(tenant, parent string, now time.Time) *domain.ApiKey {
	hash := make([]byte, 32)
	_, _ = rand.Read(hash)
	return &domain.ApiKey{
		ID: domain.NewID(), TenantID: tenant, Name: "spawn", Prefix: "bp_spawned0", Hash: "sha256|" + hex.EncodeToString(hash),
		Scopes: []string{"analytics:read"}, CreateTime: now, UpdateTime: now, CreatedBy: parent,
	}
}
