package transport_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/crypto/argon2"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
)

type keyClients struct {
	auditClients
	keys tenantregistryv1connect.ApiKeyServiceClient
}

func startKeys(t *testing.T, db *persistence.DB) keyClients {
	return keyClientsOn(testserver.Start(t, db))
}

func keyClientsOn(srv *testserver.Server) keyClients {
	c := auditClientsOn(srv)
	return keyClients{auditClients: c, keys: tenantregistryv1connect.NewApiKeyServiceClient(testserver.HTTP1, c.srv.URL)}
}

func (c keyClients) create(t *testing.T, tenantID string, scopes ...string) *v1.CreateApiKeyResponse {
	t.Helper()
	res, err := c.keys.CreateApiKey(context.Background(), &v1.CreateApiKeyRequest{TenantId: tenantID, Name: "ci", Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func (c keyClients) verify(t *testing.T, key, product string, scopes ...string) *v1.VerifyApiKeyResponse {
	t.Helper()
	res, err := c.keys.VerifyApiKey(context.Background(), &v1.VerifyApiKeyRequest{Key: key, Product: product, RequiredScopes: scopes})
	if err != nil {
		t.Fatalf("VerifyApiKey must answer OK, got %v", err)
	}
	return res
}

func wantCode(t *testing.T, name string, res *v1.VerifyApiKeyResponse, code v1.ApiKeyVerificationCode) {
	t.Helper()
	if res.GetCode() != code || res.GetValid() != (code == v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID) {
		t.Fatalf("%s: got %v valid=%v, want %v", name, res.GetCode(), res.GetValid(), code)
	}
	if !res.GetValid() && (res.GetKeyId() != "" || res.GetTenantId() != "" || len(res.GetProducts()) != 0) {
		t.Fatalf("%s: a refused key told about its tenant: %v", name, res)
	}
}

var keyPattern = regexp.MustCompile(`^bp_[0-9A-Za-z]{49}$`)

func TestCreateAndVerifyApiKey(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startKeys(t, db)
		tn := c.createTenant(t, "keyholder")
		res := c.create(t, tn.Id, "reports:read", "audit:write", "reports:read")
		plaintext, k := res.GetPlaintextKey(), res.GetApiKey()
		if !keyPattern.MatchString(plaintext) || k.GetPrefix() != plaintext[:11] || k.GetStatus() != v1.ApiKeyStatus_API_KEY_STATUS_ACTIVE ||
			strings.Join(k.GetScopes(), ",") != "audit:write,reports:read" {
			t.Fatalf("created %q %v", plaintext, k)
		}
		for _, p := range testserver.Protocols {
			client := tenantregistryv1connect.NewApiKeyServiceClient(p.HTTP, c.srv.URL, p.Options...)
			r, err := client.VerifyApiKey(ctx, &v1.VerifyApiKeyRequest{Key: plaintext, RequiredScopes: []string{"reports:read"}})
			if err != nil {
				t.Fatalf("%s: %v", p.Name, err)
			}
			wantCode(t, p.Name, r, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID)
			if r.GetKeyId() != k.GetId() || r.GetTenantId() != tn.Id || r.GetTenantSlug() != "keyholder" || len(r.GetScopes()) != 2 {
				t.Fatalf("%s: %v", p.Name, r)
			}
		}
		wrongSum := plaintext[:len(plaintext)-1] + map[bool]string{true: "A", false: "B"}[plaintext[len(plaintext)-1] != 'A']
		bad := []struct {
			name, key string
			scopes    []string
			code      v1.ApiKeyVerificationCode
		}{
			{"empty", "", nil, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_MALFORMED},
			{"10 kB", "bp_" + strings.Repeat("a", 10_000), nil, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_MALFORMED},
			{"non-ASCII", "bp_" + strings.Repeat("é", 24) + "x", nil, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_MALFORMED},
			{"wrong checksum", wrongSum, nil, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_MALFORMED},
			{"other prefix", "sk_" + plaintext[3:], nil, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_MALFORMED},
			{"unknown key", newKeyLike(t, c), nil, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_NOT_FOUND},
			{"unknown legacy key", "bp_" + strings.Repeat("Q", 22), nil, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_NOT_FOUND},
			{"missing scope", plaintext, []string{"reports:read", "admin"}, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_INSUFFICIENT_SCOPE},
		}
		for _, tc := range bad {
			wantCode(t, tc.name, c.verify(t, tc.key, "", tc.scopes...), tc.code)
		}

		// The plaintext is stored nowhere and logged nowhere.
		c.verify(t, plaintext, "")
		var dump []string
		for _, table := range []string{"api_keys", "audit_events"} {
			var rows []map[string]any
			if err := db.Bun().NewSelect().Table(table).Scan(ctx, &rows); err != nil {
				t.Fatal(err)
			}
			dump = append(dump, fmt.Sprint(rows))
		}
		if all := strings.Join(dump, " "); strings.Contains(all, plaintext) || strings.Contains(all, plaintext[3:]) {
			t.Fatal("the plaintext key is stored in the database")
		}
		if !strings.Contains(strings.Join(dump, " "), k.GetId()) {
			t.Fatal("the database dump does not hold the key at all; the check above proves nothing")
		}
		if logs := c.srv.Logs.String(); strings.Contains(logs, plaintext[3:]) || !strings.Contains(logs, "VerifyApiKey") {
			t.Fatal("the plaintext key is in the logs, or nothing was logged")
		}
	})
}

// newKeyLike returns a well-formed key that was never issued.
func newKeyLike(t *testing.T, c keyClients) string {
	t.Helper()
	other := c.createTenant(t, fmt.Sprint("ghost-", time.Now().UnixNano()%1e6))
	res := c.create(t, other.Id)
	if _, err := c.srv.DB.Bun().NewDelete().Table("api_keys").Where("id = ?", res.GetApiKey().GetId()).Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	return res.GetPlaintextKey()
}

func TestApiKeyLifecycle(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startKeys(t, db)
		tn := c.createTenant(t, "lifecycle")
		const (
			valid   = v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID
			revoked = v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_REVOKED
			expired = v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_EXPIRED
			frozen  = v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_TENANT_FROZEN
		)

		// Revocation takes effect at once, even though the key is cached.
		k := c.create(t, tn.Id)
		wantCode(t, "before revoke", c.verify(t, k.GetPlaintextKey(), ""), valid)
		r1, err := c.keys.RevokeApiKey(ctx, &v1.RevokeApiKeyRequest{Id: k.GetApiKey().GetId()})
		if err != nil || r1.GetApiKey().GetStatus() != v1.ApiKeyStatus_API_KEY_STATUS_REVOKED {
			t.Fatalf("revoke: %v %v", r1, err)
		}
		wantCode(t, "after revoke", c.verify(t, k.GetPlaintextKey(), ""), revoked)
		r2, err := c.keys.RevokeApiKey(ctx, &v1.RevokeApiKeyRequest{Id: k.GetApiKey().GetId()})
		if err != nil || !r2.GetApiKey().GetRevokeTime().AsTime().Equal(r1.GetApiKey().GetRevokeTime().AsTime()) {
			t.Fatalf("revoking twice changed the key: %v %v", r2, err)
		}

		// Expiry is evaluated at each verification.
		exp := c.srv.Clock.Now().Add(time.Hour)
		e, err := c.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: tn.Id, Name: "short", ExpireTime: timestamppb.New(exp)})
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, "before expiry", c.verify(t, e.GetPlaintextKey(), ""), valid)
		c.srv.Clock.Advance(time.Hour)
		wantCode(t, "at expiry", c.verify(t, e.GetPlaintextKey(), ""), expired)

		// Freezing the tenant stops its keys; activating brings them back.
		f := c.create(t, tn.Id)
		wantCode(t, "before cancel", c.verify(t, f.GetPlaintextKey(), ""), valid)
		if _, err := c.tenants.CancelTenant(ctx, &v1.CancelTenantRequest{Id: tn.Id}); err != nil {
			t.Fatal(err)
		}
		wantCode(t, "frozen", c.verify(t, f.GetPlaintextKey(), ""), frozen)
		if _, err := c.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: tn.Id, Name: "x"}); connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Fatalf("key for a frozen tenant: %v", err)
		}
		if _, err := c.tenants.ActivateTenant(ctx, &v1.ActivateTenantRequest{Id: tn.Id}); err != nil {
			t.Fatal(err)
		}
		wantCode(t, "activated", c.verify(t, f.GetPlaintextKey(), ""), valid)

		// Rotation: the new key works, the old one until its grace ends.
		rot, err := c.keys.RotateApiKey(ctx, &v1.RotateApiKeyRequest{Id: f.GetApiKey().GetId(), GracePeriod: durationpb.New(10 * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		if rot.GetApiKey().GetName() != "ci" || rot.GetPreviousApiKey().GetId() != f.GetApiKey().GetId() ||
			!rot.GetPreviousApiKey().GetExpireTime().AsTime().Equal(c.srv.Clock.Now().Add(10*time.Minute)) {
			t.Fatalf("rotate: %v", rot)
		}
		wantCode(t, "new key", c.verify(t, rot.GetPlaintextKey(), ""), valid)
		wantCode(t, "old key in grace", c.verify(t, f.GetPlaintextKey(), ""), valid)
		c.srv.Clock.Advance(10 * time.Minute)
		wantCode(t, "old key after grace", c.verify(t, f.GetPlaintextKey(), ""), expired)
		now, err := c.keys.RotateApiKey(ctx, &v1.RotateApiKeyRequest{Id: rot.GetApiKey().GetId()})
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, "rotated with no grace", c.verify(t, rot.GetPlaintextKey(), ""), expired)
		wantCode(t, "its successor", c.verify(t, now.GetPlaintextKey(), ""), valid)
		if _, err := c.keys.RotateApiKey(ctx, &v1.RotateApiKeyRequest{Id: k.GetApiKey().GetId()}); connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Fatalf("rotating a revoked key: %v", err)
		}

		// Each change wrote one audit event.
		events, err := c.audit.ListAuditEvents(ctx, &v1.ListAuditEventsRequest{TenantId: tn.Id, Action: "api_key.*", PageSize: 100})
		if err != nil {
			t.Fatal(err)
		}
		var actions []string
		for _, ev := range events.GetEvents() {
			actions = append(actions, ev.GetAction())
		}
		// One event per change: a rotation is one event naming the new key.
		want := "api_key.rotated api_key.rotated api_key.created api_key.created api_key.revoked api_key.created"
		if strings.Join(actions, " ") != want {
			t.Fatalf("audit: %v\nwant %s", actions, want)
		}
	})
}

func TestApiKeyBadInput(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startKeys(t, db)
		tn := c.createTenant(t, "badkeys")
		k := c.create(t, tn.Id)
		count := func() int {
			n, err := db.Bun().NewSelect().Table("api_keys").Count(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		before := count()
		tests := []struct {
			name  string
			call  func() error
			code  connect.Code
			field string
		}{
			{"no name", func() error {
				_, err := c.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: tn.Id})
				return err
			}, connect.CodeInvalidArgument, "name"},
			{"bad scope", func() error {
				_, err := c.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: tn.Id, Name: "n", Scopes: []string{"Bad Scope"}})
				return err
			}, connect.CodeInvalidArgument, "scopes"},
			{"past expiry", func() error {
				_, err := c.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: tn.Id, Name: "n", ExpireTime: timestamppb.New(c.srv.Clock.Now().Add(-time.Second))})
				return err
			}, connect.CodeInvalidArgument, "expire_time"},
			{"bad tenant id", func() error {
				_, err := c.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: "x'--", Name: "n"})
				return err
			}, connect.CodeInvalidArgument, "tenant_id"},
			{"unknown tenant", func() error {
				_, err := c.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: "01a20000-0000-7000-8000-000000000000", Name: "n"})
				return err
			}, connect.CodeNotFound, ""},
			{"negative grace", func() error {
				_, err := c.keys.RotateApiKey(ctx, &v1.RotateApiKeyRequest{Id: k.GetApiKey().GetId(), GracePeriod: durationpb.New(-time.Second)})
				return err
			}, connect.CodeInvalidArgument, "grace_period"},
			{"invalid grace", func() error {
				_, err := c.keys.RotateApiKey(ctx, &v1.RotateApiKeyRequest{Id: k.GetApiKey().GetId(), GracePeriod: &durationpb.Duration{Seconds: 1, Nanos: -5}})
				return err
			}, connect.CodeInvalidArgument, "grace_period"},
			{"get unknown", func() error {
				_, err := c.keys.GetApiKey(ctx, &v1.GetApiKeyRequest{Id: "01a20000-0000-7000-8000-000000000000"})
				return err
			}, connect.CodeNotFound, ""},
			{"revoke bad id", func() error {
				_, err := c.keys.RevokeApiKey(ctx, &v1.RevokeApiKeyRequest{Id: "nope"})
				return err
			}, connect.CodeInvalidArgument, "id"},
			{"list page size", func() error {
				_, err := c.keys.ListApiKeys(ctx, &v1.ListApiKeysRequest{TenantId: tn.Id, PageSize: -1})
				return err
			}, connect.CodeInvalidArgument, "page_size"},
			{"list forged token", func() error {
				_, err := c.keys.ListApiKeys(ctx, &v1.ListApiKeysRequest{TenantId: tn.Id, PageToken: "eyJxIjoiIn0"})
				return err
			}, connect.CodeInvalidArgument, "page_token"},
			{"import nothing", func() error {
				_, err := c.keys.ImportApiKeys(ctx, &v1.ImportApiKeysRequest{})
				return err
			}, connect.CodeInvalidArgument, "keys"},
			{"import bad hash", func() error {
				_, err := c.keys.ImportApiKeys(ctx, &v1.ImportApiKeysRequest{Keys: []*v1.ImportedApiKey{{TenantId: tn.Id, Name: "n", Prefix: "bp_abcdefgh", Hash: "md5|x"}}})
				return err
			}, connect.CodeInvalidArgument, "keys[0].hash"},
		}
		for _, tc := range tests {
			err := tc.call()
			if connect.CodeOf(err) != tc.code {
				t.Errorf("%s: got %v, want %v", tc.name, err, tc.code)
				continue
			}
			if tc.field != "" {
				assertViolation(t, tc.name, err, tc.field)
			}
		}
		if count() != before {
			t.Fatal("a refused request changed the api_keys table")
		}
	})
}

func TestListApiKeys(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startKeys(t, db)
		a, b := c.createTenant(t, "lister-a"), c.createTenant(t, "lister-b")
		var ids []string
		for range 5 {
			ids = append(ids, c.create(t, a.Id).GetApiKey().GetId())
		}
		c.create(t, b.Id)
		var got []string
		req := &v1.ListApiKeysRequest{TenantId: a.Id, PageSize: 2}
		for {
			res, err := c.keys.ListApiKeys(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range res.GetApiKeys() {
				got = append(got, k.GetId())
			}
			if req.PageToken = res.GetNextPageToken(); req.PageToken == "" {
				break
			}
		}
		if strings.Join(got, ",") != strings.Join(ids, ",") {
			t.Fatalf("listed %v, want %v", got, ids)
		}
		g, err := c.keys.GetApiKey(ctx, &v1.GetApiKeyRequest{Id: ids[2]})
		if err != nil || g.GetApiKey().GetId() != ids[2] {
			t.Fatalf("get: %v %v", g, err)
		}
	})
}

// legacyKey makes a key of the previous implementation and its stored hash.
func legacyKey(t *testing.T) (plaintext, hash string) {
	t.Helper()
	raw := make([]byte, 16)
	_, _ = rand.Read(raw)
	plaintext = "bp_" + base64.RawURLEncoding.EncodeToString(raw)
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	sum := argon2.IDKey([]byte(plaintext), salt, 1, 64*1024, 4, 32)
	return plaintext, "argon2id|" + base64.StdEncoding.EncodeToString(salt) + "|" + base64.StdEncoding.EncodeToString(sum)
}

func TestImportedLegacyKey(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startKeys(t, db)
		tn := c.createTenant(t, "legacy")
		plaintext, hash := legacyKey(t)
		other, otherHash := legacyKey(t)
		res, err := c.keys.ImportApiKeys(ctx, &v1.ImportApiKeysRequest{Keys: []*v1.ImportedApiKey{
			{TenantId: tn.Id, Name: "old", Prefix: plaintext[:11], Hash: hash, Scopes: []string{"reports:read"}},
			{TenantId: tn.Id, Name: "old-2", Prefix: other[:11], Hash: otherHash},
		}})
		if err != nil {
			t.Fatal(err)
		}
		id := res.GetApiKeys()[0].GetId()
		stored := func() string {
			var h string
			if err := db.Bun().NewSelect().Table("api_keys").Column("hash").Where("id = ?", id).Scan(ctx, &h); err != nil {
				t.Fatal(err)
			}
			return h
		}
		if stored() != hash {
			t.Fatal("import did not keep the argon2id hash")
		}
		wrong := plaintext[:11] + strings.Repeat("A", 14) // same display prefix, wrong secret
		wantCode(t, "wrong legacy key", c.verify(t, wrong, ""), v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_NOT_FOUND)
		r := c.verify(t, plaintext, "", "reports:read")
		wantCode(t, "legacy key", r, v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID)
		if r.GetKeyId() != id || r.GetTenantSlug() != "legacy" {
			t.Fatalf("legacy verification: %v", r)
		}
		if h := stored(); !strings.HasPrefix(h, "sha256|") {
			t.Fatalf("the first good verification did not rehash the key: %s", h)
		}
		// Verifications after the rehash take the fast path, and revocation still works.
		wantCode(t, "rehashed", c.verify(t, plaintext, ""), v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID)
		if _, err := c.keys.RevokeApiKey(ctx, &v1.RevokeApiKeyRequest{Id: id}); err != nil {
			t.Fatal(err)
		}
		wantCode(t, "revoked legacy key", c.verify(t, plaintext, ""), v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_REVOKED)
		wantCode(t, "the other imported key", c.verify(t, other, ""), v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID)
	})
}

func TestLastUsedIsCoalesced(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startKeys(t, db)
		tn := c.createTenant(t, "usage")
		k := c.create(t, tn.Id)
		lastUsed := func() time.Time {
			g, err := c.keys.GetApiKey(ctx, &v1.GetApiKeyRequest{Id: k.GetApiKey().GetId()})
			if err != nil {
				t.Fatal(err)
			}
			if g.GetApiKey().GetLastUsedTime() == nil {
				return time.Time{}
			}
			return g.GetApiKey().GetLastUsedTime().AsTime()
		}
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() { c.verify(t, k.GetPlaintextKey(), "") })
		}
		wg.Wait()
		if !lastUsed().IsZero() {
			t.Fatal("last use was written on the request path")
		}
		first := c.srv.Clock.Now()
		if err := c.srv.Verifier.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if !lastUsed().Equal(first) {
			t.Fatalf("last used %v, want %v", lastUsed(), first)
		}
		c.srv.Clock.Advance(30 * time.Second)
		c.verify(t, k.GetPlaintextKey(), "")
		_ = c.srv.Verifier.Flush(ctx)
		if !lastUsed().Equal(first) {
			t.Fatal("a second write within a minute")
		}
		c.srv.Clock.Advance(31 * time.Second)
		c.verify(t, k.GetPlaintextKey(), "")
		_ = c.srv.Verifier.Flush(ctx)
		if !lastUsed().Equal(c.srv.Clock.Now()) {
			t.Fatalf("last used %v after a minute, want %v", lastUsed(), c.srv.Clock.Now())
		}
	})
}
