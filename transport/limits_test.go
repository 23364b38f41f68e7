package transport_test

import (
	"context"
	"maps"
	"testing"

	"google.golang.org/protobuf/types/known/fieldmaskpb"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
)

func limitsOf(t *testing.T, name string, got, want map[string]int64) {
	t.Helper()
	if !maps.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		t.Errorf("%s: limits %v, want %v", name, got, want)
	}
}

// TestEntitlementLimits: a product's default limits, its trial limits and
// a grant's overrides make the limits in force, which CheckEntitlement,
// ListEntitlements and VerifyApiKey all tell, and which follow a change of
// the product or of the grant at once, through the key cache too.
func TestEntitlementLimits(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		h := startCatalog(t, db)
		keys := tenantregistryv1connect.NewApiKeyServiceClient(testserver.HTTP1, h.srv.URL)
		days := int32(14)
		if _, err := h.catalog.CreateProduct(ctx, &v1.CreateProductRequest{
			Key: "boards", DisplayName: "Boards", TrialDays: &days,
			DefaultLimits: map[string]int64{"seats": 5, "projects": 3}, TrialLimits: map[string]int64{"seats": 2},
		}); err != nil {
			t.Fatal(err)
		}
		trial := h.newTenant(t, "trying").GetId()
		paying := h.newTenant(t, "paying").GetId()
		if _, err := h.startTrial(trial, "boards"); err != nil {
			t.Fatal(err)
		}
		limitsOf(t, "a trial", h.check(t, trial, "boards").GetLimits(), map[string]int64{"seats": 2})

		grant := func(limits map[string]int64) *v1.Entitlement {
			t.Helper()
			res, err := h.ents.GrantEntitlement(ctx, &v1.GrantEntitlementRequest{TenantId: paying, Product: "boards", Limits: limits})
			if err != nil {
				t.Fatal(err)
			}
			return res.GetEntitlement()
		}
		e := grant(nil)
		limitsOf(t, "a grant without overrides", e.GetLimits(), map[string]int64{"seats": 5, "projects": 3})
		e = grant(map[string]int64{"seats": 50, "runs": 1000})
		limitsOf(t, "overrides", e.GetLimitOverrides(), map[string]int64{"seats": 50, "runs": 1000})
		limitsOf(t, "a grant with overrides", e.GetLimits(), map[string]int64{"seats": 50, "projects": 3, "runs": 1000})
		limitsOf(t, "CheckEntitlement", h.check(t, paying, "boards").GetLimits(), map[string]int64{"seats": 50, "projects": 3, "runs": 1000})
		list, err := h.ents.ListEntitlements(ctx, &v1.ListEntitlementsRequest{TenantId: paying})
		if err != nil || len(list.GetEntitlements()) != 1 {
			t.Fatalf("ListEntitlements: %v, %v", list, err)
		}
		limitsOf(t, "ListEntitlements", list.GetEntitlements()[0].GetLimits(), map[string]int64{"seats": 50, "projects": 3, "runs": 1000})

		// The grant's change is one audit event saying what was and what is.
		events := h.events(t, paying, "entitlement.granted")
		if len(events) != 2 || events[0].GetFields()["limits"] != "runs=1000,seats=50" || events[0].GetFields()["limits_before"] != "" {
			t.Errorf("grant events: %v", events)
		}
		e = grant(map[string]int64{"seats": 50, "runs": 1000}) // the same again: a retry
		if n := len(h.events(t, paying, "entitlement.granted")); n != 2 {
			t.Errorf("a repeated grant wrote an event: %d events", n)
		}
		grant(map[string]int64{"seats": 60})
		events = h.events(t, paying, "entitlement.granted")
		if len(events) != 3 || events[0].GetFields()["limits_before"] != "runs=1000,seats=50" || events[0].GetFields()["limits"] != "seats=60" {
			t.Errorf("a change of limits: %v", events[0])
		}

		// Verification tells the entitlements with their limits, and feels
		// a change of the product's defaults at once, cached or not.
		created, err := keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: paying, Name: "ci"})
		if err != nil {
			t.Fatal(err)
		}
		verify := func() *v1.Entitlement {
			t.Helper()
			res, err := keys.VerifyApiKey(ctx, &v1.VerifyApiKeyRequest{Key: created.GetPlaintextKey(), Product: "boards"})
			if err != nil || !res.GetValid() || len(res.GetEntitlements()) != 1 || res.GetEntitlements()[0].GetProduct() != "boards" {
				t.Fatalf("VerifyApiKey: %v, %v", res, err)
			}
			return res.GetEntitlements()[0]
		}
		limitsOf(t, "VerifyApiKey", verify().GetLimits(), map[string]int64{"seats": 60, "projects": 3})
		if _, err := h.catalog.UpdateProduct(ctx, &v1.UpdateProductRequest{
			Key: "boards", DefaultLimits: map[string]int64{"projects": 10}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"default_limits"}},
		}); err != nil {
			t.Fatal(err)
		}
		limitsOf(t, "VerifyApiKey after the product's defaults changed", verify().GetLimits(), map[string]int64{"seats": 60, "projects": 10})
		limitsOf(t, "the trial keeps its trial limits", h.check(t, trial, "boards").GetLimits(), map[string]int64{"seats": 2})

		// Not entitled: no limits.
		if _, err := h.ents.RevokeEntitlement(ctx, &v1.RevokeEntitlementRequest{TenantId: paying, Product: "boards"}); err != nil {
			t.Fatal(err)
		}
		limitsOf(t, "a revoked entitlement", h.check(t, paying, "boards").GetLimits(), nil)

		_, negative := h.ents.GrantEntitlement(ctx, &v1.GrantEntitlementRequest{TenantId: paying, Product: "boards", Limits: map[string]int64{"seats": -1}})
		many := map[string]int64{}
		for i := range 33 {
			many[string(rune('a'+i%26))+string(rune('a'+i/26))] = 1
		}
		_, tooMany := h.catalog.CreateProduct(ctx, &v1.CreateProductRequest{Key: "too-many", DisplayName: "x", DefaultLimits: many})
		_, unknownPath := h.catalog.UpdateProduct(ctx, &v1.UpdateProductRequest{Key: "boards", UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"colour"}}})
		bad := []struct {
			name  string
			err   error
			field string
		}{
			{"a negative limit", negative, `limits["seats"]`},
			{"33 limit keys", tooMany, "default_limits"},
			{"an unknown mask path", unknownPath, "update_mask"},
		}
		for _, b := range bad {
			assertViolation(t, b.name, b.err, b.field)
		}
	})
}
