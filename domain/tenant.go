package domain

import (
	"context"
	"fmt"
	"regexp"
	"time"
	"unicode/utf8"
)

// TenantStatus is where a tenant is in its lifecycle.
type TenantStatus string

// Tenant lifecycle states. New tenants are TRIAL; ACTIVE tenants pay;
// FROZEN tenants keep their data, but their keys and entitlements stop working.
const (
	TenantTrial  TenantStatus = "TRIAL"
	TenantActive TenantStatus = "ACTIVE"
	TenantFrozen TenantStatus = "FROZEN"
)

// Valid reports whether s is one of the lifecycle states.
func (s TenantStatus) Valid() bool {
	return s == TenantTrial || s == TenantActive || s == TenantFrozen
}

// Tenant is an organisation using the products.
type Tenant struct {
	ID          string
	Slug        string
	DisplayName string
	Status      TenantStatus
	ExternalID  string
	Metadata    map[string]string
	CreateTime  time.Time
	UpdateTime  time.Time
}

// Etag is the tenant's version (AIP-154).
func (t *Tenant) Etag() string {
	var e etag
	return e.str(t.ID).str(t.DisplayName).str(string(t.Status)).str(t.ExternalID).strings(t.Metadata).String()
}

// Bounds of a tenant's fields.
const (
	MaxDisplayNameLen   = 200
	MaxExternalIDLen    = 200
	MaxMetadataKeys     = 32
	MaxMetadataKeyLen   = 40
	MaxMetadataValueLen = 500
	MaxQueryLen         = 200
)

var slugPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$`)

// reservedSlugs cannot be taken by tenants: they name the platform's own
// hosts and paths, or would confuse people reading a URL.
var reservedSlugs = map[string]bool{
	"admin": true, "administrator": true, "api": true, "app": true, "apps": true,
	"assets": true, "auth": true, "billing": true, "cdn": true, "console": true,
	"dashboard": true, "dev": true, "docs": true, "help": true, "internal": true,
	"login": true, "logout": true, "mail": true, "null": true, "oauth": true,
	"platform": true, "portal": true, "prod": true, "registry": true, "root": true,
	"security": true, "signup": true, "sso": true, "stage": true, "staging": true,
	"static": true, "status": true, "support": true, "system": true, "test": true,
	"undefined": true, "www": true,
}

// checkSlug records why slug is not an acceptable tenant slug, if it is not.
func checkSlug(v *Violations, field, slug string) {
	switch {
	case slug == "":
		v.Add(field, "is required")
	case !utf8.ValidString(slug) || !slugPattern.MatchString(slug):
		v.Add(field, "must be 3 to 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit")
	case reservedSlugs[slug]:
		v.Add(field, "%q is reserved", slug)
	}
}

// checkMetadata records a violation for every bound metadata breaks.
func checkMetadata(v *Violations, md map[string]string) {
	if len(md) > MaxMetadataKeys {
		v.Add("metadata", "must have at most %d keys, got %d", MaxMetadataKeys, len(md))
		return
	}
	for k, val := range md {
		field := fmt.Sprintf("metadata[%q]", k)
		if !utf8.ValidString(k) {
			v.Add("metadata", "keys must be valid UTF-8")
			continue
		}
		if k == "" {
			v.Add("metadata", "keys must not be empty")
			continue
		}
		checkText(v, field, k, MaxMetadataKeyLen, false)
		checkText(v, field, val, MaxMetadataValueLen, false)
	}
}

// transition returns the status a lifecycle action moves a tenant to, or a
// KindFailedPrecondition error when the action is not allowed from the
// tenant's current status. Moving to the current status is allowed: callers
// treat it as a no-op, so retries are safe.
func (t *Tenant) transition(to TenantStatus) error {
	if t.Status == to {
		return nil
	}
	allowed := map[TenantStatus][]TenantStatus{
		TenantActive: {TenantTrial, TenantFrozen},
		TenantFrozen: {TenantTrial, TenantActive},
	}
	for _, from := range allowed[to] {
		if t.Status == from {
			return nil
		}
	}
	return Errorf(KindFailedPrecondition, "tenant %s is %s and cannot become %s", t.ID, t.Status, to)
}

// TenantFilter narrows a tenant list. Zero values match everything.
type TenantFilter struct {
	Status TenantStatus // exact status
	Query  string       // case-insensitive substring of slug or display name
}

// TenantReader reads tenants. Implementations return *Error values:
// KindNotFound for a missing tenant.
type TenantReader interface {
	Get(ctx context.Context, id string) (*Tenant, error)
	GetBySlug(ctx context.Context, slug string) (*Tenant, error)
	// List returns up to limit tenants matching f with ids greater than
	// afterID (all when empty), in id order, which is creation order. The
	// platform tenant is not a customer's and is not listed.
	List(ctx context.Context, f TenantFilter, afterID string, limit int) ([]*Tenant, error)
}

// TenantRepository stores tenants, in a transaction (Store.Atomically).
// A taken slug is KindAlreadyExists.
type TenantRepository interface {
	TenantReader
	Create(ctx context.Context, t *Tenant) error
	// GetForUpdate reads a tenant and keeps concurrent writers of the same
	// tenant out until the transaction ends.
	GetForUpdate(ctx context.Context, id string) (*Tenant, error)
	Update(ctx context.Context, t *Tenant) error
}
