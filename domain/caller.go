package domain

import (
	"context"
	"strings"
	"time"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// Principal is who is calling, as authentication established it.
type Principal struct {
	ID       string   // subject: a user id, or the id of a service key
	Name     string   // display name, for audit events
	Type     string   // PrincipalUser, PrincipalTenantKey, PrincipalPlatformKey or PrincipalDev
	TenantID string   // the tenant the principal belongs to; empty for platform users
	Roles    []string // OIDC roles (platform-admin, tenant-admin, …); users only
	Scopes   []string // key scopes (registry:admin, registry:verify, analytics:read, …); keys only
	// ExpireTime is when a key principal stops verifying (zero: never);
	// the keys it creates may not outlive it.
	ExpireTime time.Time
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
		ExpireTime: v.ExpireTime,
	}
}

// UserPrincipal is the principal of a user an identity provider vouched
// for. The tenant claim counts only as a canonical UUID (in any case);
// anything else means the user belongs to no tenant. The name is the
// provider's, which users may edit: it is kept to what a name may be.
func UserPrincipal(subject, name, tenantClaim string, roles []string) Principal {
	var v Violations
	tenant := checkID(&v, "tenant", strings.TrimSpace(tenantClaim))
	if len(v) > 0 {
		tenant = ""
	}
	return Principal{ID: subject, Name: cleanName(name), Type: PrincipalUser, TenantID: tenant, Roles: roles}
}

// cleanName keeps of s what a name may hold (see checkName), NFC-normalised
// and at most MaxDisplayNameLen characters.
func cleanName(s string) string {
	var b strings.Builder
	n := 0
	for _, r := range norm.NFC.String(strings.ToValidUTF8(s, "")) {
		if unicode.IsControl(r) || invisible(r) {
			r = ' '
		}
		if n == MaxDisplayNameLen {
			break
		}
		b.WriteRune(r)
		n++
	}
	return strings.Join(strings.Fields(b.String()), " ")
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
