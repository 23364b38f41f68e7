package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/uptrace/bun/driver/pgdriver"
	"google.golang.org/protobuf/proto"

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
	treeWorkers  = 4  // logs the in-process append rows write to at once
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
	// TreeTenants are the logs the in-process append rows grow, one per worker.
	TreeTenants []string
	// VerifyResponse and CheckResponse are the service's answers for Key
	// and for VerifyTenant's entitlement, as binary protobuf: the
	// constants the baselines answer with.
	VerifyResponse, CheckResponse []byte
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
func prepare(ctx context.Context, c clients, db *persistence.DB, dbURL string, tokens *tokenCache, auditEvents int, logw io.Writer) (*fixtures, error) {
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
	if f.VerifyResponse, err = proto.Marshal(v); err != nil {
		return nil, err
	}
	check, err := c.entitlements.CheckEntitlement(ctx, &v1.CheckEntitlementRequest{TenantId: f.VerifyTenant.GetId(), Product: benchProduct})
	if err != nil || !check.GetEntitled() {
		return nil, fmt.Errorf("the benchmark's tenant is not entitled to %s: %v %v", benchProduct, check, err)
	}
	if f.CheckResponse, err = proto.Marshal(check); err != nil {
		return nil, err
	}
	for i := range treeWorkers {
		t, err := c.tenant(ctx, fmt.Sprintf("bench-tree-%02d", i))
		if err != nil {
			return nil, err
		}
		f.TreeTenants = append(f.TreeTenants, t.GetId())
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
	// The small logs carry idempotency keys, as products' events do; the
	// large one none, so that seeding millions of events writes no
	// millions of keys (listing reads no keys either way).
	for _, chain := range []struct {
		t    *v1.Tenant
		n    int
		keys bool
	}{{f.SmallAudit, 1000, true}, {f.SmallAppend, 1000, true}, {f.BigAudit, auditEvents, false}} {
		head, err := db.Store().Audit().Head(ctx, chain.t.GetId())
		if err != nil {
			return nil, err
		}
		if head.Size >= int64(chain.n) {
			fmt.Fprintf(logw, "  %s already holds %d events\n", chain.t.GetSlug(), head.Size)
			continue
		}
		n := chain.n - int(head.Size)
		start := time.Now()
		if err := seedAudit(ctx, db, chain.t.GetId(), n, seedOptions{ExternalIDs: chain.keys, DatabaseURL: dbURL}, logw); err != nil {
			return nil, err
		}
		took := time.Since(start)
		fmt.Fprintf(logw, "  seeded %d events into %s in %s (%.0f events/s)\n", n, chain.t.GetSlug(), took.Round(time.Millisecond), float64(n)/took.Seconds())
	}
	if auditEvents == 0 {
		return f, nil
	}
	if f.BigDeepToken, err = tokens.middle(ctx, c, f.BigAudit.GetId(), logw); err != nil {
		return nil, err
	}
	if f.SmallDeepToken, err = tokens.middle(ctx, c, f.SmallAudit.GetId(), logw); err != nil {
		return nil, err
	}
	return f, nil
}

// tokenCache keeps the deep page tokens found by paging, by tenant, in a
// file: paging half way down a log of 10M events takes 10 000 pages, and
// a kept database keeps its logs. A token stays a deep page's as its log
// grows (it names a position, newest first).
type tokenCache struct {
	path   string
	tokens map[string]string
}

func loadTokenCache(path string) *tokenCache {
	c := &tokenCache{path: path, tokens: map[string]string{}}
	if b, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(b, &c.tokens) // a damaged cache is paged again
	}
	return c
}

func (c *tokenCache) middle(ctx context.Context, cl clients, tenantID string, logw io.Writer) (string, error) {
	if t, ok := c.tokens[tenantID]; ok {
		return t, nil
	}
	start := time.Now()
	t, err := middleToken(ctx, cl, tenantID)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(logw, "  paged to the middle of %s's log in %s\n", tenantID, time.Since(start).Round(time.Millisecond))
	c.tokens[tenantID] = t
	b, _ := json.MarshalIndent(c.tokens, "", "  ")
	return t, os.WriteFile(c.path, b, 0o644)
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

// seedOptions say how seedAudit builds its events.
type seedOptions struct {
	// Batch is the events appended per transaction (default seedBatch).
	Batch int
	// ExternalIDs gives each event an idempotency key, as products send.
	ExternalIDs bool
	// ReceiveTime, when set, is the receive time of the j-th event (else
	// now): it decides the monthly partition an event lands in.
	ReceiveTime func(j int) time.Time
	// Prefix sets the events' external ids apart from other seeds'.
	Prefix string
	// DatabaseURL, when set, is where ANALYZE runs after the seed, on
	// the audit log's tables.
	DatabaseURL string
}

// seedBatch is the events appended per transaction when seeding: larger
// than an API batch (500), since the seed appends to one log, which
// takes one transaction at a time.
const seedBatch = 5000

// seedAudit appends n events to a tenant's log through the service's own
// audit log code (persistence.AuditLog.Append in a transaction of
// Store.Atomically, as the service's RecordAuditEvents does), so the tree
// is exactly what the API would have built (and VerifyAuditChain accepts
// it), without n/500 round trips of JSON. One log takes one transaction
// at a time, so a log is seeded sequentially; the next batch is built
// while the database writes the last one.
func seedAudit(ctx context.Context, db *persistence.DB, tenantID string, n int, o seedOptions, logw io.Writer) error {
	store := db.Store()
	if _, err := store.Tenants().Get(ctx, tenantID); err != nil {
		return fmt.Errorf("tenant %s: %w", tenantID, err)
	}
	if o.Batch <= 0 {
		o.Batch = seedBatch
	}
	if o.Prefix == "" {
		o.Prefix = "seed-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
	}
	actions := []string{"document.created", "document.updated", "document.shared", "user.login", "report.exported"}
	cruds := []string{"c", "u", "u", "r", "r"}
	now := time.Now().UTC().Truncate(time.Microsecond)
	build := func(done, size int) []*domain.AuditEvent {
		events := make([]*domain.AuditEvent, size)
		for i := range events {
			j := done + i
			a := j % len(actions)
			receive := now
			if o.ReceiveTime != nil {
				receive = o.ReceiveTime(j).UTC().Truncate(time.Microsecond)
			}
			events[i] = &domain.AuditEvent{
				ID: domain.NewID(), TenantID: tenantID, Product: benchProduct, Action: actions[a], CRUD: cruds[a],
				Actor:       domain.AuditActor{ID: "user-" + strconv.Itoa(j%97), Name: "User " + strconv.Itoa(j%97), Type: "user"},
				Target:      domain.AuditTarget{ID: "doc-" + strconv.Itoa(j%1009), Type: "document", Name: "Document " + strconv.Itoa(j%1009)},
				SourceIP:    "192.0.2." + strconv.Itoa(j%250+1),
				Description: "benchmark seed event",
				Fields:      map[string]string{"seed": "bench", "n": strconv.Itoa(j)},
				OccurTime:   receive.Add(-time.Duration(j%1000) * time.Millisecond),
				ReceiveTime: receive,
			}
			if o.ExternalIDs {
				events[i].ExternalID = o.Prefix + strconv.Itoa(j)
			}
		}
		return events
	}
	start := time.Now()
	next := make(chan []*domain.AuditEvent, 1)
	go func() {
		defer close(next)
		for done := 0; done < n; done += o.Batch {
			select {
			case next <- build(done, min(o.Batch, n-done)):
			case <-ctx.Done():
				return
			}
		}
	}()
	done, reported := 0, 0
	for events := range next {
		err := store.Atomically(ctx, func(r domain.Repositories) error { return r.Audit().Append(ctx, events) })
		if err != nil {
			return fmt.Errorf("append events: %w", err)
		}
		done += len(events)
		if done-reported >= 250_000 || done == n {
			reported = done
			fmt.Fprintf(logw, "  seeded %d/%d events (%.0f events/s)\n", done, n, float64(done)/time.Since(start).Seconds())
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if o.DatabaseURL == "" {
		return nil
	}
	// As autovacuum would soon after a bulk load: the planner needs to
	// know how large the tables have grown.
	return analyze(ctx, o.DatabaseURL, "audit_events", "audit_tree_hashes", "audit_external_ids", "audit_chain_heads")
}

// analyze runs ANALYZE on tables, on a connection of its own: on a large
// database it takes longer than the service pool's read timeout.
func analyze(ctx context.Context, dbURL string, tables ...string) error {
	db := sql.OpenDB(pgdriver.NewConnector(pgdriver.WithDSN(dbURL), pgdriver.WithReadTimeout(time.Hour)))
	defer db.Close()
	start := time.Now()
	if _, err := db.ExecContext(ctx, "ANALYZE "+strings.Join(tables, ", ")); err != nil {
		return fmt.Errorf("analyze %s: %w", strings.Join(tables, ", "), err)
	}
	if d := time.Since(start); d > 5*time.Second {
		fmt.Fprintf(os.Stderr, "  analyzed %s in %s\n", strings.Join(tables, ", "), d.Round(time.Second))
	}
	return nil
}
