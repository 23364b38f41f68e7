package domain

import "context"

// Principal is who is calling, as authentication established it.
type Principal struct {
	ID       string   // subject: a user id, or the id of a service key
	Name     string   // display name, for audit events
	Type     string   // "user", "service_key" or "dev"
	TenantID string   // the tenant a tenant-scoped principal belongs to; empty for platform principals
	Roles    []string // OIDC roles (platform-admin, tenant-admin, …)
	Scopes   []string // service key scopes (registry:admin, registry:verify, …)
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
