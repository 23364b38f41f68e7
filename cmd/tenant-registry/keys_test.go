package main

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
)

// TestKeysBootstrap runs "keys bootstrap" and checks the printed key is a
// platform-admin service key that verifies, and that its creation is audited.
func TestKeysBootstrap(t *testing.T) {
	ctx := context.Background()
	dbURL := "sqlite:" + filepath.Join(t.TempDir(), "bootstrap.db")
	env := envOf(map[string]string{"DATABASE_URL": dbURL})
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"keys", "bootstrap"}, env, &out, &errOut); err != nil {
		t.Fatalf("keys bootstrap: %v\n%s", err, errOut.String())
	}
	key := strings.TrimSpace(out.String())
	if !strings.HasPrefix(key, "bp_") || strings.Contains(key, "\n") || !strings.Contains(errOut.String(), "registry:admin") {
		t.Fatalf("stdout %q, stderr %q", out.String(), errOut.String())
	}
	// A second run makes a second key; the platform tenant is reused.
	out.Reset()
	if err := run(ctx, []string{"keys", "bootstrap"}, env, &out, &errOut); err != nil || strings.TrimSpace(out.String()) == key {
		t.Fatalf("second bootstrap: %v %q", err, out.String())
	}

	db := testdb.MustOpenURL(t, dbURL)
	v, err := db.KeyVerifier(domain.SystemClock, domain.DefaultKeyCacheConfig).Verify(ctx, key, "", []string{domain.ScopeAdmin})
	if err != nil || !v.Valid() || v.TenantID != domain.PlatformTenantID || !slices.Equal(v.Scopes, []string{domain.ScopeAdmin}) {
		t.Fatalf("the bootstrap key does not verify as a platform admin key: %+v %v", v, err)
	}
	events, err := db.Store().Audit().List(ctx, domain.AuditFilter{TenantID: domain.PlatformTenantID, Action: "api_key.created"}, 0, 10, 1<<20)
	if err != nil || len(events) != 2 || events[0].Actor.ID != "bootstrap" {
		t.Fatalf("bootstrap keys not audited: %v %v", events, err)
	}
	if err := run(ctx, []string{"keys", "rotate"}, env, &out, &errOut); err == nil {
		t.Fatal("an unknown keys command was accepted")
	}
}
