package transport_test

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/persistence"
)

func mask(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }

// TestDisableAndEnableApiKey: a disabled key verifies as DISABLED and is
// listed so, cached or not; enabling brings it back; both are audited
// once, repeats are no-ops, and a revoked key stays revoked.
func TestDisableAndEnableApiKey(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startKeys(t, db)
		tn := c.createTenant(t, "pausing")
		created := c.create(t, tn.Id, "analytics:read")
		key, id := created.GetPlaintextKey(), created.GetApiKey().GetId()
		wantCode(t, "a new key", c.verify(t, key, ""), v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID) // and cached
		for range 2 {
			res, err := c.keys.DisableApiKey(ctx, &v1.DisableApiKeyRequest{Id: id})
			if err != nil || res.GetApiKey().GetStatus() != v1.ApiKeyStatus_API_KEY_STATUS_DISABLED || res.GetApiKey().GetDisableTime() == nil {
				t.Fatalf("DisableApiKey: %v, %v", res, err)
			}
		}
		wantCode(t, "a disabled key", c.verify(t, key, ""), v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_DISABLED)
		got, err := c.keys.GetApiKey(ctx, &v1.GetApiKeyRequest{Id: id})
		if err != nil || got.GetApiKey().GetStatus() != v1.ApiKeyStatus_API_KEY_STATUS_DISABLED {
			t.Errorf("GetApiKey of a disabled key: %v, %v", got, err)
		}
		for range 2 {
			res, err := c.keys.EnableApiKey(ctx, &v1.EnableApiKeyRequest{Id: id})
			if err != nil || res.GetApiKey().GetStatus() != v1.ApiKeyStatus_API_KEY_STATUS_ACTIVE || res.GetApiKey().GetDisableTime() != nil {
				t.Fatalf("EnableApiKey: %v, %v", res, err)
			}
		}
		wantCode(t, "an enabled key", c.verify(t, key, ""), v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID)
		events, err := c.audit.ListAuditEvents(ctx, &v1.ListAuditEventsRequest{TenantId: tn.Id, Action: "api_key.*", TargetId: id})
		if err != nil {
			t.Fatal(err)
		}
		var actions []string
		for _, e := range events.GetEvents() {
			actions = append(actions, e.GetAction())
		}
		if !slices.Equal(actions, []string{"api_key.enabled", "api_key.disabled", "api_key.created"}) {
			t.Errorf("events %v, want one each for the change, none for the repeats", actions)
		}
		if _, err := c.keys.RevokeApiKey(ctx, &v1.RevokeApiKeyRequest{Id: id}); err != nil {
			t.Fatal(err)
		}
		for name, call := range map[string]func() error{
			"disable": func() error { _, err := c.keys.DisableApiKey(ctx, &v1.DisableApiKeyRequest{Id: id}); return err },
			"enable":  func() error { _, err := c.keys.EnableApiKey(ctx, &v1.EnableApiKeyRequest{Id: id}); return err },
		} {
			if err := call(); connect.CodeOf(err) != connect.CodeFailedPrecondition {
				t.Errorf("%s a revoked key: %v, want FailedPrecondition", name, err)
			}
		}
	})
}

// TestUpdateApiKey: the fields the mask names change and no others; the
// new scopes, expiry and metadata are what verification answers at once;
// bad masks and bad values change nothing.
func TestUpdateApiKey(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startKeys(t, db)
		tn := c.createTenant(t, "editing")
		created := c.create(t, tn.Id, "analytics:read")
		key, id := created.GetPlaintextKey(), created.GetApiKey().GetId()
		wantCode(t, "before", c.verify(t, key, "", "analytics:write"), v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_INSUFFICIENT_SCOPE)

		res, err := c.keys.UpdateApiKey(ctx, &v1.UpdateApiKeyRequest{
			Id: id, Name: "ignored, not in the mask", Scopes: []string{"analytics:read", "analytics:write"},
			Metadata: map[string]string{"owner": "team-7", "plan": "pro"}, UpdateMask: mask("scopes", "metadata"),
		})
		if err != nil {
			t.Fatal(err)
		}
		k := res.GetApiKey()
		if k.GetName() != "ci" || !slices.Equal(k.GetScopes(), []string{"analytics:read", "analytics:write"}) || k.GetMetadata()["owner"] != "team-7" {
			t.Errorf("after the update: %v", k)
		}
		v := c.verify(t, key, "", "analytics:write")
		wantCode(t, "after the scopes changed", v, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID)
		if !maps.Equal(v.GetMetadata(), map[string]string{"owner": "team-7", "plan": "pro"}) {
			t.Errorf("VerifyApiKey's metadata: %v", v.GetMetadata())
		}
		soon := c.srv.Clock.Now().Add(time.Hour)
		if _, err := c.keys.UpdateApiKey(ctx, &v1.UpdateApiKeyRequest{Id: id, ExpireTime: timestamppb.New(soon), Name: "renamed", UpdateMask: mask("expire_time", "name")}); err != nil {
			t.Fatal(err)
		}
		c.srv.Clock.Advance(2 * time.Hour)
		wantCode(t, "past its new expiry", c.verify(t, key, ""), v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_EXPIRED)

		before, _ := c.keys.GetApiKey(ctx, &v1.GetApiKeyRequest{Id: id})
		bad := []struct {
			name  string
			req   *v1.UpdateApiKeyRequest
			code  connect.Code
			field string
		}{
			{"no mask", &v1.UpdateApiKeyRequest{Id: id, Name: "x"}, connect.CodeInvalidArgument, "update_mask"},
			{"an unknown path", &v1.UpdateApiKeyRequest{Id: id, UpdateMask: mask("name", "tenant_id")}, connect.CodeInvalidArgument, "update_mask"},
			{"a blank name", &v1.UpdateApiKeyRequest{Id: id, UpdateMask: mask("name")}, connect.CodeInvalidArgument, "name"},
			{"an expiry in the past", &v1.UpdateApiKeyRequest{Id: id, ExpireTime: timestamppb.New(c.srv.Clock.Now().Add(-time.Minute)), UpdateMask: mask("expire_time")}, connect.CodeInvalidArgument, "expire_time"},
			{"a platform scope", &v1.UpdateApiKeyRequest{Id: id, Scopes: []string{"registry:admin"}, UpdateMask: mask("scopes")}, connect.CodePermissionDenied, ""},
			{"33 metadata keys", &v1.UpdateApiKeyRequest{Id: id, Metadata: manyStrings(33), UpdateMask: mask("metadata")}, connect.CodeInvalidArgument, "metadata"},
			{"a stale etag", &v1.UpdateApiKeyRequest{Id: id, Name: "x", UpdateMask: mask("name"), Etag: "0000000000000000"}, connect.CodeAborted, ""},
		}
		for _, b := range bad {
			_, err := c.keys.UpdateApiKey(ctx, b.req)
			if connect.CodeOf(err) != b.code {
				t.Errorf("%s: %v, want %v", b.name, err, b.code)
			}
			if b.field != "" {
				assertViolation(t, b.name, err, b.field)
			}
		}
		after, _ := c.keys.GetApiKey(ctx, &v1.GetApiKeyRequest{Id: id})
		if after.GetApiKey().GetEtag() != before.GetApiKey().GetEtag() {
			t.Errorf("refused updates changed the key: %v → %v", before, after)
		}
	})
}

func manyStrings(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[string(rune('a'+i%26))+string(rune('a'+i/26))] = "v"
	}
	return m
}

// TestEtagsPreventLostUpdates: two portals read a tenant, each edits it and
// writes it back with the etag it read, at once: exactly one wins, the
// other is told (Aborted) and changes nothing. Without an etag, the last
// write wins, as before. The same holds for products, keys and
// entitlements.
func TestEtagsPreventLostUpdates(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		h := startCatalog(t, db)
		tn := h.newTenant(t, "contested")
		for round := range 5 {
			read, err := h.tenants.GetTenant(ctx, &v1.GetTenantRequest{Id: tn.GetId()})
			if err != nil {
				t.Fatal(err)
			}
			etag := read.GetTenant().GetEtag()
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for portal := range 2 {
				wg.Go(func() {
					name := []string{"Portal One", "Portal Two"}[portal]
					_, errs[portal] = h.tenants.UpdateTenant(ctx, &v1.UpdateTenantRequest{
						Id: tn.GetId(), DisplayName: &name, Metadata: map[string]string{"round": string(rune('0' + round))},
						UpdateMask: mask("display_name", "metadata"), Etag: etag,
					})
				})
			}
			wg.Wait()
			won := 0
			for _, err := range errs {
				switch {
				case err == nil:
					won++
				case connect.CodeOf(err) != connect.CodeAborted:
					t.Errorf("round %d: %v", round, err)
				}
			}
			if won != 1 {
				t.Errorf("round %d: %d writers won with the same etag (%v), want exactly one", round, won, errs)
			}
		}
		// A field the mask does not name is not touched; metadata named is replaced whole.
		name := "ignored"
		res, err := h.tenants.UpdateTenant(ctx, &v1.UpdateTenantRequest{Id: tn.GetId(), DisplayName: &name, Metadata: map[string]string{"only": "this"}, UpdateMask: mask("metadata")})
		if err != nil || res.GetTenant().GetDisplayName() == "ignored" || !maps.Equal(res.GetTenant().GetMetadata(), map[string]string{"only": "this"}) {
			t.Errorf("a metadata-only mask: %v, %v", res, err)
		}
		// No etag: the last write wins, as before.
		name = "Last"
		if _, err := h.tenants.UpdateTenant(ctx, &v1.UpdateTenantRequest{Id: tn.GetId(), DisplayName: &name}); err != nil {
			t.Errorf("an update without an etag: %v", err)
		}

		h.newProduct(t, "contested", 0)
		product, _ := h.catalog.ListProducts(ctx, &v1.ListProductsRequest{})
		stale := product.GetProducts()[0].GetEtag()
		d := "new description"
		if _, err := h.catalog.UpdateProduct(ctx, &v1.UpdateProductRequest{Key: "contested", Description: &d, Etag: stale}); err != nil {
			t.Fatal(err)
		}
		d = "lost update"
		if _, err := h.catalog.UpdateProduct(ctx, &v1.UpdateProductRequest{Key: "contested", Description: &d, Etag: stale}); connect.CodeOf(err) != connect.CodeAborted {
			t.Errorf("a product update with a stale etag: %v, want Aborted", err)
		}
		g, err := h.ents.GrantEntitlement(ctx, &v1.GrantEntitlementRequest{TenantId: tn.GetId(), Product: "contested"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.ents.GrantEntitlement(ctx, &v1.GrantEntitlementRequest{TenantId: tn.GetId(), Product: "contested", Limits: map[string]int64{"seats": 9}, Etag: g.GetEntitlement().GetEtag()}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.ents.RevokeEntitlement(ctx, &v1.RevokeEntitlementRequest{TenantId: tn.GetId(), Product: "contested", Etag: g.GetEntitlement().GetEtag()}); connect.CodeOf(err) != connect.CodeAborted {
			t.Errorf("a revoke with a stale etag: %v, want Aborted", err)
		}
		if c := h.check(t, tn.GetId(), "contested"); !c.GetEntitled() || c.GetLimits()["seats"] != 9 {
			t.Errorf("after the refused revoke: %v", c)
		}
	})
}
