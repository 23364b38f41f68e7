package domain

import (
	"slices"
	"strings"
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

	PermAuditWrite     Permission = "audit.write"
	PermAuditRead      Permission = "audit.read" // list and export
	PermAuditVerify    Permission = "audit.verify"
	PermAuditRetention Permission = "audit.retention" // set how long a log keeps its events

	PermChangesWatch Permission = "changes.watch" // the change stream
)

// Roles of OIDC users that name registry permissions.
const (
	RolePlatformAdmin = "platform-admin"
	RoleTenantAdmin   = "tenant-admin"
)

// Scopes that name registry permissions. Platform scopes act on every
// tenant and count only on platform keys; tenant scopes act on the key's
// own tenant only and count only on tenant keys. Every other scope that
// does not start with "registry:" is a product's own, free-form.
const (
	ScopeAdmin            = "registry:admin"             // platform: everything
	ScopeVerify           = "registry:verify"            // platform: VerifyApiKey and the change stream
	ScopeAuditWrite       = "registry:audit.write"       // platform: append events of its product:<key>
	ScopeEntitlementsRead = "registry:entitlements.read" // platform: CheckEntitlement for any tenant
	ScopeProductPrefix    = "product:"                   // platform: product:<key> names the product a key acts for
	ScopeTenantRead       = "registry:tenant.read"       // tenant: read its tenant, entitlements and the catalog
	ScopeKeysManage       = "registry:keys.manage"       // tenant: manage its tenant's keys, within what it holds
	ScopeAuditRead        = "registry:audit.read"        // tenant: list and export its tenant's audit events
	registryScopePrefix   = "registry:"
)

var (
	platformScopes = []string{ScopeAdmin, ScopeVerify, ScopeAuditWrite, ScopeEntitlementsRead}
	tenantScopes   = []string{ScopeTenantRead, ScopeKeysManage, ScopeAuditRead}
)

// IsPlatformScope reports whether only platform keys may carry scope.
func IsPlatformScope(scope string) bool {
	return slices.Contains(platformScopes, scope) || strings.HasPrefix(scope, ScopeProductPrefix)
}

// isTenantScope reports whether scope is a registry scope of tenant keys.
func isTenantScope(scope string) bool { return slices.Contains(tenantScopes, scope) }

// Principal types (Principal.Type), which also go into audit events as the
// actor's type.
const (
	PrincipalUser        = "user"         // a person, by an OIDC access token
	PrincipalTenantKey   = "tenant_key"   // an API key of an ordinary tenant
	PrincipalPlatformKey = "platform_key" // an API key of the platform tenant
	PrincipalDev         = "dev"          // every caller while authentication is off
)

// PlatformTenantID is the reserved tenant (slug "platform") that holds the
// platform keys: the only keys whose platform scopes count.
const PlatformTenantID = "00000000-0000-0000-0000-000000000000"

// grant says who holds a permission besides platform admins, who hold all.
type grant struct {
	tenantAdmin   bool   // users with role tenant-admin, on their own tenant
	tenantMember  bool   // every user of the tenant, on their own tenant
	tenantScope   string // tenant keys with this scope, on their own tenant
	platformScope string // platform keys with this scope, on every tenant
}

// policy is the one table of who may do what. A permission missing here
// is held by platform admins only: a platform-admin user, or a platform key
// with registry:admin.
var policy = map[Permission]grant{
	//                     tenant admin, member, tenant key scope, platform key scope
	PermTenantRead:        {true, true, ScopeTenantRead, ""},
	PermTenantUpdate:      {true, false, "", ""},
	PermCatalogRead:       {true, true, ScopeTenantRead, ""},
	PermProductRequest:    {true, false, "", ""},
	PermTrialStart:        {true, false, "", ""},
	PermEntitlementsRead:  {true, true, ScopeTenantRead, ""},
	PermEntitlementsCheck: {true, true, ScopeTenantRead, ScopeEntitlementsRead},
	PermKeysManage:        {true, false, ScopeKeysManage, ""},
	PermKeysVerify:        {false, false, "", ScopeVerify},
	PermAuditWrite:        {false, false, "", ScopeAuditWrite},
	PermAuditRead:         {true, false, ScopeAuditRead, ""},
	PermChangesWatch:      {false, false, "", ScopeVerify},
}

func (p Principal) isKey() bool {
	return p.Type == PrincipalTenantKey || p.Type == PrincipalPlatformKey
}

// IsPlatformAdmin reports whether p may do everything: a user (not a key)
// with the platform-admin role, or a platform key with registry:admin.
func (p Principal) IsPlatformAdmin() bool {
	if p.isKey() {
		return p.Type == PrincipalPlatformKey && slices.Contains(p.Scopes, ScopeAdmin)
	}
	return slices.Contains(p.Roles, RolePlatformAdmin)
}

// Product returns the product a platform key acts for (its product:<key>
// scope), if any. Product scopes on any other principal mean nothing.
func (p Principal) Product() (string, bool) {
	if p.Type != PrincipalPlatformKey {
		return "", false
	}
	for _, s := range p.Scopes {
		if product, ok := strings.CutPrefix(s, ScopeProductPrefix); ok && product != "" {
			return product, true
		}
	}
	return "", false
}

// OwnTenant returns the ordinary tenant p belongs to, or "" for principals
// of no tenant and of the platform tenant, which has no tenant-scoped
// grants: only platform admins act on it.
func (p Principal) OwnTenant() string {
	if p.TenantID == PlatformTenantID || p.Type == PrincipalPlatformKey {
		return ""
	}
	return p.TenantID
}

// Can reports whether p may use perm on tenantID's data ("" for data of no
// tenant: the platform's).
func (p Principal) Can(perm Permission, tenantID string) bool {
	if p.IsPlatformAdmin() {
		return true
	}
	g := policy[perm]
	own := tenantID != "" && tenantID == p.OwnTenant()
	switch p.Type {
	case PrincipalPlatformKey:
		return g.platformScope != "" && slices.Contains(p.Scopes, g.platformScope)
	case PrincipalTenantKey:
		return own && g.tenantScope != "" && slices.Contains(p.Scopes, g.tenantScope)
	case PrincipalUser:
		return own && (g.tenantMember || (g.tenantAdmin && slices.Contains(p.Roles, RoleTenantAdmin)))
	}
	return false
}

// Sees reports whether p may learn that tenantID's data exists. To
// everyone else another tenant's data and data that does not exist look
// the same: not found.
func (p Principal) Sees(tenantID string) bool {
	return p.IsPlatformAdmin() || (tenantID != "" && tenantID == p.OwnTenant())
}

// Holds reports whether p may put scope on a credential it creates: a
// principal hands out only what it holds. Platform admins hold every
// scope; a tenant admin every scope a tenant key may carry; a tenant key
// its own scopes (platform scopes excepted, which mean nothing on it).
func (p Principal) Holds(scope string) bool {
	switch {
	case p.IsPlatformAdmin():
		return true
	case IsPlatformScope(scope):
		return false
	case p.Type == PrincipalUser:
		return p.OwnTenant() != "" && slices.Contains(p.Roles, RoleTenantAdmin)
	case p.Type == PrincipalTenantKey:
		return slices.Contains(p.Scopes, scope)
	}
	return false
}
