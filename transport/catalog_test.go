package transport_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// catalogHarness is the real server with clients of the services the
// catalog and entitlement tests use.
type catalogHarness struct {
	srv     *testserver.Server
	tenants tenantregistryv1connect.TenantServiceClient
	catalog tenantregistryv1connect.CatalogServiceClient
	ents    tenantregistryv1connect.EntitlementServiceClient
	audit   tenantregistryv1connect.AuditServiceClient
}

func startCatalog(t *testing.T, db *persistence.DB) *catalogHarness {
	srv := testserver.Start(t, db)
	return &catalogHarness{
		srv:     srv,
		tenants: tenantregistryv1connect.NewTenantServiceClient(testserver.HTTP1, srv.URL),
		catalog: tenantregistryv1connect.NewCatalogServiceClient(testserver.HTTP1, srv.URL),
		ents:    tenantregistryv1connect.NewEntitlementServiceClient(testserver.HTTP1, srv.URL),
		audit:   tenantregistryv1connect.NewAuditServiceClient(testserver.HTTP1, srv.URL),
	}
}

func (h *catalogHarness) newTenant(t *testing.T, slug string) *v1.Tenant {
	t.Helper()
	res, err := h.tenants.CreateTenant(context.Background(), &v1.CreateTenantRequest{Slug: slug, DisplayName: "Tenant " + slug})
	if err != nil {
		t.Fatal(err)
	}
	return res.GetTenant()
}

func (h *catalogHarness) newProduct(t *testing.T, key string, trialDays int32) *v1.Product {
	t.Helper()
	res, err := h.catalog.CreateProduct(context.Background(), &v1.CreateProductRequest{Key: key, DisplayName: "Product " + key, TrialDays: &trialDays})
	if err != nil {
		t.Fatal(err)
	}
	return res.GetProduct()
}

// counts returns the rows of every table the catalog writes, so a test can
// show that a refused request wrote nothing.
func (h *catalogHarness) counts(t *testing.T) string {
	t.Helper()
	var out []string
	for _, table := range []string{"products", "product_requests", "trials", "entitlements", "audit_events"} {
		n, err := h.srv.DB.Bun().NewSelect().Table(table).Count(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s=%d", table, n))
	}
	return strings.Join(out, " ")
}

// events lists the chain's events (tenantID "" is the platform's) with the
// action, newest first.
func (h *catalogHarness) events(t *testing.T, tenantID, action string) []*v1.AuditEvent {
	t.Helper()
	res, err := h.audit.ListAuditEvents(context.Background(), &v1.ListAuditEventsRequest{TenantId: tenantID, Action: action, PageSize: 500})
	if err != nil {
		t.Fatal(err)
	}
	return res.GetEvents()
}

// expectErr fails unless err has the code and its message contains text.
func expectErr(t *testing.T, name string, err error, code connect.Code, text string) {
	t.Helper()
	if connect.CodeOf(err) != code || !strings.Contains(err.Error(), text) {
		t.Errorf("%s: got %v, want %v containing %q", name, err, code, text)
	}
}

func TestCatalogProducts(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		h := startCatalog(t, db)
		zero, ninety := int32(0), int32(90)
		tests := []struct {
			req  *v1.CreateProductRequest
			want string
		}{
			{&v1.CreateProductRequest{Key: "helpdesk", DisplayName: "  Helpdesk ", Description: "Tickets.\n\tAnd a shared inbox."}, "helpdesk|Helpdesk|14"},
			{&v1.CreateProductRequest{Key: "data-warehouse", DisplayName: "Data Warehouse", TrialDays: &zero}, "data-warehouse|Data Warehouse|0"},
			{&v1.CreateProductRequest{Key: "analytics", DisplayName: "Analytics", TrialDays: &ninety}, "analytics|Analytics|90"},
		}
		for _, tc := range tests {
			res, err := h.catalog.CreateProduct(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			p := res.GetProduct()
			if got := fmt.Sprintf("%s|%s|%d", p.GetKey(), p.GetDisplayName(), p.GetTrialDays()); got != tc.want ||
				p.GetDescription() != tc.req.GetDescription() || p.GetCreateTime().AsTime() != h.srv.Clock.Now() {
				t.Fatalf("created %v, want %s", p, tc.want)
			}
		}
		before := h.counts(t)
		_, err := h.catalog.CreateProduct(ctx, &v1.CreateProductRequest{Key: "helpdesk", DisplayName: "Again"})
		expectErr(t, "duplicate key", err, connect.CodeAlreadyExists, "helpdesk")
		if after := h.counts(t); after != before {
			t.Fatalf("a refused create wrote: %s, was %s", after, before)
		}

		// The portal reads the catalog over every protocol, and as HTTP GET.
		for _, p := range testserver.Protocols {
			client := tenantregistryv1connect.NewCatalogServiceClient(p.HTTP, h.srv.URL, p.Options...)
			res, err := client.ListProducts(ctx, &v1.ListProductsRequest{})
			if err != nil {
				t.Fatalf("%s: %v", p.Name, err)
			}
			var keys []string
			for _, p := range res.GetProducts() {
				keys = append(keys, p.GetKey())
			}
			if strings.Join(keys, ",") != "analytics,data-warehouse,helpdesk" {
				t.Fatalf("%s: listed %v, want them by key", p.Name, keys)
			}
		}

		h.srv.Clock.Advance(time.Minute)
		name, empty, days := "Help Desk", "", int32(30)
		res, err := h.catalog.UpdateProduct(ctx, &v1.UpdateProductRequest{Key: "helpdesk", DisplayName: &name, Description: &empty})
		if err != nil {
			t.Fatal(err)
		}
		if p := res.GetProduct(); p.GetDisplayName() != name || p.GetDescription() != "" || p.GetTrialDays() != 14 ||
			p.GetUpdateTime().AsTime() != h.srv.Clock.Now() || p.GetCreateTime().AsTime() == h.srv.Clock.Now() {
			t.Fatalf("updated name and description: %v", p)
		}
		res, err = h.catalog.UpdateProduct(ctx, &v1.UpdateProductRequest{Key: "helpdesk", TrialDays: &days})
		if err != nil || res.GetProduct().GetTrialDays() != 30 || res.GetProduct().GetDisplayName() != name {
			t.Fatalf("updated trial days: %v %v", res.GetProduct(), err)
		}
		h.srv.Clock.Advance(time.Minute)
		res, err = h.catalog.UpdateProduct(ctx, &v1.UpdateProductRequest{Key: "helpdesk", TrialDays: &days})
		if err != nil || res.GetProduct().GetUpdateTime().AsTime() == h.srv.Clock.Now() {
			t.Fatalf("a no-op update changed update_time: %v %v", res.GetProduct(), err)
		}
		_, err = h.catalog.UpdateProduct(ctx, &v1.UpdateProductRequest{Key: "no-such-product", DisplayName: &name})
		expectErr(t, "unknown product", err, connect.CodeNotFound, "no-such-product")
	})
}

func TestCatalogBadInput(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		h := startCatalog(t, db)
		tn := h.newTenant(t, "bad-input")
		h.newProduct(t, "helpdesk", 14)
		first, err := h.catalog.ListProductRequests(ctx, &v1.ListProductRequestsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var (
			blank, tooLongName, nulName = "  ", strings.Repeat("n", 201), "a\x00b"
			minus, over                 = int32(-1), int32(91)
			long                        = strings.Repeat("é", 2001)
		)
		create := func(req *v1.CreateProductRequest) func() error {
			return func() error { _, err := h.catalog.CreateProduct(ctx, req); return err }
		}
		update := func(req *v1.UpdateProductRequest) func() error {
			return func() error { _, err := h.catalog.UpdateProduct(ctx, req); return err }
		}
		request := func(req *v1.RequestProductRequest) func() error {
			return func() error { _, err := h.catalog.RequestProduct(ctx, req); return err }
		}
		list := func(req *v1.ListProductRequestsRequest) func() error {
			return func() error { _, err := h.catalog.ListProductRequests(ctx, req); return err }
		}
		trial := func(tenantID, product string) func() error {
			return func() error {
				_, err := h.catalog.StartTrial(ctx, &v1.StartTrialRequest{TenantId: tenantID, Product: product})
				return err
			}
		}
		tests := []struct {
			name  string
			call  func() error
			field string
		}{
			{"create: no key", create(&v1.CreateProductRequest{DisplayName: "X"}), "key"},
			{"create: key with capitals", create(&v1.CreateProductRequest{Key: "CRM", DisplayName: "X"}), "key"},
			{"create: key of two characters", create(&v1.CreateProductRequest{Key: "ab", DisplayName: "X"}), "key"},
			{"create: key with SQL", create(&v1.CreateProductRequest{Key: "x'; DROP TABLE products;--", DisplayName: "X"}), "key"},
			{"create: no display name", create(&v1.CreateProductRequest{Key: "crm"}), "display_name"},
			{"create: blank display name", create(&v1.CreateProductRequest{Key: "crm", DisplayName: blank}), "display_name"},
			{"create: display name of 201 characters", create(&v1.CreateProductRequest{Key: "crm", DisplayName: tooLongName}), "display_name"},
			{"create: NUL in display name", create(&v1.CreateProductRequest{Key: "crm", DisplayName: nulName}), "display_name"},
			{"create: description of 2001 characters", create(&v1.CreateProductRequest{Key: "crm", DisplayName: "X", Description: long}), "description"},
			{"create: NUL in description", create(&v1.CreateProductRequest{Key: "crm", DisplayName: "X", Description: nulName}), "description"},
			{"create: trial_days -1", create(&v1.CreateProductRequest{Key: "crm", DisplayName: "X", TrialDays: &minus}), "trial_days"},
			{"create: trial_days 91", create(&v1.CreateProductRequest{Key: "crm", DisplayName: "X", TrialDays: &over}), "trial_days"},
			{"update: no key", update(&v1.UpdateProductRequest{DisplayName: &tooLongName}), "key"},
			{"update: blank display name", update(&v1.UpdateProductRequest{Key: "helpdesk", DisplayName: &blank}), "display_name"},
			{"update: description of 2001 characters", update(&v1.UpdateProductRequest{Key: "helpdesk", Description: &long}), "description"},
			{"update: trial_days 91", update(&v1.UpdateProductRequest{Key: "helpdesk", TrialDays: &over}), "trial_days"},
			{"request: no tenant", request(&v1.RequestProductRequest{Product: "helpdesk"}), "tenant_id"},
			{"request: tenant id not a UUID", request(&v1.RequestProductRequest{TenantId: "acme", Product: "helpdesk"}), "tenant_id"},
			{"request: no product", request(&v1.RequestProductRequest{TenantId: tn.Id}), "product"},
			{"request: note of 2001 characters", request(&v1.RequestProductRequest{TenantId: tn.Id, Product: "helpdesk", Note: long}), "note"},
			{"request: NUL in note", request(&v1.RequestProductRequest{TenantId: tn.Id, Product: "helpdesk", Note: nulName}), "note"},
			{"list requests: status 99", list(&v1.ListProductRequestsRequest{Status: 99}), "status"},
			{"list requests: page size 501", list(&v1.ListProductRequestsRequest{PageSize: 501}), "page_size"},
			{"list requests: page size -1", list(&v1.ListProductRequestsRequest{PageSize: -1}), "page_size"},
			{"list requests: token edited", list(&v1.ListProductRequestsRequest{PageToken: "x" + first.GetNextPageToken() + "x"}), "page_token"},
			{"trial: no tenant", trial("", "helpdesk"), "tenant_id"},
			{"trial: tenant id not a UUID", trial("1 OR 1=1", "helpdesk"), "tenant_id"},
			{"trial: no product", trial(tn.Id, ""), "product"},
			{"trial: product with spaces", trial(tn.Id, "help desk"), "product"},
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

func TestProductRequests(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		h := startCatalog(t, db)
		tn, other := h.newTenant(t, "requester"), h.newTenant(t, "requester-two")
		h.newProduct(t, "data-warehouse", 0)
		h.newProduct(t, "helpdesk", 14)
		ask := func(tenantID, product, note string) (*v1.ProductRequest, error) {
			res, err := h.catalog.RequestProduct(ctx, &v1.RequestProductRequest{TenantId: tenantID, Product: product, Note: note})
			return res.GetRequest(), err
		}
		note := "Please call us.\r\nWe have 40 seats.\tThanks!"
		first, err := ask(tn.Id, "data-warehouse", note)
		if err != nil {
			t.Fatal(err)
		}
		if first.GetId() == "" || first.GetTenantId() != tn.Id || first.GetProduct() != "data-warehouse" || first.GetNote() != note ||
			first.GetStatus() != v1.ProductRequestStatus_PRODUCT_REQUEST_STATUS_OPEN || first.GetRequestedBy() != "dev" ||
			first.GetCreateTime().AsTime() != h.srv.Clock.Now() {
			t.Fatalf("stored request: %v", first)
		}
		h.srv.Clock.Advance(time.Hour)
		again, err := ask(tn.Id, "data-warehouse", "a second note")
		if err != nil || again.GetId() != first.GetId() || again.GetNote() != note {
			t.Fatalf("a second open request must return the first: %v %v", again, err)
		}
		if n := len(h.events(t, tn.Id, "product.requested")); n != 1 {
			t.Fatalf("%d product.requested events, want 1", n)
		}
		_, err = ask("01a20000-0000-7000-8000-000000000000", "helpdesk", "")
		expectErr(t, "unknown tenant", err, connect.CodeNotFound, "tenant")
		_, err = ask(tn.Id, "no-such-product", "")
		expectErr(t, "unknown product", err, connect.CodeNotFound, "no-such-product")

		// Once sales closes it, the tenant can ask again.
		if _, err := db.Bun().ExecContext(ctx, "UPDATE product_requests SET status = 'CLOSED' WHERE id = ?", first.GetId()); err != nil {
			t.Fatal(err)
		}
		ids := []string{first.GetId()}
		for _, r := range []struct{ tenant, product string }{{tn.Id, "data-warehouse"}, {tn.Id, "helpdesk"}, {other.Id, "helpdesk"}, {other.Id, "data-warehouse"}} {
			got, err := ask(r.tenant, r.product, "")
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, got.GetId())
		}
		tests := []struct {
			status v1.ProductRequestStatus
			want   []string
		}{
			{v1.ProductRequestStatus_PRODUCT_REQUEST_STATUS_UNSPECIFIED, ids},
			{v1.ProductRequestStatus_PRODUCT_REQUEST_STATUS_OPEN, ids[1:]},
			{v1.ProductRequestStatus_PRODUCT_REQUEST_STATUS_CLOSED, ids[:1]},
		}
		for _, tc := range tests {
			var got []string
			req := &v1.ListProductRequestsRequest{Status: tc.status, PageSize: 2}
			for pages := 0; ; pages++ {
				res, err := h.catalog.ListProductRequests(ctx, req)
				if err != nil || pages > 5 {
					t.Fatalf("%v: page %d: %v", tc.status, pages, err)
				}
				for _, r := range res.GetRequests() {
					got = append(got, r.GetId())
				}
				if res.GetNextPageToken() == "" {
					break
				}
				req.PageToken = res.GetNextPageToken()
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("%v: listed %v, want %v in creation order", tc.status, got, tc.want)
			}
		}
		open, _ := h.catalog.ListProductRequests(ctx, &v1.ListProductRequestsRequest{Status: v1.ProductRequestStatus_PRODUCT_REQUEST_STATUS_OPEN, PageSize: 1})
		_, err = h.catalog.ListProductRequests(ctx, &v1.ListProductRequestsRequest{PageToken: open.GetNextPageToken()})
		assertViolation(t, "token of another filter", err, "page_token")
	})
}

// TestConcurrentProductRequests shows that racing requests for the same
// tenant and product store one request and one event, and all get it.
func TestConcurrentProductRequests(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		h := startCatalog(t, db)
		tn := h.newTenant(t, "eager")
		h.newProduct(t, "helpdesk", 14)
		ids := make(chan string, 20)
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				res, err := h.catalog.RequestProduct(ctx, &v1.RequestProductRequest{TenantId: tn.Id, Product: "helpdesk"})
				if err != nil {
					t.Error(err)
				}
				ids <- res.GetRequest().GetId()
			})
		}
		wg.Wait()
		close(ids)
		distinct := map[string]bool{}
		for id := range ids {
			distinct[id] = true
		}
		if len(distinct) != 1 || len(h.events(t, tn.Id, "product.requested")) != 1 {
			t.Fatalf("20 racing requests gave ids %v and %d events; want one of each", distinct, len(h.events(t, tn.Id, "product.requested")))
		}
	})
}

func (h *catalogHarness) startTrial(tenantID, product string) (*v1.Entitlement, error) {
	res, err := h.catalog.StartTrial(context.Background(), &v1.StartTrialRequest{TenantId: tenantID, Product: product})
	return res.GetEntitlement(), err
}

// TestStartTrial walks the portal's path: show the catalog, start a trial,
// see it listed with its end time, and let a product check it.
func TestStartTrial(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		h := startCatalog(t, db)
		tn := h.newTenant(t, "trialist")
		h.newProduct(t, "helpdesk", 30)
		start := h.srv.Clock.Now()
		e, err := h.startTrial(tn.Id, "helpdesk")
		if err != nil {
			t.Fatal(err)
		}
		end := start.Add(30 * 24 * time.Hour)
		if e.GetTenantId() != tn.Id || e.GetProduct() != "helpdesk" || e.GetStatus() != v1.EntitlementStatus_ENTITLEMENT_STATUS_TRIAL ||
			e.GetSource() != v1.EntitlementSource_ENTITLEMENT_SOURCE_TRIAL || e.GetStartTime().AsTime() != start || e.GetExpireTime().AsTime() != end {
			t.Fatalf("trial: %v", e)
		}
		list, err := h.ents.ListEntitlements(ctx, &v1.ListEntitlementsRequest{TenantId: tn.Id})
		if err != nil || len(list.GetEntitlements()) != 1 || list.GetEntitlements()[0].GetExpireTime().AsTime() != end ||
			list.GetEntitlements()[0].GetStatus() != v1.EntitlementStatus_ENTITLEMENT_STATUS_TRIAL {
			t.Fatalf("listed: %v %v", list.GetEntitlements(), err)
		}
		check, err := h.ents.CheckEntitlement(ctx, &v1.CheckEntitlementRequest{TenantId: tn.Id, Product: "helpdesk"})
		if err != nil || !check.GetEntitled() || check.GetReason() != v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_OK {
			t.Fatalf("check: %v %v", check, err)
		}
	})
}

// TestStartTrialRefusals checks every reason a trial is refused, and that
// a refusal writes nothing.
func TestStartTrialRefusals(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		h := startCatalog(t, db)
		tn, frozen := h.newTenant(t, "refused"), h.newTenant(t, "frozen-one")
		for key, days := range map[string]int32{"helpdesk": 30, "crm": 14, "billing": 14, "analytics": 14, "data-warehouse": 0} {
			h.newProduct(t, key, days)
		}
		if _, err := h.tenants.CancelTenant(ctx, &v1.CancelTenantRequest{Id: frozen.Id}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.startTrial(tn.Id, "helpdesk"); err != nil {
			t.Fatal(err)
		}
		if _, err := h.startTrial(tn.Id, "billing"); err != nil {
			t.Fatal(err)
		}
		grant := func(product string, expire time.Time) {
			req := &v1.GrantEntitlementRequest{TenantId: tn.Id, Product: product}
			if !expire.IsZero() {
				req.ExpireTime = timestamppb.New(expire)
			}
			if _, err := h.ents.GrantEntitlement(ctx, req); err != nil {
				t.Fatal(err)
			}
		}
		grant("crm", time.Time{})
		grant("analytics", h.srv.Clock.Now().Add(24*time.Hour))
		h.srv.Clock.Advance(15 * 24 * time.Hour) // billing's trial and analytics' grant have ended
		if _, err := h.ents.RevokeEntitlement(ctx, &v1.RevokeEntitlementRequest{TenantId: tn.Id, Product: "crm"}); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name, tenant, product string
			code                  connect.Code
			why                   string
		}{
			{"a running trial", tn.Id, "helpdesk", connect.CodeFailedPrecondition, "already has helpdesk"},
			{"a trial that expired", tn.Id, "billing", connect.CodeFailedPrecondition, "already had a trial of billing"},
			{"a revoked grant", tn.Id, "crm", connect.CodeFailedPrecondition, "already had an entitlement for crm"},
			{"an expired grant", tn.Id, "analytics", connect.CodeFailedPrecondition, "already had an entitlement for analytics"},
			{"a product without trials", tn.Id, "data-warehouse", connect.CodeFailedPrecondition, "offers no self-serve trial"},
			{"a FROZEN tenant", frozen.Id, "helpdesk", connect.CodeFailedPrecondition, "FROZEN"},
			{"an unknown product", tn.Id, "no-such-product", connect.CodeNotFound, "no-such-product"},
			{"an unknown tenant", "01a20000-0000-7000-8000-000000000000", "helpdesk", connect.CodeNotFound, "tenant"},
		}
		before := h.counts(t)
		for _, tc := range tests {
			_, err := h.startTrial(tc.tenant, tc.product)
			expectErr(t, tc.name, err, tc.code, tc.why)
		}
		if after := h.counts(t); after != before {
			t.Fatalf("refused trials wrote: %s, was %s", after, before)
		}
		// Activating the frozen tenant lets it start its first trial.
		if _, err := h.tenants.ActivateTenant(ctx, &v1.ActivateTenantRequest{Id: frozen.Id}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.startTrial(frozen.Id, "helpdesk"); err != nil {
			t.Fatalf("trial after activation: %v", err)
		}
	})
}

// TestConcurrentStartTrial races fifty trials of one tenant and product:
// exactly one starts.
func TestConcurrentStartTrial(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		h := startCatalog(t, db)
		tn := h.newTenant(t, "racer")
		h.newProduct(t, "helpdesk", 14)
		outcomes := make(chan string, 50)
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				_, err := h.startTrial(tn.Id, "helpdesk")
				switch {
				case err == nil:
					outcomes <- "started"
				case connect.CodeOf(err) == connect.CodeFailedPrecondition:
					outcomes <- "refused"
				default:
					t.Errorf("unexpected error: %v", err)
				}
			})
		}
		wg.Wait()
		close(outcomes)
		count := map[string]int{}
		for o := range outcomes {
			count[o]++
		}
		if count["started"] != 1 || count["refused"] != 49 {
			t.Fatalf("50 racing trials: %v; want 1 started and 49 refused", count)
		}
		if got := h.counts(t); !strings.Contains(got, "trials=1 entitlements=1") {
			t.Fatalf("rows after the race: %s", got)
		}
		if n := len(h.events(t, tn.Id, "trial.started")); n != 1 {
			t.Fatalf("%d trial.started events, want 1", n)
		}
	})
}

// TestCatalogChangesAreAudited checks that every state-changing catalog
// RPC writes exactly one event, in the platform's chain for products and
// in the tenant's for the rest, and that refusals and no-ops write none.
func TestCatalogChangesAreAudited(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		h := startCatalog(t, db)
		tn := h.newTenant(t, "audited-catalog")
		name := "Help Desk"
		steps := []struct {
			name   string
			call   func() error
			chain  string // whose chain gets the event
			action string // "" when no event may be written
			target string
		}{
			{"create product", func() error {
				_, err := h.catalog.CreateProduct(ctx, &v1.CreateProductRequest{Key: "helpdesk", DisplayName: "Helpdesk"})
				return err
			}, "", "product.created", "helpdesk"},
			{"refused create", func() error {
				_, err := h.catalog.CreateProduct(ctx, &v1.CreateProductRequest{Key: "helpdesk", DisplayName: "Helpdesk"})
				return ignore(err, connect.CodeAlreadyExists)
			}, "", "", ""},
			{"update product", func() error {
				_, err := h.catalog.UpdateProduct(ctx, &v1.UpdateProductRequest{Key: "helpdesk", DisplayName: &name})
				return err
			}, "", "product.updated", "helpdesk"},
			{"no-op update", func() error {
				_, err := h.catalog.UpdateProduct(ctx, &v1.UpdateProductRequest{Key: "helpdesk", DisplayName: &name})
				return err
			}, "", "", ""},
			{"request product", func() error {
				_, err := h.catalog.RequestProduct(ctx, &v1.RequestProductRequest{TenantId: tn.Id, Product: "helpdesk"})
				return err
			}, tn.Id, "product.requested", ""},
			{"repeated request", func() error {
				_, err := h.catalog.RequestProduct(ctx, &v1.RequestProductRequest{TenantId: tn.Id, Product: "helpdesk"})
				return err
			}, tn.Id, "", ""},
			{"start trial", func() error { _, err := h.startTrial(tn.Id, "helpdesk"); return err }, tn.Id, "trial.started", "helpdesk"},
			{"refused trial", func() error {
				_, err := h.startTrial(tn.Id, "helpdesk")
				return ignore(err, connect.CodeFailedPrecondition)
			}, tn.Id, "", ""},
		}
		seen := map[string]int{"": len(h.events(t, "", "")), tn.Id: len(h.events(t, tn.Id, ""))}
		for _, s := range steps {
			if err := s.call(); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			for chain := range seen {
				events := h.events(t, chain, "")
				want := seen[chain]
				if s.action != "" && chain == s.chain {
					want++
				}
				if len(events) != want {
					t.Fatalf("%s: chain %q has %d events, want %d", s.name, chain, len(events), want)
				}
				seen[chain] = want
			}
			if s.action == "" {
				continue
			}
			e := h.events(t, s.chain, "")[0]
			if e.GetAction() != s.action || e.GetProduct() != "tenant-registry" || e.GetActor().GetId() != "dev" ||
				(s.target != "" && e.GetTarget().GetId() != s.target) || e.GetSourceIp() != "127.0.0.1" {
				t.Fatalf("%s: event %v", s.name, e)
			}
		}
		for _, chain := range []string{"", tn.Id} {
			r, err := h.audit.VerifyAuditChain(ctx, &v1.VerifyAuditChainRequest{TenantId: chain})
			if err != nil || !r.GetOk() {
				t.Fatalf("chain %q: %v %v", chain, r, err)
			}
		}
	})
}

// ignore returns nil when err has the expected code, and an error otherwise.
func ignore(err error, code connect.Code) error {
	if connect.CodeOf(err) != code {
		return fmt.Errorf("want %v, got %v", code, err)
	}
	return nil
}
