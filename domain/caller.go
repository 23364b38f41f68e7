package domain

import "context"

// Principal is who is calling, as authentication established it.
type Principal struct {
	ID       string   // subject: a user id, or the id of a service key
	Name     string   // display name, for audit events
	Type     string   // PrincipalUser, PrincipalTenantKey, PrincipalPlatformKey or PrincipalDev
	TenantID string   // the tenant the principal belongs to; empty for platform users
	Roles    []string // OIDC roles (platform-admin, tenant-admin, …); users only
	Scopes   []string // key scopes (registry:admin, registry:verify, analytics:read, …); keys only
}

// KeyPrincipal is the principal of a key verified valid: a platform key
// when it belongs to the platform tenant, a tenant key otherwise.
func KeyPrincipal(v *Verification) Principal {
	kind := PrincipalTenantKey
	if v.TenantID == PlatformTenantID {
		kind = PrincipalPlatformKey
	}
	return Principal{
		ID: v.KeyID, Name: "API key of " + v.TenantSlug, Type: kind, TenantID: v.TenantID, Scopes: v.Scopes,
	}
}

// Caller is everything the domain needs to know about the origin of a
// request: the principal and the network address it came from.
type Caller struct {
	Principal Principal
	SourceIP  string
}

type callerKey struct{}

// WithCaller returns a context carrying c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller carried by ctx; the zero Caller when none.
func CallerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}
