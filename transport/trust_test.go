package transport_test

// The trust model, tried as an attacker would: tenant A's principals get
// the most powerful credentials they can, through every RPC that creates or
// changes a credential or a grant, and then use whatever they got against
// tenant B through every RPC of the contract. Nothing of B may come back
// and nothing of B may change; what another tenant has and what does not
// exist look the same; refusals land where the operator and the acting
// tenant see them, never in the target's chain, and in bounded numbers.

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
	"github.com/tenant-registry/tenant-registry/transport"
)

// contractProcedures lists every RPC of the contract, read from the
// descriptors of package tenantregistry.v1, so that a new RPC is covered
// (or fails a completeness check) without editing a list.
func contractProcedures() []string {
	var out []string
	protoregistry.GlobalFiles.RangeFilesByPackage("tenantregistry.v1", func(f protoreflect.FileDescriptor) bool {
		for i := range f.Services().Len() {
			svc := f.Services().Get(i)
			for j := range svc.Methods().Len() {
				out = append(out, "/"+string(svc.FullName())+"/"+string(svc.Methods().Get(j).Name()))
			}
		}
		return true
	})
	slices.Sort(out)
	return out
}

// victim is tenant B, as the attacker aims at it: its ids (assumed known:
// the worst case) and the secrets only its data holds.
type victim struct {
	tenantID, slug, keyID, key, externalID string
	secrets                                []string
}

// trustWorld is a server with authentication on, tenants A and B, and a
// platform admin.
type trustWorld struct {
	srv      *testserver.Server
	c        clients
	iss      *issuer
	admin    string // a platform admin's token
	tenantA  string
	b        victim
	audience string
}

func (w *trustWorld) as(tok string) context.Context {
	return context.WithValue(context.Background(), tokenKey{}, tok)
}

func (w *trustWorld) user(t *testing.T, sub, tenant string, roles ...string) string {
	return w.iss.token(t, sub, tenant, w.audience, time.Now().Add(time.Hour), roles...)
}

// key creates a key as tok and returns its id and plaintext.
func (w *trustWorld) key(t *testing.T, tok, tenant, name string, scopes ...string) (string, string) {
	t.Helper()
	res, err := w.c.keys.CreateApiKey(w.as(tok), &v1.CreateApiKeyRequest{TenantId: tenant, Name: name, Scopes: scopes})
	if err != nil {
		t.Fatalf("CreateApiKey(%s, %v): %v", tenant, scopes, err)
	}
	return res.GetApiKey().GetId(), res.GetPlaintextKey()
}

func newTrustWorld(t *testing.T, db *persistence.DB) *trustWorld {
	t.Helper()
	w := &trustWorld{iss: newIssuer(t), audience: "tenant-registry"}
	w.srv = testserver.StartWith(t, db, &transport.OIDCConfig{Issuer: w.iss.url, Audience: w.audience, TenantClaim: "tenant_id"})
	w.c = newClients(w.srv.URL)
	w.admin = w.user(t, "root", "", domain.RolePlatformAdmin)
	ctx := w.as(w.admin)
	for _, p := range []string{"analytics", "helpdesk"} {
		if _, err := w.c.catalog.CreateProduct(ctx, &v1.CreateProductRequest{Key: p, DisplayName: p}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := w.c.tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: "tenant-a", DisplayName: "Tenant A"})
	if err != nil {
		t.Fatal(err)
	}
	w.tenantA = a.GetTenant().GetId()
	b, err := w.c.tenants.CreateTenant(ctx, &v1.CreateTenantRequest{
		Slug: "victim-b", DisplayName: "Victim SECRET-DISPLAY", Metadata: map[string]string{"note": "SECRET-METADATA"},
	})
	if err != nil {
		t.Fatal(err)
	}
	w.b = victim{tenantID: b.GetTenant().GetId(), slug: "victim-b", externalID: "b-ext-1"}
	if _, err := w.c.entitlements.GrantEntitlement(ctx, &v1.GrantEntitlementRequest{TenantId: w.b.tenantID, Product: "analytics"}); err != nil {
		t.Fatal(err)
	}
	w.b.keyID, w.b.key = w.key(t, w.admin, w.b.tenantID, "SECRET-KEYNAME", "analytics:read", domain.ScopeKeysManage)
	if _, err := w.c.audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{Event: &v1.AuditEvent{
		TenantId: w.b.tenantID, Product: "analytics", Action: "report.exported", Crud: "r", Actor: &v1.AuditActor{Id: "b-user"},
		Description: "SECRET-AUDIT", Fields: map[string]string{"file": "SECRET-FIELD"}, ExternalId: w.b.externalID,
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.c.catalog.RequestProduct(ctx, &v1.RequestProductRequest{TenantId: w.b.tenantID, Product: "helpdesk", Note: "SECRET-NOTE"}); err != nil {
		t.Fatal(err)
	}
	w.b.secrets = []string{"victim-b", "SECRET-", w.b.key, w.b.key[:11]}
	return w
}

// snapshot is everything of B's the database holds, to tell whether
// anything changed.
func (w *trustWorld) snapshot(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	var out []string
	for _, q := range []string{
		"SELECT id, slug, display_name, status, metadata, update_time FROM tenants WHERE id = ?",
		"SELECT id, name, hash, scopes, expire_time, revoke_time FROM api_keys WHERE tenant_id = ? ORDER BY id",
		"SELECT product, status, source, expire_time, update_time FROM entitlements WHERE tenant_id = ? ORDER BY product",
		"SELECT seq, hash FROM audit_chain_heads WHERE tenant_id = ?",
		"SELECT id, status FROM product_requests WHERE tenant_id = ? ORDER BY id",
	} {
		rows, err := w.srv.DB.Bun().QueryContext(ctx, q, w.b.tenantID)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(vals)
			out = append(out, string(b))
		}
		rows.Close()
	}
	return strings.Join(out, "\n")
}

// leaked returns the first of B's secrets in what a call answered.
func (w *trustWorld) leaked(res proto.Message, err error) string {
	text := ""
	if res != nil {
		b, _ := protojson.Marshal(res)
		text = string(b)
	}
	if err != nil {
		text += err.Error()
	}
	for _, s := range w.b.secrets {
		if strings.Contains(text, s) {
			return s
		}
	}
	return ""
}

// attack is one RPC aimed at tenant B, answering what came back.
type attack func(ctx context.Context, c clients, b victim) (proto.Message, error)

// attacksOnB aims every RPC of the contract at B. A new RPC without an
// entry fails TestEscalation.
func attacksOnB() map[string]attack {
	name, admin := "Pwned", domain.ScopeAdmin
	return map[string]attack{
		tenantregistryv1connect.TenantServiceCreateTenantProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: "evil-" + uuid.NewString()[:8], DisplayName: "Evil"})
		},
		tenantregistryv1connect.TenantServiceGetTenantProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.tenants.GetTenant(ctx, &v1.GetTenantRequest{Id: b.tenantID})
		},
		tenantregistryv1connect.TenantServiceGetTenantBySlugProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.tenants.GetTenantBySlug(ctx, &v1.GetTenantBySlugRequest{Slug: b.slug})
		},
		tenantregistryv1connect.TenantServiceListTenantsProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.tenants.ListTenants(ctx, &v1.ListTenantsRequest{Query: "victim"})
		},
		tenantregistryv1connect.TenantServiceUpdateTenantProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.tenants.UpdateTenant(ctx, &v1.UpdateTenantRequest{Id: b.tenantID, DisplayName: &name})
		},
		tenantregistryv1connect.TenantServiceActivateTenantProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.tenants.ActivateTenant(ctx, &v1.ActivateTenantRequest{Id: b.tenantID})
		},
		tenantregistryv1connect.TenantServiceCancelTenantProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.tenants.CancelTenant(ctx, &v1.CancelTenantRequest{Id: b.tenantID})
		},
		tenantregistryv1connect.CatalogServiceListProductsProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.catalog.ListProducts(ctx, &v1.ListProductsRequest{})
		},
		tenantregistryv1connect.CatalogServiceCreateProductProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.catalog.CreateProduct(ctx, &v1.CreateProductRequest{Key: "evil-" + uuid.NewString()[:8], DisplayName: "Evil"})
		},
		tenantregistryv1connect.CatalogServiceUpdateProductProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.catalog.UpdateProduct(ctx, &v1.UpdateProductRequest{Key: "analytics", DisplayName: &name})
		},
		tenantregistryv1connect.CatalogServiceRequestProductProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.catalog.RequestProduct(ctx, &v1.RequestProductRequest{TenantId: b.tenantID, Product: "analytics", Note: "evil"})
		},
		tenantregistryv1connect.CatalogServiceListProductRequestsProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.catalog.ListProductRequests(ctx, &v1.ListProductRequestsRequest{})
		},
		tenantregistryv1connect.CatalogServiceStartTrialProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.catalog.StartTrial(ctx, &v1.StartTrialRequest{TenantId: b.tenantID, Product: "helpdesk"})
		},
		tenantregistryv1connect.EntitlementServiceListEntitlementsProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.entitlements.ListEntitlements(ctx, &v1.ListEntitlementsRequest{TenantId: b.tenantID})
		},
		tenantregistryv1connect.EntitlementServiceCheckEntitlementProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.entitlements.CheckEntitlement(ctx, &v1.CheckEntitlementRequest{TenantId: b.tenantID, Product: "analytics"})
		},
		tenantregistryv1connect.EntitlementServiceGrantEntitlementProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.entitlements.GrantEntitlement(ctx, &v1.GrantEntitlementRequest{TenantId: b.tenantID, Product: "helpdesk"})
		},
		tenantregistryv1connect.EntitlementServiceRevokeEntitlementProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.entitlements.RevokeEntitlement(ctx, &v1.RevokeEntitlementRequest{TenantId: b.tenantID, Product: "analytics"})
		},
		tenantregistryv1connect.ApiKeyServiceCreateApiKeyProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: b.tenantID, Name: "evil", Scopes: []string{admin}})
		},
		tenantregistryv1connect.ApiKeyServiceListApiKeysProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.keys.ListApiKeys(ctx, &v1.ListApiKeysRequest{TenantId: b.tenantID})
		},
		tenantregistryv1connect.ApiKeyServiceGetApiKeyProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.keys.GetApiKey(ctx, &v1.GetApiKeyRequest{Id: b.keyID})
		},
		tenantregistryv1connect.ApiKeyServiceRevokeApiKeyProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.keys.RevokeApiKey(ctx, &v1.RevokeApiKeyRequest{Id: b.keyID})
		},
		tenantregistryv1connect.ApiKeyServiceRotateApiKeyProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.keys.RotateApiKey(ctx, &v1.RotateApiKeyRequest{Id: b.keyID})
		},
		tenantregistryv1connect.ApiKeyServiceDisableApiKeyProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.keys.DisableApiKey(ctx, &v1.DisableApiKeyRequest{Id: b.keyID})
		},
		tenantregistryv1connect.ApiKeyServiceEnableApiKeyProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.keys.EnableApiKey(ctx, &v1.EnableApiKeyRequest{Id: b.keyID})
		},
		tenantregistryv1connect.ApiKeyServiceUpdateApiKeyProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.keys.UpdateApiKey(ctx, &v1.UpdateApiKeyRequest{
				Id: b.keyID, Scopes: []string{admin}, Metadata: map[string]string{"owner": "evil"},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"scopes", "metadata"}},
			})
		},
		tenantregistryv1connect.ApiKeyServiceVerifyApiKeyProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.keys.VerifyApiKey(ctx, &v1.VerifyApiKeyRequest{Key: b.key})
		},
		tenantregistryv1connect.ApiKeyServiceImportApiKeysProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.keys.ImportApiKeys(ctx, &v1.ImportApiKeysRequest{Keys: []*v1.ImportedApiKey{{
				TenantId: b.tenantID, Name: "evil", Prefix: "bp_evil0000", Hash: anyArgon2Hash, Scopes: []string{"analytics:read"},
			}}})
		},
		tenantregistryv1connect.AuditServiceRecordAuditEventProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			// A replay of B's stored event's external id: answered with the
			// stored event to whoever may append it.
			return c.audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{Event: &v1.AuditEvent{
				TenantId: b.tenantID, Product: "analytics", Action: "report.exported", Crud: "r",
				Actor: &v1.AuditActor{Id: "evil"}, ExternalId: b.externalID,
			}})
		},
		tenantregistryv1connect.AuditServiceRecordAuditEventsProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.audit.RecordAuditEvents(ctx, &v1.RecordAuditEventsRequest{Events: []*v1.AuditEvent{{
				TenantId: b.tenantID, Product: "analytics", Action: "report.exported", Crud: "r",
				Actor: &v1.AuditActor{Id: "evil"}, ExternalId: b.externalID,
			}}})
		},
		tenantregistryv1connect.AuditServiceListAuditEventsProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.audit.ListAuditEvents(ctx, &v1.ListAuditEventsRequest{TenantId: b.tenantID})
		},
		tenantregistryv1connect.AuditServiceExportAuditEventsProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			stream, err := c.audit.ExportAuditEvents(ctx, &v1.ExportAuditEventsRequest{TenantId: b.tenantID})
			if err != nil {
				return nil, err
			}
			all := &v1.ListAuditEventsResponse{}
			for stream.Receive() {
				all.Events = append(all.Events, stream.Msg().GetEvent())
			}
			return all, stream.Err()
		},
		tenantregistryv1connect.AuditServiceVerifyAuditChainProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.audit.VerifyAuditChain(ctx, &v1.VerifyAuditChainRequest{TenantId: b.tenantID})
		},
		tenantregistryv1connect.AuditServiceGetAuditCheckpointProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.audit.GetAuditCheckpoint(ctx, &v1.GetAuditCheckpointRequest{TenantId: b.tenantID})
		},
		tenantregistryv1connect.AuditServiceProveAuditEventProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.audit.ProveAuditEvent(ctx, &v1.ProveAuditEventRequest{TenantId: b.tenantID, Seq: 1})
		},
		tenantregistryv1connect.AuditServiceProveAuditConsistencyProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.audit.ProveAuditConsistency(ctx, &v1.ProveAuditConsistencyRequest{TenantId: b.tenantID, OldSize: 1})
		},
		tenantregistryv1connect.AuditServiceGetAuditRetentionProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.audit.GetAuditRetention(ctx, &v1.GetAuditRetentionRequest{TenantId: b.tenantID})
		},
		tenantregistryv1connect.AuditServiceSetAuditRetentionProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			days := int32(1)
			return c.audit.SetAuditRetention(ctx, &v1.SetAuditRetentionRequest{TenantId: b.tenantID, RetentionDays: &days})
		},
		tenantregistryv1connect.AuditServiceGetAuditVerifierKeyProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			return c.audit.GetAuditVerifierKey(ctx, &v1.GetAuditVerifierKeyRequest{})
		},
		tenantregistryv1connect.ChangeServiceWatchChangesProcedure: func(ctx context.Context, c clients, b victim) (proto.Message, error) {
			// A watcher would hear of B's changes (ids only): the first
			// message says whether the stream opened at all.
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			stream, err := c.changes.WatchChanges(ctx, &v1.WatchChangesRequest{})
			if err != nil {
				return nil, err
			}
			defer stream.Close()
			if stream.Receive() {
				return stream.Msg(), nil
			}
			return nil, stream.Err()
		},
	}
}

// anyArgon2Hash is a well-formed stored hash of the previous implementation.
var anyArgon2Hash = "argon2id|c2FsdHNhbHRzYWx0|" + strings.Repeat("A", 43)

// scopeUniverse is every scope an attacker would ask for: each platform
// scope, each tenant scope, and product scopes.
var scopeUniverse = []string{
	domain.ScopeAdmin, domain.ScopeVerify, domain.ScopeAuditWrite, domain.ScopeEntitlementsRead, "product:analytics",
	domain.ScopeTenantRead, domain.ScopeKeysManage, domain.ScopeAuditRead, "analytics:read", "analytics:admin",
}

// principal is one kind of caller of the suite and what it holds: the
// scopes it may put on a key of its own tenant.
type principal struct {
	name  string
	token string
	holds []string
}

// public are the RPCs that answer every authenticated caller alike and
// hold no tenant's data.
var public = map[string]bool{
	tenantregistryv1connect.CatalogServiceListProductsProcedure:      true, // the catalog
	tenantregistryv1connect.AuditServiceGetAuditVerifierKeyProcedure: true, // a public key
}

// TestEscalation: for every kind of principal, through every RPC that
// creates or changes a credential or a grant, ask for more than it holds;
// then use everything obtained against every RPC on tenant B.
func TestEscalation(t *testing.T) {
	attacks := attacksOnB()
	for _, proc := range contractProcedures() {
		if attacks[proc] == nil {
			t.Errorf("%s has no attack on tenant B in attacksOnB", proc)
		}
	}
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		w := newTrustWorld(t, db)
		adminA := w.user(t, "alice", w.tenantA, domain.RoleTenantAdmin)
		productScopes := []string{"analytics:read", "analytics:admin"}
		allTenantScopes := append([]string{domain.ScopeTenantRead, domain.ScopeKeysManage, domain.ScopeAuditRead}, productScopes...)
		tenantKey := func(scopes ...string) principal {
			_, key := w.key(t, adminA, w.tenantA, "automation", scopes...)
			return principal{name: "A key with " + strings.Join(scopes, "+"), token: key, holds: scopes}
		}
		platformKey := func(scopes ...string) principal {
			_, key := w.key(t, w.admin, domain.PlatformTenantID, "product", scopes...)
			return principal{name: "platform key with " + strings.Join(scopes, "+"), token: key}
		}
		// A tenant key whose row carries platform scopes, as one written
		// before the trust model or by a bug would: they must count for
		// nothing.
		staleID, staleKey := w.key(t, adminA, w.tenantA, "stale", "analytics:read")
		stale := []string{"analytics:read", domain.ScopeAdmin, domain.ScopeVerify, domain.ScopeAuditWrite, domain.ScopeEntitlementsRead, "product:analytics"}
		staleJSON, _ := json.Marshal(stale)
		if _, err := db.Bun().NewRaw("UPDATE api_keys SET scopes = ? WHERE id = ?", string(staleJSON), staleID).Exec(context.Background()); err != nil {
			t.Fatal(err)
		}
		principals := []principal{
			{name: "tenant admin of A", token: adminA, holds: allTenantScopes},
			{name: "member of A", token: w.user(t, "mallory", w.tenantA)},
			{name: "user of the platform tenant", token: w.user(t, "insider", domain.PlatformTenantID, domain.RoleTenantAdmin)},
			tenantKey(domain.ScopeTenantRead),
			tenantKey(domain.ScopeKeysManage),
			tenantKey(domain.ScopeAuditRead),
			tenantKey(domain.ScopeKeysManage, "analytics:read"),
			tenantKey(allTenantScopes...),
			{name: "A key with stale platform scopes", token: staleKey, holds: []string{"analytics:read"}},
			platformKey(domain.ScopeVerify),
			platformKey(domain.ScopeAuditWrite, "product:analytics"),
			platformKey(domain.ScopeEntitlementsRead),
		}
		fullIDOfA, _ := w.key(t, w.admin, w.tenantA, "full", allTenantScopes...)
		verifyID, _ := w.key(t, w.admin, domain.PlatformTenantID, "verifier", domain.ScopeVerify)
		before := w.snapshot(t)

		for _, p := range principals {
			ctx := w.as(p.token)
			obtained := []string{p.token}
			// keep records what came back: the key must be A's and carry
			// only what p holds.
			keep := func(what string, k *v1.ApiKey, plaintext string, err error) {
				if err != nil {
					switch connect.CodeOf(err) {
					case connect.CodePermissionDenied, connect.CodeNotFound, connect.CodeInvalidArgument:
					case connect.CodeFailedPrecondition: // a key an earlier principal rotated away, rightly
					default:
						t.Errorf("%s: %s: %v, want a refusal", p.name, what, err)
					}
					return
				}
				if k.GetTenantId() != w.tenantA {
					t.Errorf("ESCALATION %s: %s gave a key of tenant %s", p.name, what, k.GetTenantId())
				}
				for _, s := range k.GetScopes() {
					if !slices.Contains(p.holds, s) {
						t.Errorf("ESCALATION %s: %s gave a key carrying %s, which it does not hold", p.name, what, s)
					}
				}
				obtained = append(obtained, plaintext)
			}
			for _, tenant := range []string{w.tenantA, w.b.tenantID, domain.PlatformTenantID} {
				for _, scope := range append(slices.Clone(scopeUniverse), "") {
					var scopes []string
					if scope != "" {
						scopes = []string{scope}
					}
					res, err := w.c.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: tenant, Name: "grab", Scopes: scopes})
					keep(fmt.Sprintf("CreateApiKey(%s, %v)", tenant, scopes), res.GetApiKey(), res.GetPlaintextKey(), err)
				}
			}
			for _, id := range []string{fullIDOfA, w.b.keyID, verifyID} {
				res, err := w.c.keys.RotateApiKey(ctx, &v1.RotateApiKeyRequest{Id: id, GracePeriod: nil})
				keep("RotateApiKey("+id+")", res.GetApiKey(), res.GetPlaintextKey(), err)
			}
			for _, tenant := range []string{w.tenantA, w.b.tenantID, domain.PlatformTenantID} {
				_, err := w.c.keys.ImportApiKeys(ctx, &v1.ImportApiKeysRequest{Keys: []*v1.ImportedApiKey{{
					TenantId: tenant, Name: "imported", Prefix: "bp_" + strings.ToLower(rand.Text()[:8]), Hash: anyArgon2Hash, Scopes: []string{domain.ScopeAdmin},
				}}})
				if err == nil {
					t.Errorf("ESCALATION %s: ImportApiKeys into %s accepted", p.name, tenant)
				}
			}
			for _, tenant := range []string{w.tenantA, w.b.tenantID} {
				if _, err := w.c.entitlements.GrantEntitlement(ctx, &v1.GrantEntitlementRequest{TenantId: tenant, Product: "helpdesk"}); err == nil {
					t.Errorf("ESCALATION %s: GrantEntitlement on %s accepted", p.name, tenant)
				}
			}

			// Platform keys act on every tenant by design (a product
			// verifies B's keys and records B's events); the attack on B
			// is for A's principals and what they obtained.
			if strings.HasPrefix(p.name, "platform key") {
				if len(obtained) > 1 {
					t.Errorf("ESCALATION %s obtained %d credentials", p.name, len(obtained)-1)
				}
				continue
			}
			for i, cred := range obtained {
				who := p.name
				if i > 0 {
					who += fmt.Sprintf(", with credential %d it obtained", i)
				}
				for _, proc := range contractProcedures() {
					res, err := attacks[proc](w.as(cred), w.c, w.b)
					if s := w.leaked(res, err); s != "" {
						t.Errorf("LEAK %s: %s returned B's %q: %v %v", who, proc, s, res, err)
					}
					if public[proc] {
						continue
					}
					if code := connect.CodeOf(err); err == nil || (code != connect.CodeNotFound && code != connect.CodePermissionDenied) {
						t.Errorf("CROSSED %s: %s on tenant B answered %v, want NotFound or PermissionDenied", who, proc, err)
					}
				}
			}
		}
		if after := w.snapshot(t); after != before {
			t.Errorf("tenant B changed under attack:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
}

// TestNoExistenceOracle: a caller that may not read another tenant's data
// gets, for its existing ids and slugs, exactly the answer it gets for ids
// and slugs that exist nowhere.
func TestNoExistenceOracle(t *testing.T) {
	type probe struct {
		name string
		call func(ctx context.Context, c clients, b victim) (proto.Message, error)
	}
	attacks := attacksOnB()
	named := []string{ // the RPCs that take a tenant id, a key id or a slug
		tenantregistryv1connect.TenantServiceGetTenantProcedure,
		tenantregistryv1connect.TenantServiceGetTenantBySlugProcedure,
		tenantregistryv1connect.TenantServiceUpdateTenantProcedure,
		tenantregistryv1connect.TenantServiceActivateTenantProcedure,
		tenantregistryv1connect.TenantServiceCancelTenantProcedure,
		tenantregistryv1connect.CatalogServiceRequestProductProcedure,
		tenantregistryv1connect.CatalogServiceStartTrialProcedure,
		tenantregistryv1connect.EntitlementServiceListEntitlementsProcedure,
		tenantregistryv1connect.EntitlementServiceCheckEntitlementProcedure,
		tenantregistryv1connect.EntitlementServiceGrantEntitlementProcedure,
		tenantregistryv1connect.EntitlementServiceRevokeEntitlementProcedure,
		tenantregistryv1connect.ApiKeyServiceCreateApiKeyProcedure,
		tenantregistryv1connect.ApiKeyServiceListApiKeysProcedure,
		tenantregistryv1connect.ApiKeyServiceGetApiKeyProcedure,
		tenantregistryv1connect.ApiKeyServiceRevokeApiKeyProcedure,
		tenantregistryv1connect.ApiKeyServiceRotateApiKeyProcedure,
		tenantregistryv1connect.ApiKeyServiceDisableApiKeyProcedure,
		tenantregistryv1connect.ApiKeyServiceEnableApiKeyProcedure,
		tenantregistryv1connect.ApiKeyServiceUpdateApiKeyProcedure,
		tenantregistryv1connect.AuditServiceListAuditEventsProcedure,
		tenantregistryv1connect.AuditServiceExportAuditEventsProcedure,
		tenantregistryv1connect.AuditServiceVerifyAuditChainProcedure,
		tenantregistryv1connect.AuditServiceGetAuditCheckpointProcedure,
		tenantregistryv1connect.AuditServiceProveAuditEventProcedure,
		tenantregistryv1connect.AuditServiceProveAuditConsistencyProcedure,
		tenantregistryv1connect.AuditServiceGetAuditRetentionProcedure,
		tenantregistryv1connect.AuditServiceSetAuditRetentionProcedure,
	}
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		w := newTrustWorld(t, db)
		adminA := w.user(t, "alice", w.tenantA, domain.RoleTenantAdmin)
		_, keyA := w.key(t, adminA, w.tenantA, "automation", domain.ScopeTenantRead, domain.ScopeKeysManage, domain.ScopeAuditRead)
		_, verifier := w.key(t, w.admin, domain.PlatformTenantID, "verifier", domain.ScopeVerify)
		callers := map[string]string{
			"tenant admin of A": adminA, "member of A": w.user(t, "mallory", w.tenantA),
			"tenant key of A": keyA, "platform key with registry:verify": verifier,
		}
		nowhere := victim{tenantID: uuid.NewString(), slug: "no-such-tenant", keyID: uuid.NewString()}
		for _, proc := range named {
			for who, tok := range callers {
				resB, errB := attacks[proc](w.as(tok), w.c, w.b)
				resN, errN := attacks[proc](w.as(tok), w.c, nowhere)
				if errB == nil || errN == nil {
					t.Errorf("%s as %s: B answered %v / %v, nowhere %v / %v; want both refused", proc, who, resB, errB, resN, errN)
					continue
				}
				if connect.CodeOf(errB) != connect.CodeNotFound || errB.Error() != errN.Error() {
					t.Errorf("ORACLE %s as %s: B's answer %q, a missing one's %q", proc, who, errB, errN)
				}
			}
		}
	})
}

// TestRefusalsStayOutOfTheTargetsLog: refused calls never write into the
// target tenant's chain, are recorded without the caller's text where the
// operator and (when it may know) the acting tenant see them, and a burst
// of refusals adds a bounded number of events.
func TestRefusalsStayOutOfTheTargetsLog(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		w := newTrustWorld(t, db)
		member := w.user(t, "mallory", w.tenantA)
		head := func(tenant string) int64 {
			var seq int64
			err := db.Bun().NewRaw("SELECT coalesce(max(seq), 0) FROM audit_events WHERE tenant_id = ?", tenant).Scan(context.Background(), &seq)
			if err != nil {
				t.Fatal(err)
			}
			return seq
		}
		events := func(tenant string) []*v1.AuditEvent {
			res, err := w.c.audit.ListAuditEvents(w.as(w.admin), &v1.ListAuditEventsRequest{TenantId: tenant, PageSize: 500})
			if err != nil {
				t.Fatal(err)
			}
			return res.GetEvents()
		}
		bHead, aHead, platformHead := head(w.b.tenantID), head(w.tenantA), head("")
		spam := "URGENT: call +1-555-0100 to keep your account"

		// 1,000 refused changes of B by A's member, with text of its own:
		// B's chain does not move, the platform's records one.
		for range 1000 {
			_, err := w.c.tenants.UpdateTenant(w.as(member), &v1.UpdateTenantRequest{Id: w.b.tenantID, DisplayName: &spam})
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("UpdateTenant of B as A's member: %v, want NotFound", err)
			}
		}
		if got := head(w.b.tenantID); got != bHead {
			t.Errorf("B's chain grew from %d to %d events under refused calls", bHead, got)
		}
		if got := head(""); got != platformHead+1 {
			t.Errorf("the platform chain grew by %d events for 1,000 identical refusals, want 1", got-platformHead)
		}
		// 1,000 refused changes of A itself (the member may see A, so it
		// is told PermissionDenied): one event, in A's chain.
		for range 1000 {
			_, err := w.c.tenants.UpdateTenant(w.as(member), &v1.UpdateTenantRequest{Id: w.tenantA, DisplayName: &spam})
			if connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Fatalf("UpdateTenant of A as A's member: %v, want PermissionDenied", err)
			}
		}
		if got := head(w.tenantA); got != aHead+1 {
			t.Errorf("A's chain grew by %d events for 1,000 identical refusals, want 1", got-aHead)
		}
		// 1,000 refusals on 1,000 different targets: a few events, not 1,000.
		for range 1000 {
			_, _ = w.c.tenants.CancelTenant(w.as(member), &v1.CancelTenantRequest{Id: uuid.NewString()})
		}
		if grew := head("") - platformHead; grew > 12 {
			t.Errorf("the platform chain grew by %d events for 1,000 refusals on distinct targets, want at most a dozen", grew)
		}
		for _, e := range append(events(""), events(w.tenantA)...) {
			if !e.GetIsFailure() {
				continue
			}
			text, _ := protojson.Marshal(e)
			if strings.Contains(string(text), "URGENT") || strings.Contains(string(text), "+1-555") {
				t.Errorf("a refusal event carries the caller's text: %s", text)
			}
			if e.GetActor().GetId() != "mallory" || e.GetFields()["permission"] == "" {
				t.Errorf("a refusal event without its actor or permission: %s", text)
			}
		}
		// The refusal of a change of B names B only by id, and only in
		// the platform chain, which tenants cannot read.
		var found bool
		for _, e := range events("") {
			if e.GetIsFailure() && e.GetAction() == "tenant.updated" && e.GetTarget().GetId() == w.b.tenantID {
				found = true
			}
		}
		if !found {
			t.Error("the refused update of B is not in the platform chain")
		}
		if _, err := w.c.audit.ListAuditEvents(w.as(w.user(t, "alice", w.tenantA, domain.RoleTenantAdmin)), &v1.ListAuditEventsRequest{}); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("a tenant admin reading the platform chain: %v, want PermissionDenied", err)
		}

		// One limiter serves every service: an actor refused 30 times in
		// each of five services in a minute still adds at most its budget.
		w.srv.Clock.Advance(time.Minute)
		platformHead = head("")
		probe := w.user(t, "probe", w.tenantA, domain.RoleTenantAdmin)
		for i := range 30 {
			id, product := uuid.NewString(), fmt.Sprintf("product-%03d", i)
			ctx := w.as(probe)
			_, _ = w.c.tenants.UpdateTenant(ctx, &v1.UpdateTenantRequest{Id: id, DisplayName: &spam})
			_, _ = w.c.catalog.StartTrial(ctx, &v1.StartTrialRequest{TenantId: id, Product: product})
			_, _ = w.c.entitlements.GrantEntitlement(ctx, &v1.GrantEntitlementRequest{TenantId: id, Product: product})
			_, _ = w.c.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: id, Name: "x"})
			_, _ = w.c.audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{Event: productEvent(id, "x.y")})
		}
		if grew := head("") - platformHead; grew > 10 {
			t.Errorf("150 refusals of one actor across five services added %d events, want at most 10", grew)
		}
	})
}

// TestKeyKinds: platform scopes go on platform keys only, whoever asks
// (a platform admin holds them all, and still cannot put them on a tenant
// key); tenant scopes on tenant keys only; registry and product scopes must
// name something that exists. Each key says its kind.
func TestKeyKinds(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		w := newTrustWorld(t, db)
		ctx := w.as(w.admin)
		cases := []struct {
			tenant string
			scopes []string
			code   connect.Code // 0: created
			kind   v1.ApiKeyKind
			names  string // what the error must name
		}{
			{w.tenantA, []string{"analytics:read", domain.ScopeKeysManage}, 0, v1.ApiKeyKind_API_KEY_KIND_TENANT, ""},
			{domain.PlatformTenantID, []string{domain.ScopeVerify, domain.ScopeAuditWrite, "product:analytics"}, 0, v1.ApiKeyKind_API_KEY_KIND_PLATFORM, ""},
			{w.tenantA, []string{domain.ScopeAdmin}, connect.CodePermissionDenied, 0, domain.ScopeAdmin},
			{w.tenantA, []string{domain.ScopeVerify}, connect.CodePermissionDenied, 0, domain.ScopeVerify},
			{w.tenantA, []string{domain.ScopeAuditWrite}, connect.CodePermissionDenied, 0, domain.ScopeAuditWrite},
			{w.tenantA, []string{domain.ScopeEntitlementsRead}, connect.CodePermissionDenied, 0, domain.ScopeEntitlementsRead},
			{w.tenantA, []string{"product:analytics"}, connect.CodePermissionDenied, 0, "product:analytics"},
			{domain.PlatformTenantID, []string{domain.ScopeKeysManage}, connect.CodeInvalidArgument, 0, domain.ScopeKeysManage},
			{domain.PlatformTenantID, []string{"product:no-such-product"}, connect.CodeInvalidArgument, 0, "product:no-such-product"},
			{domain.PlatformTenantID, []string{"product:"}, connect.CodeInvalidArgument, 0, "scopes"},
			{w.tenantA, []string{"registry:verfy"}, connect.CodeInvalidArgument, 0, "registry:verfy"},
		}
		for _, tc := range cases {
			res, err := w.c.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: tc.tenant, Name: "k", Scopes: tc.scopes})
			if tc.code == 0 {
				if err != nil || res.GetApiKey().GetKind() != tc.kind {
					t.Errorf("CreateApiKey(%s, %v): %v %v, want a key of kind %v", tc.tenant, tc.scopes, res.GetApiKey(), err, tc.kind)
				}
				continue
			}
			if connect.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.names) {
				t.Errorf("CreateApiKey(%s, %v): %v, want %v naming %s", tc.tenant, tc.scopes, err, tc.code, tc.names)
			}
		}
		_, err := w.c.keys.ImportApiKeys(ctx, &v1.ImportApiKeysRequest{Keys: []*v1.ImportedApiKey{{
			TenantId: w.tenantA, Name: "old", Prefix: "bp_old00000", Hash: anyArgon2Hash, Scopes: []string{domain.ScopeAdmin},
		}}})
		if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), domain.ScopeAdmin) {
			t.Errorf("importing a tenant key with %s: %v, want PermissionDenied naming it", domain.ScopeAdmin, err)
		}
		// The platform tenant is nobody's to freeze.
		if _, err := w.c.tenants.CancelTenant(ctx, &v1.CancelTenantRequest{Id: domain.PlatformTenantID}); connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Errorf("CancelTenant(platform): %v, want FailedPrecondition", err)
		}
		// Nor is the registry's own product name anyone's to take.
		if _, err := w.c.catalog.CreateProduct(ctx, &v1.CreateProductRequest{Key: "tenant-registry", DisplayName: "Fake"}); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("CreateProduct(tenant-registry): %v, want InvalidArgument", err)
		}
	})
}

// TestKeysDoNotOutliveTheirCreator: a key hands out nothing that outlives
// it, in time or in revocation. A key that expires cannot create or
// rotate a key that expires later (or never); revoking a key revokes the
// keys it created, and theirs; a rotation hands the old key's creations
// to its successor.
func TestKeysDoNotOutliveTheirCreator(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		w := newTrustWorld(t, db)
		adminA := w.user(t, "alice", w.tenantA, domain.RoleTenantAdmin)
		now := w.srv.Clock.Now()
		scopes := []string{domain.ScopeKeysManage, "analytics:read"}
		create := func(tok string, expire time.Time) (*v1.CreateApiKeyResponse, error) {
			req := &v1.CreateApiKeyRequest{TenantId: w.tenantA, Name: "k", Scopes: scopes}
			if !expire.IsZero() {
				req.ExpireTime = timestamppb.New(expire)
			}
			return w.c.keys.CreateApiKey(w.as(tok), req)
		}
		parent, err := create(adminA, now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		p := parent.GetPlaintextKey()
		for name, expire := range map[string]time.Time{"no expiry": {}, "a later expiry": now.Add(2 * time.Hour)} {
			if _, err := create(p, expire); connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "outlives") {
				t.Errorf("a one-hour key creating a key with %s: %v, want PermissionDenied", name, err)
			}
		}
		unbounded, err := create(adminA, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.c.keys.RotateApiKey(w.as(p), &v1.RotateApiKeyRequest{Id: unbounded.GetApiKey().GetId()}); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("a one-hour key rotating a key that never expires: %v, want PermissionDenied", err)
		}
		child, err := create(p, now.Add(30*time.Minute))
		if err != nil {
			t.Fatalf("a child within the parent's lifetime: %v", err)
		}
		grandchild, err := create(child.GetPlaintextKey(), now.Add(20*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		// The parent is rotated by the admin: its successor inherits the child.
		rotated, err := w.c.keys.RotateApiKey(w.as(adminA), &v1.RotateApiKeyRequest{Id: parent.GetApiKey().GetId()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.c.keys.RevokeApiKey(w.as(adminA), &v1.RevokeApiKeyRequest{Id: rotated.GetApiKey().GetId()}); err != nil {
			t.Fatal(err)
		}
		for name, key := range map[string]string{"child": child.GetPlaintextKey(), "grandchild": grandchild.GetPlaintextKey()} {
			v, err := w.c.keys.VerifyApiKey(w.as(w.admin), &v1.VerifyApiKeyRequest{Key: key})
			if err != nil || v.GetCode() != v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_REVOKED {
				t.Errorf("the %s after its creator's successor was revoked: %v, %v; want REVOKED", name, v.GetCode(), err)
			}
		}
		events, err := w.c.audit.ListAuditEvents(w.as(w.admin), &v1.ListAuditEventsRequest{TenantId: w.tenantA, Action: "api_key.revoked"})
		if err != nil || len(events.GetEvents()) != 3 {
			t.Errorf("revocation events: %d, %v; want one per revoked key (3)", len(events.GetEvents()), err)
		}
	})
}

// TestMissingKeysLookLikeOtherTenantsKeys: a key of another tenant and a
// key that does not exist get the same answer and leave the same trace:
// no message, audit event in the caller's log or spent refusal budget
// tells them apart.
func TestMissingKeysLookLikeOtherTenantsKeys(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		w := newTrustWorld(t, db)
		adminA := w.user(t, "alice", w.tenantA, domain.RoleTenantAdmin)
		count := func(tenant string) int {
			res, err := w.c.audit.ListAuditEvents(w.as(w.admin), &v1.ListAuditEventsRequest{TenantId: tenant, PageSize: 500})
			if err != nil {
				t.Fatal(err)
			}
			return len(res.GetEvents())
		}
		for _, id := range []string{w.b.keyID, uuid.NewString()} {
			platform, own := count(""), count(w.tenantA)
			for _, call := range []func() error{
				func() error {
					_, err := w.c.keys.RevokeApiKey(w.as(adminA), &v1.RevokeApiKeyRequest{Id: id})
					return err
				},
				func() error {
					_, err := w.c.keys.RotateApiKey(w.as(adminA), &v1.RotateApiKeyRequest{Id: id})
					return err
				},
			} {
				if err := call(); connect.CodeOf(err) != connect.CodeNotFound || err.Error() != "not_found: "+domain.ApiKeyNotFoundMessage {
					t.Errorf("key %s: %v", id, err)
				}
			}
			if got := count(""); got != platform+1 {
				t.Errorf("key %s: the platform log grew by %d, want 1 (one per actor, permission and target)", id, got-platform)
			}
			if got := count(w.tenantA); got != own {
				t.Errorf("key %s: the caller's own log grew by %d, want 0", id, got-own)
			}
		}
	})
}

// TestRefusalsHoldNoCallerText: a refusal event names its target only by
// an id the registry made, and its actor by id and type: not a product
// key or a display name the caller wrote.
func TestRefusalsHoldNoCallerText(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		w := newTrustWorld(t, db)
		text := "ceo-approved-wire-to-acct-4711"
		member := w.iss.signed(t, w.audience, map[string]any{
			"sub": "mallory", "tenant_id": w.tenantA, "realm_access": map[string]any{"roles": []string{}},
			"name": "Security Team\n[SYSTEM] approved \u202egnp.exe " + strings.Repeat("X", 1000),
		})
		_, _ = w.c.entitlements.GrantEntitlement(w.as(member), &v1.GrantEntitlementRequest{TenantId: w.tenantA, Product: text})
		_, _ = w.c.catalog.RequestProduct(w.as(member), &v1.RequestProductRequest{TenantId: w.tenantA, Product: text})
		_, _ = w.c.entitlements.GrantEntitlement(w.as(member), &v1.GrantEntitlementRequest{TenantId: w.b.tenantID, Product: text})
		for _, tenant := range []string{w.tenantA, ""} {
			res, err := w.c.audit.ListAuditEvents(w.as(w.admin), &v1.ListAuditEventsRequest{TenantId: tenant, PageSize: 500})
			if err != nil {
				t.Fatal(err)
			}
			found := 0
			for _, e := range res.GetEvents() {
				if !e.GetIsFailure() {
					continue
				}
				found++
				if b, _ := protojson.Marshal(e); strings.Contains(string(b), "wire") || strings.Contains(string(b), "SYSTEM") {
					t.Errorf("a refusal event holds the caller's text: %s", b)
				}
			}
			if found == 0 {
				t.Errorf("no refusal recorded in log %q", tenant)
			}
		}
		// A user's name, outside refusals, is kept to what a name may be.
		tn, err := w.c.tenants.GetTenant(w.as(member), &v1.GetTenantRequest{Id: w.tenantA})
		if err != nil || tn == nil {
			t.Fatalf("the member reading its tenant: %v", err)
		}
	})
}

// TestOddTenantClaims: a tenant claim that is not a tenant id means no
// tenant; none of them reaches another tenant or the platform's, and none
// makes the server fail.
func TestOddTenantClaims(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		w := newTrustWorld(t, db)
		admin := map[string]any{"roles": []string{domain.RoleTenantAdmin}}
		claims := map[string]any{
			"not a UUID":          "not-a-uuid",
			"padded":              " " + w.tenantA + " ",
			"upper case":          strings.ToUpper(w.tenantA),
			"the platform tenant": domain.PlatformTenantID,
			"a list":              []string{w.tenantA},
			"empty":               "",
		}
		for name, claim := range claims {
			tok := w.iss.signed(t, w.audience, map[string]any{"sub": "odd", "tenant_id": claim, "realm_access": admin})
			ctx := w.as(tok)
			calls := map[string]error{}
			_, calls["GetTenant(B)"] = w.c.tenants.GetTenant(ctx, &v1.GetTenantRequest{Id: w.b.tenantID})
			_, calls["CreateTenant"] = w.c.tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: "odd-claims", DisplayName: "x"})
			_, calls["CreateApiKey(platform)"] = w.c.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: domain.PlatformTenantID, Name: "x"})
			_, calls["ListTenants"] = w.c.tenants.ListTenants(ctx, &v1.ListTenantsRequest{})
			for call, err := range calls {
				if code := connect.CodeOf(err); err == nil || (code != connect.CodeNotFound && code != connect.CodePermissionDenied) {
					t.Errorf("tenant claim %s: %s answered %v", name, call, err)
				}
			}
		}
	})
}

// TestProductsDoNotWriteThePlatformLog: the platform's log holds the
// registry's own events, refusals included; a product's key may not add
// to it.
func TestProductsDoNotWriteThePlatformLog(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		w := newTrustWorld(t, db)
		_, product := w.key(t, w.admin, domain.PlatformTenantID, "analytics", domain.ScopeAuditWrite, "product:analytics")
		for _, tenant := range []string{"", domain.PlatformTenantID} {
			_, err := w.c.audit.RecordAuditEvent(w.as(product), &v1.RecordAuditEventRequest{Event: &v1.AuditEvent{
				TenantId: tenant, Product: "analytics", Action: "api_key.created", Crud: "c", Actor: &v1.AuditActor{Id: "root"}, IsFailure: true,
			}})
			if connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Errorf("a product's key appending to the platform log of tenant %q: %v, want PermissionDenied", tenant, err)
			}
		}
		if _, err := w.c.audit.RecordAuditEvent(w.as(product), &v1.RecordAuditEventRequest{Event: productEvent(w.b.tenantID, "report.viewed")}); err != nil {
			t.Errorf("a product's key appending to a tenant's log: %v", err)
		}
	})
}

// TestExportDownloadsAreAuthorised: the CSV and NDJSON downloads are
// authenticated and authorised as ExportAuditEvents is, with the same
// not-found answer for another tenant's log.
func TestExportDownloadsAreAuthorised(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		w := newTrustWorld(t, db)
		adminA := w.user(t, "alice", w.tenantA, domain.RoleTenantAdmin)
		get := func(tok, path string) (int, string) {
			req, _ := http.NewRequest(http.MethodGet, w.srv.URL+path, nil)
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			res, err := testserver.HTTP1.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, _ := io.ReadAll(res.Body)
			return res.StatusCode, string(body)
		}
		for _, format := range []string{"csv", "ndjson"} {
			path := "/audit/export." + format + "?tenant_id="
			cases := []struct {
				who, tok, tenant string
				status           int
				body             string
			}{
				{"A's admin, A's log", adminA, w.tenantA, http.StatusOK, "tenant.created"},
				{"A's admin, B's log", adminA, w.b.tenantID, http.StatusNotFound, `"code":"not_found"`},
				{"A's admin, a missing log", adminA, uuid.NewString(), http.StatusNotFound, `"code":"not_found"`},
				{"A's member", w.user(t, "mallory", w.tenantA), w.tenantA, http.StatusForbidden, `"code":"permission_denied"`},
				{"no token", "", w.tenantA, http.StatusUnauthorized, `"code":"unauthenticated"`},
				{"the platform admin, B's log", w.admin, w.b.tenantID, http.StatusOK, "SECRET-AUDIT"},
			}
			for _, c := range cases {
				status, body := get(c.tok, path+c.tenant)
				if status != c.status || !strings.Contains(body, c.body) {
					t.Errorf("%s as %s: %d %.200s, want %d with %s", format, c.who, status, body, c.status, c.body)
				}
				if c.status != http.StatusOK && strings.Contains(body, "SECRET") {
					t.Errorf("%s as %s: a refusal carries B's data: %s", format, c.who, body)
				}
			}
		}
	})
}
