package domain

import (
	"context"
	"slices"
)

// Permission is something a principal may be allowed to do.
type Permission string

// The registry's permissions, one or more per RPC.
const (
	PermTenantCreate    Permission = "tenant.create"
	PermTenantRead      Permission = "tenant.read"
	PermTenantList      Permission = "tenant.list"
	PermTenantUpdate    Permission = "tenant.update"
	PermTenantLifecycle Permission = "tenant.lifecycle"

	PermCatalogRead         Permission = "catalog.read"
	PermCatalogWrite        Permission = "catalog.write"
	PermProductRequest      Permission = "product.request"
	PermProductRequestsList Permission = "product_requests.list"
	PermTrialStart          Permission = "trial.start"

	PermEntitlementsRead  Permission = "entitlements.read"
	PermEntitlementsCheck Permission = "entitlements.check"
	PermEntitlementsWrite Permission = "entitlements.write"

	PermKeysManage Permission = "keys.manage" // create, list, get, rotate, revoke a tenant's keys
	PermKeysVerify Permission = "keys.verify"
	PermKeysImport Permission = "keys.import"

	PermAuditWrite  Permission = "audit.write"
	PermAuditRead   Permission = "audit.read" // list and export
	PermAuditVerify Permission = "audit.verify"
)

// Roles and scopes that name registry permissions.
const (
	RolePlatformAdmin = "platform-admin"
	RoleTenantAdmin   = "tenant-admin"

	ScopeAdmin            = "registry:admin"
	ScopeVerify           = "registry:verify"
	ScopeAuditWrite       = "registry:audit.write"
	ScopeEntitlementsRead = "registry:entitlements.read"
	ScopeProductPrefix    = "product:" // product:<key> names the product a service key acts for
	PrincipalUser         = "user"
	PrincipalServiceKey   = "service_key"
	PrincipalDev          = "dev"
)

// grant says who holds a permission besides platform admins, who hold all.
type grant struct {
	tenantAdmin  bool   // tenant admins, for their own tenant
	tenantMember bool   // any user of the tenant, for their own tenant
	scope        string // service keys with this scope, for any tenant
}

// policy is the one table of who may do what (DESIGN.md, "Who may do
// what"). A permission missing here is granted to platform admins only.
var policy = map[Permission]grant{
	PermTenantRead:        {tenantAdmin: true, tenantMember: true},
	PermTenantUpdate:      {tenantAdmin: true},
	PermCatalogRead:       {tenantAdmin: true, tenantMember: true},
	PermProductRequest:    {tenantAdmin: true},
	PermTrialStart:        {tenantAdmin: true},
	PermEntitlementsRead:  {tenantAdmin: true, tenantMember: true},
	PermEntitlementsCheck: {tenantAdmin: true, tenantMember: true, scope: ScopeEntitlementsRead},
	PermKeysManage:        {tenantAdmin: true},
	PermKeysVerify:        {scope: ScopeVerify},
	PermAuditWrite:        {scope: ScopeAuditWrite},
	PermAuditRead:         {tenantAdmin: true},
}

// IsPlatformAdmin reports whether p may do everything.
func (p Principal) IsPlatformAdmin() bool {
	return slices.Contains(p.Roles, RolePlatformAdmin) || slices.Contains(p.Scopes, ScopeAdmin)
}

// Product returns the product a service key acts for (its product:<key>
// scope), if any.
func (p Principal) Product() (string, bool) {
	for _, s := range p.Scopes {
		if product, ok := cutPrefix(s, ScopeProductPrefix); ok && product != "" {
			return product, true
		}
	}
	return "", false
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):], true
	}
	return "", false
}

// Can reports whether p may use perm on tenantID's data ("" for data of no
// tenant: the platform's).
func (p Principal) Can(perm Permission, tenantID string) bool {
	if p.IsPlatformAdmin() {
		return true
	}
	g := policy[perm]
	if g.scope != "" && p.Type == PrincipalServiceKey && slices.Contains(p.Scopes, g.scope) {
		return true
	}
	if p.Type != PrincipalUser || p.TenantID == "" || tenantID != p.TenantID {
		return false
	}
	return g.tenantMember || (g.tenantAdmin && slices.Contains(p.Roles, RoleTenantAdmin))
}

// authorize returns nil when the caller may use perm on tenantID's data,
// and a KindPermissionDenied error otherwise. A refused state change
// (denied is not nil) is written to the audit log as a failure, in its own
// transaction since the change itself never happens.
func authorize(ctx context.Context, store Store, now Clock, perm Permission, tenantID string, denied *change) error {
	if CallerFrom(ctx).Principal.Can(perm, tenantID) {
		return nil
	}
	return deny(ctx, store, now, perm, tenantID, denied)
}

// deny returns the KindPermissionDenied error for perm, first recording a
// refused state change (denied not nil) as a failure event.
func deny(ctx context.Context, store Store, now Clock, perm Permission, tenantID string, denied *change) error {
	err := Errorf(KindPermissionDenied, "permission denied: the caller may not %s here", perm)
	if denied == nil {
		return err
	}
	c := *denied
	c.TenantID, c.Failure, c.Description = tenantID, true, "refused: "+string(perm)
	werr := store.Atomically(ctx, func(r Repositories) error {
		if c.TenantID != "" {
			if _, err := r.Tenants().Get(ctx, c.TenantID); err != nil {
				c.TenantID = "" // no such tenant: the platform's chain records the attempt
			}
		}
		return recordChange(ctx, r, now(), c)
	})
	if werr != nil {
		return werr
	}
	return err
}
