package transport_test

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// TestUpdatesHandOutNoMoreThanTheCallerHolds: whatever an update's mask
// names, the key that results is handed out again: a key may not rename,
// relabel or re-date a key carrying a scope it lacks, nor leave one that
// outlives it, but it may shorten one's life to its own.
func TestUpdatesHandOutNoMoreThanTheCallerHolds(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		w := newTrustWorld(t, db)
		adminA := w.user(t, "alice", w.tenantA, domain.RoleTenantAdmin)
		now := w.srv.Clock.Now()
		automation, err := w.c.keys.CreateApiKey(w.as(adminA), &v1.CreateApiKeyRequest{
			TenantId: w.tenantA, Name: "automation", Scopes: []string{domain.ScopeKeysManage, "analytics:read"},
			ExpireTime: timestamppb.New(now.Add(time.Hour)),
		})
		if err != nil {
			t.Fatal(err)
		}
		auto := w.as(automation.GetPlaintextKey())
		wider, _ := w.key(t, adminA, w.tenantA, "writer", "analytics:write")
		lasting, _ := w.key(t, adminA, w.tenantA, "reader", "analytics:read")
		soon := timestamppb.New(now.Add(30 * time.Minute))
		refused := []struct {
			name string
			req  *v1.UpdateApiKeyRequest
			why  string
		}{
			{"renaming a key with a scope it lacks", &v1.UpdateApiKeyRequest{Id: wider, Name: "mine now", UpdateMask: mask("name")}, "analytics:write"},
			{"relabelling a key with a scope it lacks", &v1.UpdateApiKeyRequest{Id: wider, Metadata: map[string]string{"owner": "me"}, UpdateMask: mask("metadata")}, "analytics:write"},
			{"re-dating a key with a scope it lacks", &v1.UpdateApiKeyRequest{Id: wider, ExpireTime: soon, UpdateMask: mask("expire_time")}, "analytics:write"},
			{"renaming a key that outlives it", &v1.UpdateApiKeyRequest{Id: lasting, Name: "mine now", UpdateMask: mask("name")}, "outlives"},
			{"making a key never expire", &v1.UpdateApiKeyRequest{Id: lasting, UpdateMask: mask("expire_time")}, "outlives"},
		}
		for _, r := range refused {
			_, err := w.c.keys.UpdateApiKey(auto, r.req)
			if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), r.why) {
				t.Errorf("%s: %v, want PermissionDenied naming %s", r.name, err, r.why)
			}
		}
		res, err := w.c.keys.UpdateApiKey(auto, &v1.UpdateApiKeyRequest{Id: lasting, ExpireTime: soon, Name: "bounded", UpdateMask: mask("expire_time", "name")})
		if err != nil || !res.GetApiKey().GetExpireTime().AsTime().Equal(soon.AsTime()) {
			t.Errorf("shortening a key's life to within its own: %v, %v", res, err)
		}
	})
}

// TestUpdateRefusesKeysPastTheirLife: an expired key stays expired, and a
// present timestamp near year 1, which microsecond storage would read as
// "never", is refused rather than taken for it.
func TestUpdateRefusesKeysPastTheirLife(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startKeys(t, db)
		tn := c.createTenant(t, "lapsed")
		res, err := c.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{
			TenantId: tn.Id, Name: "short", Scopes: []string{"analytics:read"}, ExpireTime: timestamppb.New(c.srv.Clock.Now().Add(time.Minute)),
		})
		if err != nil {
			t.Fatal(err)
		}
		c.srv.Clock.Advance(time.Hour)
		later := timestamppb.New(c.srv.Clock.Now().Add(time.Hour))
		_, err = c.keys.UpdateApiKey(ctx, &v1.UpdateApiKeyRequest{Id: res.GetApiKey().GetId(), ExpireTime: later, UpdateMask: mask("expire_time")})
		if connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Errorf("extending an expired key: %v, want FailedPrecondition", err)
		}
		wantCode(t, "the expired key", c.verify(t, res.GetPlaintextKey(), ""), v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_EXPIRED)

		yearOne := &timestamppb.Timestamp{Seconds: -62135596800, Nanos: 1}
		live := c.create(t, tn.Id, "analytics:read").GetApiKey()
		for name, call := range map[string]func() error{
			"CreateApiKey": func() error {
				_, err := c.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: tn.Id, Name: "k", ExpireTime: yearOne})
				return err
			},
			"UpdateApiKey": func() error {
				_, err := c.keys.UpdateApiKey(ctx, &v1.UpdateApiKeyRequest{Id: live.GetId(), ExpireTime: yearOne, UpdateMask: mask("expire_time")})
				return err
			},
			"GrantEntitlement": func() error {
				_, err := newClients(c.srv.URL).entitlements.GrantEntitlement(ctx, &v1.GrantEntitlementRequest{TenantId: tn.Id, Product: "analytics", ExpireTime: yearOne})
				return err
			},
		} {
			assertViolation(t, name+" with a year-1 expiry", call(), "expire_time")
		}
	})
}

// TestRotationKeepsMetadata: the successor of a rotated key answers
// verification with the metadata products attached to the old one.
func TestRotationKeepsMetadata(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startKeys(t, db)
		tn := c.createTenant(t, "labelled")
		id := c.create(t, tn.Id, "analytics:read").GetApiKey().GetId()
		labels := map[string]string{"owner": "team-7"}
		if _, err := c.keys.UpdateApiKey(ctx, &v1.UpdateApiKeyRequest{Id: id, Metadata: labels, UpdateMask: mask("metadata")}); err != nil {
			t.Fatal(err)
		}
		rotated, err := c.keys.RotateApiKey(ctx, &v1.RotateApiKeyRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.verify(t, rotated.GetPlaintextKey(), "").GetMetadata(); !maps.Equal(got, labels) {
			t.Errorf("the successor verifies with metadata %v, want %v", got, labels)
		}
	})
}

// TestDisablingAKeyDisablesWhatItMade: the keys a disabled key created,
// and theirs, verify as DISABLED with it and come back with it; a key
// disabled on its own, before or after, stays disabled.
func TestDisablingAKeyDisablesWhatItMade(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		w := newTrustWorld(t, db)
		adminA := w.user(t, "alice", w.tenantA, domain.RoleTenantAdmin)
		parentID, parent := w.key(t, adminA, w.tenantA, "automation", domain.ScopeKeysManage, "analytics:read")
		childID, child := w.key(t, parent, w.tenantA, "child", domain.ScopeKeysManage, "analytics:read")
		_, grandchild := w.key(t, child, w.tenantA, "grandchild", "analytics:read")
		pausedID, paused := w.key(t, parent, w.tenantA, "paused before", "analytics:read")
		if _, err := w.c.keys.DisableApiKey(w.as(adminA), &v1.DisableApiKeyRequest{Id: pausedID}); err != nil {
			t.Fatal(err)
		}
		w.srv.Clock.Advance(time.Second)
		verify := func(what, key string, want v1.ApiKeyVerificationCode) {
			t.Helper()
			v, err := w.c.keys.VerifyApiKey(w.as(w.admin), &v1.VerifyApiKeyRequest{Key: key})
			if err != nil || v.GetCode() != want {
				t.Errorf("%s: %v, %v; want %v", what, v.GetCode(), err, want)
			}
		}
		verify("the grandchild before", grandchild, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID) // and cached
		if _, err := w.c.keys.DisableApiKey(w.as(adminA), &v1.DisableApiKeyRequest{Id: parentID}); err != nil {
			t.Fatal(err)
		}
		for what, key := range map[string]string{"the parent": parent, "the child": child, "the grandchild": grandchild, "the key paused before": paused} {
			verify(what+" while the parent is disabled", key, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_DISABLED)
		}
		if _, err := w.c.keys.EnableApiKey(w.as(adminA), &v1.EnableApiKeyRequest{Id: parentID}); err != nil {
			t.Fatal(err)
		}
		for what, key := range map[string]string{"the parent": parent, "the child": child, "the grandchild": grandchild} {
			verify(what+" once the parent is enabled", key, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID)
		}
		verify("the key paused before", paused, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_DISABLED)

		// A key disabled with its creator, then disabled by name (the
		// one that leaked), stays disabled when the creator comes back.
		if _, err := w.c.keys.DisableApiKey(w.as(adminA), &v1.DisableApiKeyRequest{Id: parentID}); err != nil {
			t.Fatal(err)
		}
		if _, err := w.c.keys.DisableApiKey(w.as(adminA), &v1.DisableApiKeyRequest{Id: childID}); err != nil {
			t.Fatal(err)
		}
		if _, err := w.c.keys.EnableApiKey(w.as(adminA), &v1.EnableApiKeyRequest{Id: parentID}); err != nil {
			t.Fatal(err)
		}
		verify("the parent enabled again", parent, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID)
		verify("the child disabled by name meanwhile", child, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_DISABLED)
		verify("the grandchild, disabled with the child", grandchild, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_DISABLED)
	})
}

// TestReplaysOfSeveralProductsInOneBatch: a batch whose first product's
// external ids are new and whose second's were recorded before records the
// new events once and answers the replayed ones with what is stored.
func TestReplaysOfSeveralProductsInOneBatch(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startAudit(t, db)
		tn := c.createTenant(t, "two-products")
		of := func(product, id string) *v1.AuditEvent {
			e := productEvent(tn.Id, "row.imported")
			e.Product, e.ExternalId = product, id
			return e
		}
		first, err := c.audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{Event: of("helpdesk", "h-1")})
		if err != nil {
			t.Fatal(err)
		}
		before := c.count(t)
		res, err := c.audit.RecordAuditEvents(ctx, &v1.RecordAuditEventsRequest{Events: []*v1.AuditEvent{of("analytics", "a-1"), of("helpdesk", "h-1")}})
		if err != nil {
			t.Fatal(err)
		}
		if got := res.GetEvents()[1].GetId(); got != first.GetEvent().GetId() {
			t.Errorf("the replayed event answered as %s, want the stored %s", got, first.GetEvent().GetId())
		}
		if n := c.count(t) - before; n != 1 {
			t.Errorf("the batch stored %d events, want 1 (the replay is not stored again)", n)
		}
	})
}

// TestExpiredEntitlementsKeepTheirEtag: an entitlement read after its end
// (EXPIRED) carries the etag a change checks it against, so the change a
// portal makes to renew it is not refused as stale.
func TestExpiredEntitlementsKeepTheirEtag(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startKeys(t, db)
		all := newClients(c.srv.URL)
		ents := all.entitlements
		if _, err := all.catalog.CreateProduct(ctx, &v1.CreateProductRequest{Key: "analytics", DisplayName: "Analytics"}); err != nil {
			t.Fatal(err)
		}
		tn := c.createTenant(t, "lapsing")
		_, err := ents.GrantEntitlement(ctx, &v1.GrantEntitlementRequest{
			TenantId: tn.Id, Product: "analytics", ExpireTime: timestamppb.New(c.srv.Clock.Now().Add(time.Hour)),
		})
		if err != nil {
			t.Fatal(err)
		}
		c.srv.Clock.Advance(2 * time.Hour)
		got, err := ents.ListEntitlements(ctx, &v1.ListEntitlementsRequest{TenantId: tn.Id})
		if err != nil || len(got.GetEntitlements()) != 1 || got.GetEntitlements()[0].GetStatus() != v1.EntitlementStatus_ENTITLEMENT_STATUS_EXPIRED {
			t.Fatalf("ListEntitlements after its end: %v, %v", got, err)
		}
		_, err = ents.GrantEntitlement(ctx, &v1.GrantEntitlementRequest{
			TenantId: tn.Id, Product: "analytics", Etag: got.GetEntitlements()[0].GetEtag(),
		})
		if err != nil {
			t.Errorf("renewing with the etag of the expired entitlement: %v", err)
		}
	})
}

// TestKeysMadeWhileTheirCreatorIsStoppedDoNotOutliveIt: a key creating a
// key at the moment it is revoked or disabled either is refused or has its
// new key revoked or disabled with it; no new key is left valid under a
// stopped creator, whichever commits first.
func TestKeysMadeWhileTheirCreatorIsStoppedDoNotOutliveIt(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		w := newTrustWorld(t, db)
		adminA := w.user(t, "alice", w.tenantA, domain.RoleTenantAdmin)
		stops := map[string]func(id string) error{
			"revoked": func(id string) error {
				_, err := w.c.keys.RevokeApiKey(w.as(adminA), &v1.RevokeApiKeyRequest{Id: id})
				return err
			},
			"disabled": func(id string) error {
				_, err := w.c.keys.DisableApiKey(w.as(adminA), &v1.DisableApiKeyRequest{Id: id})
				return err
			},
		}
		for name, stop := range stops {
			left := 0
			for i := range 30 {
				creatorID, creator := w.key(t, adminA, w.tenantA, "automation", domain.ScopeKeysManage, "analytics:read")
				var made *v1.CreateApiKeyResponse
				race(i, func() {
					made, _ = w.c.keys.CreateApiKey(w.as(creator), &v1.CreateApiKeyRequest{TenantId: w.tenantA, Name: "child", Scopes: []string{"analytics:read"}})
				}, func() {
					if err := stop(creatorID); err != nil {
						t.Error(err)
					}
				})
				if made == nil {
					continue // refused: the creator was stopped first
				}
				v, err := w.c.keys.VerifyApiKey(w.as(w.admin), &v1.VerifyApiKeyRequest{Key: made.GetPlaintextKey()})
				if err != nil {
					t.Fatal(err)
				}
				if v.GetValid() {
					left++
				}
			}
			if left > 0 {
				t.Errorf("%d of 30 keys made as their creator was %s are still valid", left, name)
			}
		}
	})
}

// TestRotationRacingAnUpdateHandsOutNoMore: a key rotating a key while an
// admin widens that key's scopes gets either the old scopes or Aborted,
// never the plaintext of a key carrying a scope it does not hold.
func TestRotationRacingAnUpdateHandsOutNoMore(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		w := newTrustWorld(t, db)
		adminA := w.user(t, "alice", w.tenantA, domain.RoleTenantAdmin)
		_, automation := w.key(t, adminA, w.tenantA, "automation", domain.ScopeKeysManage, "analytics:read")
		gained := 0
		for i := range 30 {
			target, _ := w.key(t, adminA, w.tenantA, "target", "analytics:read")
			var rotated *v1.RotateApiKeyResponse
			race(i, func() {
				rotated, _ = w.c.keys.RotateApiKey(w.as(automation), &v1.RotateApiKeyRequest{Id: target})
			}, func() {
				_, err := w.c.keys.UpdateApiKey(w.as(adminA), &v1.UpdateApiKeyRequest{Id: target, Scopes: []string{"analytics:read", "analytics:write"}, UpdateMask: mask("scopes")})
				if err != nil && connect.CodeOf(err) != connect.CodeFailedPrecondition { // rotated first: the old key may be expired
					t.Error(err)
				}
			})
			if rotated != nil && slices.Contains(rotated.GetApiKey().GetScopes(), "analytics:write") {
				gained++
			}
		}
		if gained > 0 {
			t.Errorf("a key without analytics:write received a key with it %d times of 30", gained)
		}
	})
}

// race runs first and second at once, second started (i%6)*200 µs later,
// so that over tries the two land on either side of each other.
func race(i int, first, second func()) {
	var wg sync.WaitGroup
	wg.Go(first)
	wg.Go(func() {
		time.Sleep(time.Duration(i%6) * 200 * time.Microsecond)
		second()
	})
	wg.Wait()
}
