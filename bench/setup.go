package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// clients are typed Connect clients of one server, for setup and for the
// propagation trials (not for load: vegeta and ghz do that).
type clients struct {
	tenants      tenantregistryv1connect.TenantServiceClient
	entitlements tenantregistryv1connect.EntitlementServiceClient
	keys         tenantregistryv1connect.ApiKeyServiceClient
	audit        tenantregistryv1connect.AuditServiceClient
}

func newClients(baseURL string) clients {
	hc := &http.Client{Timeout: time.Minute}
	return clients{
		tenants:      tenantregistryv1connect.NewTenantServiceClient(hc, baseURL),
		entitlements: tenantregistryv1connect.NewEntitlementServiceClient(hc, baseURL),
		keys:         tenantregistryv1connect.NewApiKeyServiceClient(hc, baseURL),
		audit:        tenantregistryv1connect.NewAuditServiceClient(hc, baseURL),
	}
}

// The fixtures' names. The product and scope are what a product service
// would verify its callers' keys for.
const (
	benchProduct = "analytics"
	benchScope   = "analytics:read"
	appendChains = 16 // tenants the append rows spread over
)

// fixtures are the data the rows work on.
type fixtures struct {
	VerifyTenant   *v1.Tenant
	Key            string // plaintext of a key of VerifyTenant
	BigAudit       *v1.Tenant
	SmallAudit     *v1.Tenant
	SmallAppend    *v1.Tenant // a chain of 1k that the append rows lengthen
	AppendTenants  []string
	BigDeepToken   string // a page token about the middle of BigAudit's chain
	SmallDeepToken string
}

// tenant returns the tenant with this slug, creating it when missing.
func (c clients) tenant(ctx context.Context, slug string) (*v1.Tenant, error) {
	res, err := c.tenants.GetTenantBySlug(ctx, &v1.GetTenantBySlugRequest{Slug: slug})
	if err == nil {
		return res.GetTenant(), nil
	}
	if connect.CodeOf(err) != connect.CodeNotFound {
		return nil, err
	}
	created, err := c.tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: slug, DisplayName: "Benchmark " + slug})
	if err != nil {
		return nil, fmt.Errorf("create tenant %s: %w", slug, err)
	}
	return created.GetTenant(), nil
}

// prepare creates (or finds) the fixtures through the service's API, and
// seeds the audit chains directly through its domain and persistence code.
func prepare(ctx context.Context, c clients, dbURL string, auditEvents int, logw io.Writer) (*fixtures, error) {
	f := &fixtures{}
	var err error
	if f.VerifyTenant, err = c.tenant(ctx, "bench-verify"); err != nil {
		return nil, err
	}
	if _, err := c.entitlements.GrantEntitlement(ctx, &v1.GrantEntitlementRequest{TenantId: f.VerifyTenant.GetId(), Product: benchProduct}); err != nil &&
		connect.CodeOf(err) != connect.CodeAlreadyExists && connect.CodeOf(err) != connect.CodeFailedPrecondition {
		return nil, fmt.Errorf("grant %s: %w", benchProduct, err)
	}
	key, err := c.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{
		TenantId: f.VerifyTenant.GetId(), Name: "bench", Scopes: []string{benchScope, "analytics:write"},
	})
	if err != nil {
		return nil, fmt.Errorf("create key: %w", err)
	}
	f.Key = key.GetPlaintextKey()
	v, err := c.keys.VerifyApiKey(ctx, &v1.VerifyApiKeyRequest{Key: f.Key, Product: benchProduct, RequiredScopes: []string{benchScope}})
	if err != nil || !v.GetValid() {
		return nil, fmt.Errorf("the new key does not verify: %v %v", v, err)
	}
	for i := range appendChains {
		t, err := c.tenant(ctx, fmt.Sprintf("bench-append-%02d", i))
		if err != nil {
			return nil, err
		}
		f.AppendTenants = append(f.AppendTenants, t.GetId())
	}
	if f.BigAudit, err = c.tenant(ctx, "bench-audit-big"); err != nil {
		return nil, err
	}
	if f.SmallAudit, err = c.tenant(ctx, "bench-audit-small"); err != nil {
		return nil, err
	}
	if f.SmallAppend, err = c.tenant(ctx, "bench-append-small"); err != nil {
		return nil, err
	}
	for _, chain := range []struct {
		t *v1.Tenant
		n int
	}{{f.SmallAudit, 1000}, {f.SmallAppend, 1000}, {f.BigAudit, auditEvents}} {
		have, err := chainLength(ctx, dbURL, chain.t.GetId())
		if err != nil {
			return nil, err
		}
		if have >= int64(chain.n) {
			fmt.Fprintf(logw, "  %s already holds %d events\n", chain.t.GetSlug(), have)
			continue
		}
		start := time.Now()
		if err := seedAudit(ctx, dbURL, chain.t.GetId(), chain.n-int(have), logw); err != nil {
			return nil, err
		}
		fmt.Fprintf(logw, "  seeded %d events into %s in %s\n", chain.n-int(have), chain.t.GetSlug(), time.Since(start).Round(time.Millisecond))
	}
	if auditEvents == 0 {
		return f, nil
	}
	if f.BigDeepToken, err = middleToken(ctx, c, f.BigAudit.GetId()); err != nil {
		return nil, err
	}
	if f.SmallDeepToken, err = middleToken(ctx, c, f.SmallAudit.GetId()); err != nil {
		return nil, err
	}
	return f, nil
}

// middleToken pages through a tenant's events, newest first, to about the
// middle of its chain and returns the page token found there: a request
// with it reads a page half a chain deep.
func middleToken(ctx context.Context, c clients, tenantID string) (string, error) {
	first, err := c.audit.ListAuditEvents(ctx, &v1.ListAuditEventsRequest{TenantId: tenantID, PageSize: 1})
	if err != nil || len(first.GetEvents()) == 0 {
		return "", fmt.Errorf("list audit events of %s: %v", tenantID, err)
	}
	middle := first.GetEvents()[0].GetSeq() / 2
	token := first.GetNextPageToken()
	for {
		size := int32(domain.MaxPageSize)
		res, err := c.audit.ListAuditEvents(ctx, &v1.ListAuditEventsRequest{TenantId: tenantID, PageSize: size, PageToken: token})
		if err != nil {
			return "", fmt.Errorf("page through audit events of %s: %w", tenantID, err)
		}
		evs := res.GetEvents()
		if len(evs) == 0 || res.GetNextPageToken() == "" {
			return "", errors.New("the chain ended before its middle")
		}
		token = res.GetNextPageToken()
		if evs[len(evs)-1].GetSeq() <= middle {
			return token, nil
		}
	}
}

// chainLength returns how many events a tenant's chain holds.
func chainLength(ctx context.Context, dbURL, tenantID string) (int64, error) {
	db, err := persistence.Open(ctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	seq, _, err := db.Store().Audit().Head(ctx, tenantID)
	return seq, err
}

// seedBatch is the events appended per transaction when seeding: larger
// than an API batch (500), since the seed appends to one chain, which
// takes one transaction at a time.
const seedBatch = 5000

// seedAudit appends n events to a tenant's chain through the service's own
// audit log code, so the chain is exactly what the API would have built
// (and VerifyAuditChain accepts it), without n/500 round trips of JSON.
func seedAudit(ctx context.Context, dbURL, tenantID string, n int, logw io.Writer) error {
	db, err := persistence.Open(ctx, dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	store := db.Store()
	if _, err := store.Tenants().Get(ctx, tenantID); err != nil {
		return fmt.Errorf("tenant %s: %w", tenantID, err)
	}
	actions := []string{"document.created", "document.updated", "document.shared", "user.login", "report.exported"}
	cruds := []string{"c", "u", "u", "r", "r"}
	now := time.Now().UTC().Truncate(time.Microsecond)
	start := time.Now()
	for done := 0; done < n; {
		size := min(seedBatch, n-done)
		events := make([]*domain.AuditEvent, size)
		for i := range events {
			j := done + i
			a := j % len(actions)
			events[i] = &domain.AuditEvent{
				ID: domain.NewID(), TenantID: tenantID, Product: benchProduct, Action: actions[a], CRUD: cruds[a],
				Actor:       domain.AuditActor{ID: "user-" + strconv.Itoa(j%97), Name: "User " + strconv.Itoa(j%97), Type: "user"},
				Target:      domain.AuditTarget{ID: "doc-" + strconv.Itoa(j%1009), Type: "document", Name: "Document " + strconv.Itoa(j%1009)},
				SourceIP:    "192.0.2." + strconv.Itoa(j%250+1),
				Description: "benchmark seed event",
				Fields:      map[string]string{"seed": "bench", "n": strconv.Itoa(j)},
				OccurTime:   now.Add(time.Duration(j-n) * time.Millisecond),
				ReceiveTime: now,
				ExternalID:  "seed-" + strconv.Itoa(j),
			}
		}
		err := store.Atomically(ctx, func(r domain.Repositories) error { return r.Audit().Append(ctx, events) })
		if err != nil {
			return fmt.Errorf("append events: %w", err)
		}
		done += size
		if done%100_000 == 0 || done == n {
			fmt.Fprintf(logw, "  seeded %d/%d events (%.0f events/s)\n", done, n, float64(done)/time.Since(start).Seconds())
		}
	}
	// As autovacuum would soon after a bulk load: the planner needs to
	// know how large the table has grown.
	_, err = db.Bun().ExecContext(ctx, "ANALYZE audit_events")
	return err
}
