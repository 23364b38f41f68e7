package transport_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/coreos/go-oidc/v3/oidc/oidctest"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
	"github.com/tenant-registry/tenant-registry/transport"
)

// issuer is an in-process OpenID Connect provider: discovery and JWKS,
// RS256 tokens signed with a key made for the test.
type issuer struct {
	url string
	key *rsa.PrivateKey
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	s := &oidctest.Server{PublicKeys: []oidctest.PublicKey{{PublicKey: key.Public(), KeyID: "test-key", Algorithm: oidc.RS256}}}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	s.SetIssuer(srv.URL)
	return &issuer{url: srv.URL, key: key}
}

// token signs an access token with Keycloak's claim layout.
func (i *issuer) token(t *testing.T, sub, tenant, audience string, expires time.Time, roles ...string) string {
	t.Helper()
	claims := map[string]any{
		"iss": i.url, "sub": sub, "aud": audience, "exp": expires.Unix(), "iat": time.Now().Unix(),
		"preferred_username": sub, "realm_access": map[string]any{"roles": roles},
	}
	if tenant != "" {
		claims["tenant_id"] = tenant
	}
	b, _ := json.Marshal(claims)
	return oidctest.SignIDToken(i.key, "test-key", oidc.RS256, string(b))
}

// signed signs a token with the given claims, iss, aud and exp added
// unless set.
func (i *issuer) signed(t *testing.T, audience string, claims map[string]any) string {
	t.Helper()
	for k, v := range map[string]any{"iss": i.url, "aud": audience, "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()} {
		if _, ok := claims[k]; !ok {
			claims[k] = v
		}
	}
	b, _ := json.Marshal(claims)
	return oidctest.SignIDToken(i.key, "test-key", oidc.RS256, string(b))
}

type tokenKey struct{}

// bearer sets the Authorization header from the token in the call's context.
var bearer = connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if tok, _ := ctx.Value(tokenKey{}).(string); tok != "" {
			req.Header().Set("Authorization", "Bearer "+tok)
		}
		return next(ctx, req)
	}
})

// streamBearer does what bearer does for the export stream.
type streamBearer struct{}

func (streamBearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc { return bearer(next) }
func (streamBearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if tok, _ := ctx.Value(tokenKey{}).(string); tok != "" {
			conn.RequestHeader().Set("Authorization", "Bearer "+tok)
		}
		return conn
	}
}
func (streamBearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

type clients struct {
	tenants      tenantregistryv1connect.TenantServiceClient
	catalog      tenantregistryv1connect.CatalogServiceClient
	entitlements tenantregistryv1connect.EntitlementServiceClient
	keys         tenantregistryv1connect.ApiKeyServiceClient
	audit        tenantregistryv1connect.AuditServiceClient
	changes      tenantregistryv1connect.ChangeServiceClient
}

func newClients(url string) clients {
	opt := connect.WithInterceptors(streamBearer{})
	h := testserver.HTTP1
	return clients{
		tenants:      tenantregistryv1connect.NewTenantServiceClient(h, url, opt),
		catalog:      tenantregistryv1connect.NewCatalogServiceClient(h, url, opt),
		entitlements: tenantregistryv1connect.NewEntitlementServiceClient(h, url, opt),
		keys:         tenantregistryv1connect.NewApiKeyServiceClient(h, url, opt),
		audit:        tenantregistryv1connect.NewAuditServiceClient(h, url, opt),
		changes:      tenantregistryv1connect.NewChangeServiceClient(h, url, opt),
	}
}

// fixture is the data the matrix's calls aim at: tenant A's.
type fixture struct {
	tenantA, tenantA2, slugA, keyA, rotateA, productKey string
}

// principals of the matrix, by name.
const (
	pAdmin      = "platform admin"
	pAdminA     = "tenant admin of A"
	pMemberA    = "tenant member of A"
	pAdminB     = "tenant admin of B"
	pProductKey = "product service key"
	pNoScopeKey = "service key without the scope"
	pExpired    = "expired token"
	pOtherIss   = "token from another issuer"
	pWrongAud   = "token with wrong audience"
	pNone       = "no token"
)

var validPrincipals = []string{pAdmin, pAdminA, pMemberA, pAdminB, pProductKey, pNoScopeKey}
var invalidPrincipals = []string{pExpired, pOtherIss, pWrongAud, pNone}

// rpc is one row of the matrix: a call, and who may make it. Everyone else
// with good credentials gets PermissionDenied, or NotFound when the call
// names a tenant's data and the caller may not even see that tenant
// (another tenant's admin, the platform's keys); bad credentials get
// Unauthenticated.
type rpc struct {
	allowed []string
	// seenBy are the callers who may see the tenant whose data the call
	// names (nil: it names none); other refused callers get NotFound.
	seenBy []string
	call   func(ctx context.Context, c clients, f fixture) error
}

func matrix() map[string]rpc {
	admins := []string{pAdmin, pAdminA}
	readers := []string{pAdmin, pAdminA, pMemberA}
	only := []string{pAdmin}
	seenByA := []string{pAdminA, pMemberA} // A's own principals see A
	seenByNone := []string{}               // tenant A2: only the platform admin sees it
	return map[string]rpc{
		tenantregistryv1connect.TenantServiceCreateTenantProcedure: {only, nil, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: fmt.Sprint("new-", time.Now().UnixNano()), DisplayName: "New"})
			return err
		}},
		tenantregistryv1connect.TenantServiceGetTenantProcedure: {readers, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.tenants.GetTenant(ctx, &v1.GetTenantRequest{Id: f.tenantA})
			return err
		}},
		tenantregistryv1connect.TenantServiceGetTenantBySlugProcedure: {readers, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.tenants.GetTenantBySlug(ctx, &v1.GetTenantBySlugRequest{Slug: f.slugA})
			return err
		}},
		tenantregistryv1connect.TenantServiceListTenantsProcedure: {only, nil, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.tenants.ListTenants(ctx, &v1.ListTenantsRequest{})
			return err
		}},
		tenantregistryv1connect.TenantServiceUpdateTenantProcedure: {admins, seenByA, func(ctx context.Context, c clients, f fixture) error {
			name := "Tenant A"
			_, err := c.tenants.UpdateTenant(ctx, &v1.UpdateTenantRequest{Id: f.tenantA, DisplayName: &name})
			return err
		}},
		tenantregistryv1connect.TenantServiceActivateTenantProcedure: {only, seenByNone, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.tenants.ActivateTenant(ctx, &v1.ActivateTenantRequest{Id: f.tenantA2})
			return err
		}},
		tenantregistryv1connect.TenantServiceCancelTenantProcedure: {only, seenByNone, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.tenants.CancelTenant(ctx, &v1.CancelTenantRequest{Id: f.tenantA2})
			return err
		}},
		tenantregistryv1connect.CatalogServiceListProductsProcedure: {[]string{pAdmin, pAdminA, pMemberA, pAdminB}, nil, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.catalog.ListProducts(ctx, &v1.ListProductsRequest{})
			return err
		}},
		tenantregistryv1connect.CatalogServiceCreateProductProcedure: {only, nil, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.catalog.CreateProduct(ctx, &v1.CreateProductRequest{Key: fmt.Sprint("p-", time.Now().UnixNano()), DisplayName: "P"})
			return err
		}},
		tenantregistryv1connect.CatalogServiceUpdateProductProcedure: {only, nil, func(ctx context.Context, c clients, f fixture) error {
			d := "updated"
			_, err := c.catalog.UpdateProduct(ctx, &v1.UpdateProductRequest{Key: "analytics", Description: &d})
			return err
		}},
		tenantregistryv1connect.CatalogServiceRequestProductProcedure: {admins, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.catalog.RequestProduct(ctx, &v1.RequestProductRequest{TenantId: f.tenantA, Product: "data-warehouse", Note: "call us"})
			return err
		}},
		tenantregistryv1connect.CatalogServiceListProductRequestsProcedure: {only, nil, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.catalog.ListProductRequests(ctx, &v1.ListProductRequestsRequest{})
			return err
		}},
		tenantregistryv1connect.CatalogServiceStartTrialProcedure: {admins, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.catalog.StartTrial(ctx, &v1.StartTrialRequest{TenantId: f.tenantA, Product: "helpdesk"})
			return err
		}},
		tenantregistryv1connect.EntitlementServiceListEntitlementsProcedure: {readers, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.entitlements.ListEntitlements(ctx, &v1.ListEntitlementsRequest{TenantId: f.tenantA})
			return err
		}},
		tenantregistryv1connect.EntitlementServiceCheckEntitlementProcedure: {append(readers, pProductKey), seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.entitlements.CheckEntitlement(ctx, &v1.CheckEntitlementRequest{TenantId: f.tenantA, Product: "analytics"})
			return err
		}},
		tenantregistryv1connect.EntitlementServiceGrantEntitlementProcedure: {only, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.entitlements.GrantEntitlement(ctx, &v1.GrantEntitlementRequest{TenantId: f.tenantA, Product: "analytics"})
			return err
		}},
		tenantregistryv1connect.EntitlementServiceRevokeEntitlementProcedure: {only, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.entitlements.RevokeEntitlement(ctx, &v1.RevokeEntitlementRequest{TenantId: f.tenantA, Product: "analytics"})
			return err
		}},
		tenantregistryv1connect.ApiKeyServiceCreateApiKeyProcedure: {admins, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: f.tenantA, Name: "k"})
			return err
		}},
		tenantregistryv1connect.ApiKeyServiceListApiKeysProcedure: {admins, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.keys.ListApiKeys(ctx, &v1.ListApiKeysRequest{TenantId: f.tenantA})
			return err
		}},
		tenantregistryv1connect.ApiKeyServiceGetApiKeyProcedure: {admins, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.keys.GetApiKey(ctx, &v1.GetApiKeyRequest{Id: f.keyA})
			return err
		}},
		tenantregistryv1connect.ApiKeyServiceRevokeApiKeyProcedure: {admins, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.keys.RevokeApiKey(ctx, &v1.RevokeApiKeyRequest{Id: f.keyA})
			return err
		}},
		tenantregistryv1connect.ApiKeyServiceRotateApiKeyProcedure: {admins, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.keys.RotateApiKey(ctx, &v1.RotateApiKeyRequest{Id: f.rotateA})
			return err
		}},
		tenantregistryv1connect.ApiKeyServiceDisableApiKeyProcedure: {admins, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.keys.DisableApiKey(ctx, &v1.DisableApiKeyRequest{Id: f.keyA})
			return err
		}},
		tenantregistryv1connect.ApiKeyServiceEnableApiKeyProcedure: {admins, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.keys.EnableApiKey(ctx, &v1.EnableApiKeyRequest{Id: f.keyA})
			return err
		}},
		tenantregistryv1connect.ApiKeyServiceUpdateApiKeyProcedure: {admins, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.keys.UpdateApiKey(ctx, &v1.UpdateApiKeyRequest{Id: f.keyA, Name: "renamed", UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}})
			return err
		}},
		tenantregistryv1connect.ApiKeyServiceVerifyApiKeyProcedure: {[]string{pAdmin, pProductKey}, nil, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.keys.VerifyApiKey(ctx, &v1.VerifyApiKeyRequest{Key: f.productKey})
			return err
		}},
		tenantregistryv1connect.ApiKeyServiceImportApiKeysProcedure: {only, nil, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.keys.ImportApiKeys(ctx, &v1.ImportApiKeysRequest{Keys: []*v1.ImportedApiKey{{
				TenantId: f.tenantA, Name: "old", Prefix: "bp_" + fmt.Sprintf("%08d", time.Now().UnixNano()%1e8),
				Hash: "argon2id|c2FsdHNhbHRzYWx0|" + strings.Repeat("A", 43),
			}}})
			return err
		}},
		tenantregistryv1connect.AuditServiceRecordAuditEventProcedure: {[]string{pAdmin, pProductKey}, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{Event: productEvent(f.tenantA, "report.viewed")})
			return err
		}},
		tenantregistryv1connect.AuditServiceRecordAuditEventsProcedure: {[]string{pAdmin, pProductKey}, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.audit.RecordAuditEvents(ctx, &v1.RecordAuditEventsRequest{Events: []*v1.AuditEvent{productEvent(f.tenantA, "report.viewed")}})
			return err
		}},
		tenantregistryv1connect.AuditServiceListAuditEventsProcedure: {admins, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.audit.ListAuditEvents(ctx, &v1.ListAuditEventsRequest{TenantId: f.tenantA})
			return err
		}},
		tenantregistryv1connect.AuditServiceExportAuditEventsProcedure: {admins, seenByA, func(ctx context.Context, c clients, f fixture) error {
			stream, err := c.audit.ExportAuditEvents(ctx, &v1.ExportAuditEventsRequest{TenantId: f.tenantA})
			if err != nil {
				return err
			}
			for stream.Receive() {
			}
			return stream.Err()
		}},
		tenantregistryv1connect.AuditServiceVerifyAuditChainProcedure: {only, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.audit.VerifyAuditChain(ctx, &v1.VerifyAuditChainRequest{TenantId: f.tenantA})
			return err
		}},
		tenantregistryv1connect.AuditServiceGetAuditCheckpointProcedure: {admins, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.audit.GetAuditCheckpoint(ctx, &v1.GetAuditCheckpointRequest{TenantId: f.tenantA})
			return err
		}},
		tenantregistryv1connect.AuditServiceProveAuditEventProcedure: {admins, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.audit.ProveAuditEvent(ctx, &v1.ProveAuditEventRequest{TenantId: f.tenantA, Seq: 1})
			return err
		}},
		tenantregistryv1connect.AuditServiceProveAuditConsistencyProcedure: {admins, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.audit.ProveAuditConsistency(ctx, &v1.ProveAuditConsistencyRequest{TenantId: f.tenantA, OldSize: 1})
			return err
		}},
		tenantregistryv1connect.AuditServiceGetAuditRetentionProcedure: {admins, seenByA, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.audit.GetAuditRetention(ctx, &v1.GetAuditRetentionRequest{TenantId: f.tenantA})
			return err
		}},
		tenantregistryv1connect.AuditServiceSetAuditRetentionProcedure: {only, seenByA, func(ctx context.Context, c clients, f fixture) error {
			days := int32(90)
			_, err := c.audit.SetAuditRetention(ctx, &v1.SetAuditRetentionRequest{TenantId: f.tenantA, RetentionDays: &days})
			return err
		}},
		tenantregistryv1connect.AuditServiceGetAuditVerifierKeyProcedure: {validPrincipals, nil, func(ctx context.Context, c clients, f fixture) error {
			_, err := c.audit.GetAuditVerifierKey(ctx, &v1.GetAuditVerifierKeyRequest{})
			return err
		}},
		tenantregistryv1connect.ChangeServiceWatchChangesProcedure: {[]string{pAdmin, pProductKey}, nil, func(ctx context.Context, c clients, f fixture) error {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel() // the stream does not end by itself
			stream, err := c.changes.WatchChanges(ctx, &v1.WatchChangesRequest{})
			if err != nil {
				return err
			}
			defer stream.Close()
			if stream.Receive() && stream.Msg().GetReset_() != nil {
				return nil
			}
			if err := stream.Err(); err != nil {
				return err
			}
			return fmt.Errorf("the stream did not start with a reset")
		}},
	}
}

// TestEveryRPCHasAPolicyRow keeps the matrix complete: a new RPC in the
// contract, in any file of the package, without a row fails here.
func TestEveryRPCHasAPolicyRow(t *testing.T) {
	m := matrix()
	var files []protoreflect.FileDescriptor
	protoregistry.GlobalFiles.RangeFilesByPackage(v1.File_tenantregistry_v1_tenant_proto.Package(), func(f protoreflect.FileDescriptor) bool {
		files = append(files, f)
		return true
	})
	if len(files) < 6 {
		t.Fatalf("found %d files of the contract's package, want at least 6", len(files))
	}
	n := 0
	for _, f := range files {
		for i := range f.Services().Len() {
			svc := f.Services().Get(i)
			for j := range svc.Methods().Len() {
				proc := "/" + string(svc.FullName()) + "/" + string(svc.Methods().Get(j).Name())
				if _, ok := m[proc]; !ok {
					t.Errorf("%s has no row in the authorization matrix", proc)
				}
				n++
			}
		}
	}
	if n != len(m) {
		t.Errorf("the matrix has %d rows for %d RPCs", len(m), n)
	}
}

// TestAuthorizationMatrix calls every RPC as every kind of caller.
func TestAuthorizationMatrix(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		iss := newIssuer(t)
		const audience = "tenant-registry"
		srv := testserver.StartWith(t, db, &transport.OIDCConfig{Issuer: iss.url, Audience: audience, TenantClaim: "tenant_id"})
		c := newClients(srv.URL)
		now, later := time.Now(), time.Now().Add(time.Hour)
		admin := iss.token(t, "admin-1", "", audience, later, "platform-admin")
		as := func(tok string) context.Context { return context.WithValue(ctx, tokenKey{}, tok) }

		// Fixture, made by the platform admin.
		mk := func(slug string) string {
			res, err := c.tenants.CreateTenant(as(admin), &v1.CreateTenantRequest{Slug: slug, DisplayName: slug})
			if err != nil {
				t.Fatal(err)
			}
			return res.GetTenant().GetId()
		}
		f := fixture{tenantA: mk("tenant-a"), tenantA2: mk("tenant-a2"), slugA: "tenant-a"}
		tenantB, platform := mk("tenant-b"), domain.PlatformTenantID
		for _, product := range []string{"analytics", "helpdesk", "data-warehouse"} {
			if _, err := c.catalog.CreateProduct(as(admin), &v1.CreateProductRequest{Key: product, DisplayName: product}); err != nil {
				t.Fatal(err)
			}
		}
		key := func(tenant string, scopes ...string) (string, string) {
			res, err := c.keys.CreateApiKey(as(admin), &v1.CreateApiKeyRequest{TenantId: tenant, Name: "k", Scopes: scopes})
			if err != nil {
				t.Fatal(err)
			}
			return res.GetApiKey().GetId(), res.GetPlaintextKey()
		}
		f.keyA, _ = key(f.tenantA)
		f.rotateA, _ = key(f.tenantA)
		_, f.productKey = key(platform, "registry:verify", "registry:audit.write", "registry:entitlements.read", "product:analytics")
		_, noScope := key(platform, "reports:read")
		other := newIssuer(t)

		tokens := map[string]string{
			pAdmin:      admin,
			pAdminA:     iss.token(t, "alice", f.tenantA, audience, later, "tenant-admin"),
			pMemberA:    iss.token(t, "mallory", f.tenantA, audience, later),
			pAdminB:     iss.token(t, "bob", tenantB, audience, later, "tenant-admin"),
			pProductKey: f.productKey,
			pNoScopeKey: noScope,
			pExpired:    iss.token(t, "alice", f.tenantA, audience, now.Add(-time.Minute), "platform-admin"),
			pOtherIss:   other.token(t, "alice", f.tenantA, audience, later, "platform-admin"),
			pWrongAud:   iss.token(t, "alice", f.tenantA, "another-service", later, "platform-admin"),
			pNone:       "",
		}
		for proc, row := range matrix() {
			// Denied callers first, so the allowed ones see untouched data.
			for _, p := range append(append([]string{}, invalidPrincipals...), validPrincipals...) {
				allowed := contains(row.allowed, p)
				if allowed {
					continue
				}
				err := row.call(as(tokens[p]), c, f)
				want := connect.CodePermissionDenied
				switch {
				case contains(invalidPrincipals, p):
					want = connect.CodeUnauthenticated
				case row.seenBy != nil && !contains(row.seenBy, p):
					want = connect.CodeNotFound
				}
				if connect.CodeOf(err) != want {
					t.Errorf("%s as %s: got %v, want %v", proc, p, err, want)
				}
				if want == connect.CodeUnauthenticated && err != nil && !strings.Contains(err.Error(), "token") {
					t.Errorf("%s as %s: message %q", proc, p, err)
				}
			}
			for _, p := range row.allowed {
				err := row.call(as(tokens[p]), c, f)
				if code := connect.CodeOf(err); err != nil && (code == connect.CodePermissionDenied || code == connect.CodeUnauthenticated || code == connect.CodeInternal) {
					t.Errorf("%s as %s: refused with %v", proc, p, err)
				}
			}
		}

		// Refused state changes are in the audit log as failures: in the
		// caller's own chain when it was told it may not (the member of A),
		// in the platform chain when it was told "not found" (B's admin and
		// both platform keys), never in A's for a caller of another tenant.
		// The matrix spent the callers' refusal budgets: a minute later,
		// each is refused a key creation once more.
		srv.Clock.Advance(time.Minute)
		createKey := matrix()[tenantregistryv1connect.ApiKeyServiceCreateApiKeyProcedure].call
		for _, p := range []string{pMemberA, pAdminB, pProductKey, pNoScopeKey} {
			if err := createKey(as(tokens[p]), c, f); err == nil {
				t.Fatalf("CreateApiKey as %s succeeded", p)
			}
		}
		failures := func(tenant string) []string {
			res, err := c.audit.ListAuditEvents(as(admin), &v1.ListAuditEventsRequest{TenantId: tenant, Action: "api_key.created", PageSize: 100})
			if err != nil {
				t.Fatal(err)
			}
			var actors []string
			for _, e := range res.GetEvents() {
				if e.GetIsFailure() {
					actors = append(actors, e.GetActor().GetType()+":"+e.GetActor().GetId())
					if e.GetActor().GetId() == "" {
						t.Errorf("failure event without its actor: %v", e)
					}
				}
			}
			return actors
		}
		if got := failures(f.tenantA); len(got) == 0 || slices.ContainsFunc(got, func(a string) bool { return a != "user:mallory" }) {
			t.Errorf("refused key creations in A's chain by %v, want A's member's only", got)
		}
		if got := failures(""); !slices.Contains(got, "user:bob") || !slices.ContainsFunc(got, func(a string) bool { return strings.HasPrefix(a, "platform_key:") }) {
			t.Errorf("refused key creations in the platform chain by %v, want B's admin's and the platform keys'", got)
		}
	})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
