package domain

import (
	"context"
	"slices"
	"time"
)

// EntitlementStatus is an entitlement's state as read at a moment.
type EntitlementStatus string

// Entitlement states. EXPIRED is never stored: a TRIAL or ACTIVE
// entitlement past its expire time reads EXPIRED, so a trial ends on time
// without a background job.
const (
	EntitlementTrial   EntitlementStatus = "TRIAL"
	EntitlementActive  EntitlementStatus = "ACTIVE"
	EntitlementExpired EntitlementStatus = "EXPIRED"
	EntitlementRevoked EntitlementStatus = "REVOKED"
)

// EntitlementSource says how a tenant got an entitlement.
type EntitlementSource string

// Entitlement sources.
const (
	SourceTrial EntitlementSource = "TRIAL"
	SourceGrant EntitlementSource = "GRANT"
)

// Entitlement is a tenant's right to use a product. There is at most one
// per tenant and product.
type Entitlement struct {
	TenantID   string
	Product    string
	Status     EntitlementStatus // as stored: TRIAL, ACTIVE or REVOKED; EXPIRED only in copies made by ReadAt
	Source     EntitlementSource
	StartTime  time.Time
	ExpireTime time.Time // zero: no end
	CreateTime time.Time
	UpdateTime time.Time
	// Limits override the product's, key by key, for this tenant (a
	// grant's); Base are the product's that apply (its trial limits for a
	// trial, when it has any, else its defaults), read with the product.
	Limits Limits
	Base   Limits

	// What EffectiveLimits and Etag answer, kept by seal for entitlements
	// that no longer change (those the key cache holds), so that a warm
	// verification does not build them again on every call.
	sealedLimits Limits
	sealedEtag   string
}

// EffectiveLimits are the limits in force: Limits over Base. The map of a
// sealed entitlement is shared: read it, do not change it.
func (e *Entitlement) EffectiveLimits() Limits {
	if e.sealedLimits != nil {
		return e.sealedLimits
	}
	return e.Limits.Over(e.Base)
}

// seal computes what EffectiveLimits and Etag answer once, for an
// entitlement that will not change again.
func (e *Entitlement) seal() {
	e.sealedLimits, e.sealedEtag = nil, ""
	e.sealedLimits, e.sealedEtag = e.EffectiveLimits(), e.Etag()
}

// Etag is the entitlement's version (AIP-154).
// It is the same for the stored entitlement and a copy made by ReadAt,
// which may say EXPIRED where the store says TRIAL or ACTIVE: the status
// adds only whether it is revoked, the rest follows from the source and
// the expire time.
func (e *Entitlement) Etag() string {
	if e.sealedEtag != "" {
		return e.sealedEtag
	}
	var t etag
	revoked := "live"
	if e.Status == EntitlementRevoked {
		revoked = "revoked"
	}
	return t.str(e.TenantID).str(e.Product).str(revoked).str(string(e.Source)).time(e.StartTime).time(e.ExpireTime).limits(e.Limits).String()
}

// baseLimits are the limits of p an entitlement of source src starts from.
func baseLimits(p *Product, src EntitlementSource) Limits {
	if src == SourceTrial && len(p.TrialLimits) > 0 {
		return p.TrialLimits
	}
	return p.DefaultLimits
}

// StatusAt is the entitlement's status at now: TRIAL and ACTIVE turn
// EXPIRED once their expire time has passed.
func (e *Entitlement) StatusAt(now time.Time) EntitlementStatus {
	if (e.Status == EntitlementTrial || e.Status == EntitlementActive) && !e.ExpireTime.IsZero() && !now.Before(e.ExpireTime) {
		return EntitlementExpired
	}
	return e.Status
}

// ReadAt returns a copy of e as a reader sees it at now: its Status is
// StatusAt(now), so EXPIRED appears.
func (e *Entitlement) ReadAt(now time.Time) *Entitlement {
	c := *e
	c.Status = e.StatusAt(now)
	return &c
}

// Entitled is the one rule for "may this tenant use the product of e now":
// e is TRIAL or ACTIVE and unexpired, and the tenant is not FROZEN. A nil e
// (no entitlement) is not entitled.
func Entitled(tenant *Tenant, e *Entitlement, now time.Time) bool {
	if tenant.Status == TenantFrozen || e == nil {
		return false
	}
	s := e.StatusAt(now)
	return s == EntitlementTrial || s == EntitlementActive
}

// EntitledProducts is the one answer to "which products may this tenant use
// now": the products of its entitlements that pass Entitled, so none while
// the tenant is FROZEN. Sorted.
func EntitledProducts(tenant *Tenant, ents []*Entitlement, now time.Time) []string {
	var out []string
	for _, e := range ents {
		if Entitled(tenant, e, now) {
			out = append(out, e.Product)
		}
	}
	slices.Sort(out)
	return out
}

// EntitlementReader reads entitlements, at most one per tenant and
// product.
type EntitlementReader interface {
	// ListByTenant returns every entitlement of a tenant, by product.
	ListByTenant(ctx context.Context, tenantID string) ([]*Entitlement, error)
	// Get returns the tenant's entitlement for the product, or KindNotFound.
	Get(ctx context.Context, tenantID, product string) (*Entitlement, error)
}

// EntitlementRepository stores entitlements, in a transaction
// (Store.Atomically).
type EntitlementRepository interface {
	EntitlementReader
	// Upsert stores e, replacing the tenant's entitlement for the product
	// if there is one.
	Upsert(ctx context.Context, e *Entitlement) error
}
