package transport_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
)

func (h *catalogHarness) grant(tenantID, product string, expire time.Time) (*v1.Entitlement, error) {
	req := &v1.GrantEntitlementRequest{TenantId: tenantID, Product: product}
	if !expire.IsZero() {
		req.ExpireTime = timestamppb.New(expire)
	}
	res, err := h.ents.GrantEntitlement(context.Background(), req)
	return res.GetEntitlement(), err
}

func (h *catalogHarness) revoke(tenantID, product string) (*v1.Entitlement, error) {
	res, err := h.ents.RevokeEntitlement(context.Background(), &v1.RevokeEntitlementRequest{TenantId: tenantID, Product: product})
	return res.GetEntitlement(), err
}

func (h *catalogHarness) check(t *testing.T, tenantID, product string) *v1.CheckEntitlementResponse {
	t.Helper()
	res, err := h.ents.CheckEntitlement(context.Background(), &v1.CheckEntitlementRequest{TenantId: tenantID, Product: product})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// statuses lists a tenant's entitlements as "product:STATUS".
func (h *catalogHarness) statuses(t *testing.T, tenantID string) string {
	t.Helper()
	res, err := h.ents.ListEntitlements(context.Background(), &v1.ListEntitlementsRequest{TenantId: tenantID})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range res.GetEntitlements() {
		out = append(out, e.GetProduct()+":"+strings.TrimPrefix(e.GetStatus().String(), "ENTITLEMENT_STATUS_"))
	}
	return strings.Join(out, " ")
}

func TestGrantAndRevokeEntitlement(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		h := startCatalog(t, db)
		tn := h.newTenant(t, "grantee")
		h.newProduct(t, "helpdesk", 14)
		h.newProduct(t, "crm", 14)
		if _, err := h.startTrial(tn.Id, "helpdesk"); err != nil {
			t.Fatal(err)
		}
		h.srv.Clock.Advance(time.Hour)
		now := h.srv.Clock.Now()

		// Upgrading the trial keeps one row per tenant and product.
		e, err := h.grant(tn.Id, "helpdesk", time.Time{})
		if err != nil || e.GetStatus() != v1.EntitlementStatus_ENTITLEMENT_STATUS_ACTIVE || e.GetSource() != v1.EntitlementSource_ENTITLEMENT_SOURCE_GRANT ||
			e.GetStartTime().AsTime() != now || e.GetExpireTime() != nil {
			t.Fatalf("upgrade: %v %v", e, err)
		}
		if got := h.statuses(t, tn.Id); got != "helpdesk:ACTIVE" {
			t.Fatalf("after upgrade: %s", got)
		}
		// A retry of the same grant changes nothing.
		if again, err := h.grant(tn.Id, "helpdesk", time.Time{}); err != nil || again.GetStartTime().AsTime() != now {
			t.Fatalf("repeated grant: %v %v", again, err)
		}
		expire := now.Add(90 * 24 * time.Hour)
		if e, err := h.grant(tn.Id, "crm", expire.Add(123*time.Nanosecond)); err != nil || e.GetExpireTime().AsTime() != expire {
			t.Fatalf("grant with an end (kept to microseconds): %v %v", e, err)
		}
		r, err := h.revoke(tn.Id, "crm")
		if err != nil || r.GetStatus() != v1.EntitlementStatus_ENTITLEMENT_STATUS_REVOKED || r.GetExpireTime().AsTime() != expire {
			t.Fatalf("revoke: %v %v", r, err)
		}
		if again, err := h.revoke(tn.Id, "crm"); err != nil || again.GetStatus() != v1.EntitlementStatus_ENTITLEMENT_STATUS_REVOKED {
			t.Fatalf("revoking again: %v %v", again, err)
		}
		if got := h.statuses(t, tn.Id); got != "crm:REVOKED helpdesk:ACTIVE" {
			t.Fatalf("after revoke: %s", got)
		}
		// A grant brings a revoked entitlement back.
		if e, err := h.grant(tn.Id, "crm", time.Time{}); err != nil || e.GetStatus() != v1.EntitlementStatus_ENTITLEMENT_STATUS_ACTIVE {
			t.Fatalf("grant after revoke: %v %v", e, err)
		}
		if n, _ := db.Bun().NewSelect().Table("entitlements").Count(context.Background()); n != 2 {
			t.Fatalf("%d entitlement rows, want one per product", n)
		}

		before := h.counts(t)
		unknownTenant := "01a20000-0000-7000-8000-000000000000"
		refusals := []struct {
			name string
			call func() error
			code connect.Code
			text string
		}{
			{"grant to an unknown tenant", func() error { _, err := h.grant(unknownTenant, "crm", time.Time{}); return err }, connect.CodeNotFound, "tenant"},
			{"grant of an unknown product", func() error { _, err := h.grant(tn.Id, "no-such-product", time.Time{}); return err }, connect.CodeNotFound, "no-such-product"},
			{"revoke of an unknown tenant", func() error { _, err := h.revoke(unknownTenant, "crm"); return err }, connect.CodeNotFound, "tenant"},
			{"revoke of nothing", func() error { _, err := h.revoke(tn.Id, "analytics"); return err }, connect.CodeNotFound, "no entitlement for analytics"},
		}
		for _, tc := range refusals {
			expectErr(t, tc.name, tc.call(), tc.code, tc.text)
		}
		if after := h.counts(t); after != before {
			t.Fatalf("refusals wrote: %s, was %s", after, before)
		}
	})
}

func TestEntitlementBadInput(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		h := startCatalog(t, db)
		tn := h.newTenant(t, "bad-entitlements")
		h.newProduct(t, "helpdesk", 14)
		now := h.srv.Clock.Now()
		grant := func(req *v1.GrantEntitlementRequest) func() error {
			return func() error { _, err := h.ents.GrantEntitlement(ctx, req); return err }
		}
		tests := []struct {
			name  string
			call  func() error
			field string
		}{
			{"list: no tenant", func() error { _, err := h.ents.ListEntitlements(ctx, &v1.ListEntitlementsRequest{}); return err }, "tenant_id"},
			{"list: tenant id not a UUID", func() error {
				_, err := h.ents.ListEntitlements(ctx, &v1.ListEntitlementsRequest{TenantId: "x"})
				return err
			}, "tenant_id"},
			{"check: tenant id not a UUID", func() error {
				_, err := h.ents.CheckEntitlement(ctx, &v1.CheckEntitlementRequest{TenantId: "x", Product: "helpdesk"})
				return err
			}, "tenant_id"},
			{"check: no product", func() error {
				_, err := h.ents.CheckEntitlement(ctx, &v1.CheckEntitlementRequest{TenantId: tn.Id})
				return err
			}, "product"},
			{"grant: no tenant", grant(&v1.GrantEntitlementRequest{Product: "helpdesk"}), "tenant_id"},
			{"grant: bad product", grant(&v1.GrantEntitlementRequest{TenantId: tn.Id, Product: "Help Desk"}), "product"},
			{"grant: expire time now", grant(&v1.GrantEntitlementRequest{TenantId: tn.Id, Product: "helpdesk", ExpireTime: timestamppb.New(now)}), "expire_time"},
			{"grant: expire time past", grant(&v1.GrantEntitlementRequest{TenantId: tn.Id, Product: "helpdesk", ExpireTime: timestamppb.New(now.Add(-time.Hour))}), "expire_time"},
			{"grant: expire time invalid", grant(&v1.GrantEntitlementRequest{TenantId: tn.Id, Product: "helpdesk", ExpireTime: &timestamppb.Timestamp{Seconds: 1 << 62}}), "expire_time"},
			{"revoke: no tenant", func() error { _, err := h.revoke("", "helpdesk"); return err }, "tenant_id"},
			{"revoke: no product", func() error { _, err := h.revoke(tn.Id, ""); return err }, "product"},
		}
		before := h.counts(t)
		for _, tc := range tests {
			assertViolation(t, tc.name, tc.call(), tc.field)
		}
		if after := h.counts(t); after != before {
			t.Fatalf("refused requests wrote: %s, was %s", after, before)
		}
	})
}

// TestEntitlementExpiry moves the clock past a trial's and a grant's end:
// both read EXPIRED with no job having run.
func TestEntitlementExpiry(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		h := startCatalog(t, db)
		tn := h.newTenant(t, "expiring")
		h.newProduct(t, "helpdesk", 14)
		h.newProduct(t, "crm", 0)
		if _, err := h.startTrial(tn.Id, "helpdesk"); err != nil {
			t.Fatal(err)
		}
		if _, err := h.grant(tn.Id, "crm", h.srv.Clock.Now().Add(20*24*time.Hour)); err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			advance  time.Duration
			statuses string
			helpdesk v1.EntitlementCheckReason
			crm      v1.EntitlementCheckReason
		}{
			{0, "crm:ACTIVE helpdesk:TRIAL", v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_OK, v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_OK},
			{14*24*time.Hour - time.Microsecond, "crm:ACTIVE helpdesk:TRIAL", v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_OK, v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_OK},
			{time.Microsecond, "crm:ACTIVE helpdesk:EXPIRED", v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_EXPIRED, v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_OK},
			{6 * 24 * time.Hour, "crm:EXPIRED helpdesk:EXPIRED", v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_EXPIRED, v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_EXPIRED},
		}
		for i, s := range steps {
			h.srv.Clock.Advance(s.advance)
			if got := h.statuses(t, tn.Id); got != s.statuses {
				t.Fatalf("step %d: listed %s, want %s", i, got, s.statuses)
			}
			for product, want := range map[string]v1.EntitlementCheckReason{"helpdesk": s.helpdesk, "crm": s.crm} {
				c := h.check(t, tn.Id, product)
				if c.GetReason() != want || c.GetEntitled() != (want == v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_OK) {
					t.Fatalf("step %d: check %s = %v, want %v", i, product, c, want)
				}
			}
		}
	})
}

// TestFrozenTenantEntitlements freezes a tenant: its entitlements are kept
// and listed as stored, but none counts until it is activated again.
func TestFrozenTenantEntitlements(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		h := startCatalog(t, db)
		tn := h.newTenant(t, "freezer")
		h.newProduct(t, "helpdesk", 14)
		h.newProduct(t, "crm", 14)
		if _, err := h.startTrial(tn.Id, "helpdesk"); err != nil {
			t.Fatal(err)
		}
		if _, err := h.grant(tn.Id, "crm", time.Time{}); err != nil {
			t.Fatal(err)
		}
		ok, frozen := v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_OK, v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_TENANT_FROZEN
		expect := func(step string, reason v1.EntitlementCheckReason) {
			t.Helper()
			if got := h.statuses(t, tn.Id); got != "crm:ACTIVE helpdesk:TRIAL" {
				t.Fatalf("%s: listed %s", step, got)
			}
			for _, p := range []string{"crm", "helpdesk"} {
				c := h.check(t, tn.Id, p)
				if c.GetReason() != reason || c.GetEntitled() != (reason == ok) || c.GetEntitlement().GetProduct() != p {
					t.Fatalf("%s: check %s = %v, want %v", step, p, c, reason)
				}
			}
		}
		expect("active", ok)
		if _, err := h.tenants.CancelTenant(ctx, &v1.CancelTenantRequest{Id: tn.Id}); err != nil {
			t.Fatal(err)
		}
		expect("frozen", frozen)
		if c := h.check(t, tn.Id, "no-such-product"); c.GetReason() != v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_UNKNOWN_PRODUCT {
			t.Fatalf("frozen tenant, unknown product: %v", c)
		}
		if _, err := h.tenants.ActivateTenant(ctx, &v1.ActivateTenantRequest{Id: tn.Id}); err != nil {
			t.Fatal(err)
		}
		expect("activated", ok)
	})
}

func TestCheckEntitlementReasons(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		h := startCatalog(t, db)
		tn, frozen := h.newTenant(t, "checked"), h.newTenant(t, "checked-frozen")
		for _, p := range []string{"granted", "revoked", "expiring", "never-had"} {
			h.newProduct(t, p, 14)
		}
		for _, p := range []string{"granted", "revoked"} {
			if _, err := h.grant(tn.Id, p, time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := h.grant(tn.Id, "expiring", h.srv.Clock.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := h.revoke(tn.Id, "revoked"); err != nil {
			t.Fatal(err)
		}
		if _, err := h.tenants.CancelTenant(context.Background(), &v1.CancelTenantRequest{Id: frozen.Id}); err != nil {
			t.Fatal(err)
		}
		h.srv.Clock.Advance(time.Hour)
		tests := []struct {
			tenant, product string
			want            string
			hasEntitlement  bool
		}{
			{tn.Id, "granted", "OK", true},
			{tn.Id, "never-had", "NO_ENTITLEMENT", false},
			{tn.Id, "expiring", "EXPIRED", true},
			{tn.Id, "revoked", "REVOKED", true},
			{frozen.Id, "granted", "TENANT_FROZEN", false},
			{tn.Id, "no-such-product", "UNKNOWN_PRODUCT", false},
		}
		for _, tc := range tests {
			c := h.check(t, tc.tenant, tc.product)
			if got := strings.TrimPrefix(c.GetReason().String(), "ENTITLEMENT_CHECK_REASON_"); got != tc.want ||
				c.GetEntitled() != (tc.want == "OK") || (c.GetEntitlement() != nil) != tc.hasEntitlement {
				t.Errorf("check %s: %v, want %s", tc.product, c, tc.want)
			}
		}
		_, err := h.ents.CheckEntitlement(context.Background(), &v1.CheckEntitlementRequest{TenantId: "01a20000-0000-7000-8000-000000000000", Product: "granted"})
		expectErr(t, "unknown tenant", err, connect.CodeNotFound, "tenant")
	})
}

// TestEntitledProductsAgreesWithCheck holds the one rule to its word: the
// products domain.EntitledProducts lists (what key verification returns)
// are exactly those CheckEntitlement calls entitled, at every moment.
func TestEntitledProductsAgreesWithCheck(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		h := startCatalog(t, db)
		products := []string{"trial-product", "granted", "grant-1h", "revoked", "never-had"}
		for _, p := range products {
			h.newProduct(t, p, 14)
		}
		var tenants []*v1.Tenant
		for _, slug := range []string{"agree-trial", "agree-active", "agree-frozen"} {
			tn := h.newTenant(t, slug)
			tenants = append(tenants, tn)
			if _, err := h.startTrial(tn.Id, "trial-product"); err != nil {
				t.Fatal(err)
			}
			for p, expire := range map[string]time.Time{"granted": {}, "grant-1h": h.srv.Clock.Now().Add(time.Hour), "revoked": {}} {
				if _, err := h.grant(tn.Id, p, expire); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := h.revoke(tn.Id, "revoked"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := h.tenants.ActivateTenant(ctx, &v1.ActivateTenantRequest{Id: tenants[1].Id}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.tenants.CancelTenant(ctx, &v1.CancelTenantRequest{Id: tenants[2].Id}); err != nil {
			t.Fatal(err)
		}
		store := db.Store()
		wantAt := []string{"[grant-1h granted trial-product]", "[granted trial-product]", "[granted]"}
		for i, advance := range []time.Duration{0, time.Hour, 14 * 24 * time.Hour} {
			h.srv.Clock.Advance(advance)
			for j, tn := range tenants {
				tenant, err := store.Tenants().Get(ctx, tn.Id)
				if err != nil {
					t.Fatal(err)
				}
				ents, err := store.Entitlements().ListByTenant(ctx, tn.Id)
				if err != nil {
					t.Fatal(err)
				}
				fromDomain := domain.EntitledProducts(tenant, ents, h.srv.Clock.Now())
				var fromCheck []string
				for _, p := range products {
					if h.check(t, tn.Id, p).GetEntitled() {
						fromCheck = append(fromCheck, p)
					}
				}
				slices.Sort(fromCheck)
				want := wantAt[i]
				if j == 2 {
					want = "[]"
				}
				if fmt.Sprint(fromDomain) != fmt.Sprint(fromCheck) || fmt.Sprint(fromCheck) != want {
					t.Fatalf("moment %d, %s: EntitledProducts %v, CheckEntitlement %v, want %s", i, tn.Slug, fromDomain, fromCheck, want)
				}
			}
		}
	})
}

// TestEntitlementChangesAreAudited checks that every state-changing
// entitlement RPC writes exactly one event in the tenant's chain and
// announces a tenant invalidation to the key cache; refusals and no-ops do
// neither.
func TestEntitlementChangesAreAudited(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		h := startCatalog(t, db)
		tn := h.newTenant(t, "audited-entitlements")
		h.newProduct(t, "helpdesk", 14)
		var mu sync.Mutex
		invalidated := 0
		db.Changes().Subscribe(func(c domain.Change) {
			mu.Lock()
			defer mu.Unlock()
			if c.TenantID == tn.Id {
				invalidated++
			}
		})
		steps := []struct {
			name   string
			call   func() error
			action string // "" when nothing may be written; "retry" for a repeat, which writes nothing but invalidates again
		}{
			{"start trial", func() error { _, err := h.startTrial(tn.Id, "helpdesk"); return err }, "trial.started"},
			{"refused trial", func() error {
				_, err := h.startTrial(tn.Id, "helpdesk")
				return ignore(err, connect.CodeFailedPrecondition)
			}, ""},
			{"upgrade", func() error { _, err := h.grant(tn.Id, "helpdesk", time.Time{}); return err }, "entitlement.granted"},
			{"repeated grant", func() error { _, err := h.grant(tn.Id, "helpdesk", time.Time{}); return err }, "retry"},
			{"grant with an end", func() error { _, err := h.grant(tn.Id, "helpdesk", h.srv.Clock.Now().Add(time.Hour)); return err }, "entitlement.granted"},
			{"refused grant", func() error {
				_, err := h.grant(tn.Id, "no-such-product", time.Time{})
				return ignore(err, connect.CodeNotFound)
			}, ""},
			{"revoke", func() error { _, err := h.revoke(tn.Id, "helpdesk"); return err }, "entitlement.revoked"},
			{"revoke again", func() error { _, err := h.revoke(tn.Id, "helpdesk"); return err }, "retry"},
			{"refused revoke", func() error { _, err := h.revoke(tn.Id, "crm"); return ignore(err, connect.CodeNotFound) }, ""},
		}
		seen, seenInvalidations := len(h.events(t, tn.Id, "")), 0
		for _, s := range steps {
			if err := s.call(); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			events := h.events(t, tn.Id, "")
			mu.Lock()
			got := invalidated
			mu.Unlock()
			want, wantInvalidations := seen, seenInvalidations
			switch s.action {
			case "":
			case "retry":
				// A repeat answers only once the local cache feels the
				// change it repeats: it invalidates, and writes nothing.
				wantInvalidations++
			default:
				want, wantInvalidations = want+1, wantInvalidations+1
			}
			if len(events) != want || got != wantInvalidations {
				t.Fatalf("%s: %d events and %d invalidations, want %d and %d", s.name, len(events), got, want, wantInvalidations)
			}
			seen, seenInvalidations = want, wantInvalidations
			if s.action == "" || s.action == "retry" {
				continue
			}
			e := events[0]
			if e.GetAction() != s.action || e.GetProduct() != "tenant-registry" || e.GetActor().GetId() != "dev" ||
				e.GetTarget().GetId() != "helpdesk" || e.GetTarget().GetType() != "entitlement" || e.GetFields()["product"] != "helpdesk" {
				t.Fatalf("%s: event %v", s.name, e)
			}
		}
	})
}

// TestVerifyApiKeyFollowsEntitlements shows key verification answering
// from the same rule at once after each change: entitlement changes
// invalidate the cached verification of the tenant's keys.
func TestVerifyApiKeyFollowsEntitlements(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		h := startCatalog(t, db)
		keys := tenantregistryv1connect.NewApiKeyServiceClient(testserver.HTTP1, h.srv.URL)
		tn := h.newTenant(t, "verified")
		h.newProduct(t, "helpdesk", 14)
		created, err := keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: tn.Id, Name: "ci"})
		if err != nil {
			t.Fatal(err)
		}
		verify := func(step, want string) {
			t.Helper()
			res, err := keys.VerifyApiKey(ctx, &v1.VerifyApiKeyRequest{Key: created.GetPlaintextKey(), Product: "helpdesk"})
			if err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprintf("%s %v", strings.TrimPrefix(res.GetCode().String(), "API_KEY_VERIFICATION_CODE_"), res.GetProducts())
			if got != want {
				t.Fatalf("%s: verified %s, want %s", step, got, want)
			}
		}
		verify("no entitlement", "NOT_ENTITLED []")
		steps := []struct {
			name string
			do   func() error
			want string
		}{
			{"trial started", func() error { _, err := h.startTrial(tn.Id, "helpdesk"); return err }, "VALID [helpdesk]"},
			{"revoked", func() error { _, err := h.revoke(tn.Id, "helpdesk"); return err }, "NOT_ENTITLED []"},
			{"granted for a day", func() error { _, err := h.grant(tn.Id, "helpdesk", h.srv.Clock.Now().Add(24*time.Hour)); return err }, "VALID [helpdesk]"},
			{"frozen", func() error {
				_, err := h.tenants.CancelTenant(ctx, &v1.CancelTenantRequest{Id: tn.Id})
				return err
			}, "TENANT_FROZEN []"},
			{"activated", func() error {
				_, err := h.tenants.ActivateTenant(ctx, &v1.ActivateTenantRequest{Id: tn.Id})
				return err
			}, "VALID [helpdesk]"},
			{"grant expired", func() error { h.srv.Clock.Advance(24 * time.Hour); return nil }, "NOT_ENTITLED []"},
		}
		for _, s := range steps {
			if err := s.do(); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			verify(s.name, s.want)
		}
	})
}
