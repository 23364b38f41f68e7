package domain

import (
	"context"
	"fmt"
	"regexp"
	"time"
	"unicode/utf8"
)

// Product is an entry of the catalog: something a tenant can be entitled to.
type Product struct {
	Key         string // immutable; names the product in entitlements, keys and audit events
	DisplayName string
	Description string
	TrialDays   int // length of a self-serve trial; 0: no trial
	CreateTime  time.Time
	UpdateTime  time.Time
	// DefaultLimits are an entitlement's limits unless its grant overrides
	// them; TrialLimits a trial's (empty: the defaults).
	DefaultLimits Limits
	TrialLimits   Limits
}

// Etag is the product's version (AIP-154).
func (p *Product) Etag() string {
	var t etag
	return t.str(p.Key).str(p.DisplayName).str(p.Description).str(fmt.Sprint(p.TrialDays)).limits(p.DefaultLimits).limits(p.TrialLimits).String()
}

// Bounds of a product and of a product request.
const (
	MaxProductDescriptionLen = 2000
	MaxProductNoteLen        = 2000
	MaxTrialDays             = 90
	DefaultTrialDays         = 14
)

// productKeyPattern is the tenant slug's pattern: keys appear in URLs and
// in other products' configuration. Reserved words do not apply, as keys
// live in a namespace of their own.
var productKeyPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$`)

// checkProductKey records why key is not an acceptable product key.
func checkProductKey(v *Violations, field, key string) {
	switch {
	case key == "":
		v.Add(field, "is required")
	case !utf8.ValidString(key) || !productKeyPattern.MatchString(key):
		v.Add(field, "must be 3 to 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit")
	}
}

// checkNewProductKey is checkProductKey for a product being created: the
// registry's own product name is reserved, so that no platform key can act
// for it and write events that look like the registry's own.
func checkNewProductKey(v *Violations, field, key string) {
	checkProductKey(v, field, key)
	if key == RegistryProduct {
		v.Add(field, "%q is reserved: it names the registry's own audit events", key)
	}
}

func checkTrialDays(v *Violations, field string, days int) {
	if days < 0 || days > MaxTrialDays {
		v.Add(field, "must be between 0 and %d, got %d", MaxTrialDays, days)
	}
}

// TrialEnd is when a trial of p started at start ends: whole days of
// 24 hours, so the length does not depend on time zones.
func (p *Product) TrialEnd(start time.Time) time.Time {
	return start.Add(time.Duration(p.TrialDays) * 24 * time.Hour)
}

// ProductReader reads the catalog. Implementations return KindNotFound
// for an unknown key.
type ProductReader interface {
	Get(ctx context.Context, key string) (*Product, error)
	// List returns every product, by key.
	List(ctx context.Context) ([]*Product, error)
}

// ProductRepository stores the catalog, in a transaction
// (Store.Atomically). A taken key is KindAlreadyExists.
type ProductRepository interface {
	ProductReader
	Create(ctx context.Context, p *Product) error
	// GetForUpdate reads a product and keeps concurrent writers of the
	// same product out until the transaction ends.
	GetForUpdate(ctx context.Context, key string) (*Product, error)
	Update(ctx context.Context, p *Product) error
}

// ProductRequestStatus is whether sales has followed a request up.
type ProductRequestStatus string

// Product request states.
const (
	RequestOpen   ProductRequestStatus = "OPEN"
	RequestClosed ProductRequestStatus = "CLOSED"
)

// ProductRequest is a tenant asking for a product, for sales to follow up.
type ProductRequest struct {
	ID          string
	TenantID    string
	Product     string
	Note        string
	Status      ProductRequestStatus
	RequestedBy string // the principal id of whoever asked
	CreateTime  time.Time
}

// ProductRequestReader reads product requests.
type ProductRequestReader interface {
	// GetOpen returns the tenant's OPEN request for the product, or KindNotFound.
	GetOpen(ctx context.Context, tenantID, product string) (*ProductRequest, error)
	// List returns up to limit requests in status (any when empty) with ids
	// greater than afterID (all when empty), in id order, which is creation order.
	List(ctx context.Context, status ProductRequestStatus, afterID string, limit int) ([]*ProductRequest, error)
}

// ProductRequestRepository stores product requests, in a transaction
// (Store.Atomically).
type ProductRequestRepository interface {
	ProductRequestReader
	// Create stores r; KindAlreadyExists when the tenant has an OPEN request
	// for the product already.
	Create(ctx context.Context, r *ProductRequest) error
}

// TrialRepository remembers every trial ever started.
type TrialRepository interface {
	// Start records that the tenant started a trial of the product at start;
	// KindAlreadyExists when it ever did before.
	Start(ctx context.Context, tenantID, product string, start time.Time) error
}
