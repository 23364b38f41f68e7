package domain

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// EntitlementService runs the entitlement use cases: listing, checking,
// granting and revoking a tenant's products.
type EntitlementService struct {
	guard
	cache *KeyCache // shared with the key verifier
}

// List returns every entitlement of a tenant as read now (EXPIRED
// computed), by product. A FROZEN tenant's entitlements read as stored:
// freezing changes whether they count, not what they are.
func (s *EntitlementService) List(ctx context.Context, tenantID string) ([]*Entitlement, error) {
	tenantID, err := ParseID("tenant_id", tenantID)
	if err != nil {
		return nil, err
	}
	if err := s.allow(ctx, PermEntitlementsRead, tenantID, nil); err != nil {
		return nil, err
	}
	if _, err := s.store.Tenants().Get(ctx, tenantID); err != nil {
		return nil, err
	}
	ents, err := s.store.Entitlements().ListByTenant(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	now := s.now()
	for i, e := range ents {
		ents[i] = e.ReadAt(now)
	}
	return ents, nil
}

// CheckReason says why a check answered as it did.
type CheckReason string

// Check reasons.
const (
	CheckOK             CheckReason = "OK"
	CheckNoEntitlement  CheckReason = "NO_ENTITLEMENT"
	CheckExpired        CheckReason = "EXPIRED"
	CheckRevoked        CheckReason = "REVOKED"
	CheckTenantFrozen   CheckReason = "TENANT_FROZEN"
	CheckUnknownProduct CheckReason = "UNKNOWN_PRODUCT"
)

// Check is the answer to "may this tenant use this product now".
type Check struct {
	Entitled    bool
	Reason      CheckReason
	Entitlement *Entitlement // as read now; nil when the tenant has none
	Limits      Limits       // the limits in force when Entitled; nil otherwise

	at, until time.Time           // made at; good until (zero: for ever), see TenantRecord.check
	rendered  atomic.Pointer[any] // see Rendered
}

// Rendered returns what render makes of c, rendering it at the first call
// only: an answer is reused for every check of its tenant and product
// until it changes (see TenantRecord.check), and so is its rendering.
// render must depend on c alone.
func (c *Check) Rendered(render func(*Check) any) any {
	return renderOnce(&c.rendered, c, render)
}

// Answers that depend on nothing but their reason, made once.
var (
	unknownProduct = &Check{Reason: CheckUnknownProduct}
	noEntitlement  = &Check{Reason: CheckNoEntitlement}
	frozenWithout  = &Check{Reason: CheckTenantFrozen}
)

// Check says whether a tenant may use a product now, by the rule of
// Entitled, the same one EntitledProducts (and so key verification) uses.
// An unknown tenant is KindNotFound; an unknown product is an answer.
func (s *EntitlementService) Check(ctx context.Context, tenantID, product string) (*Check, error) {
	tenantID, err := tenantAndProduct(tenantID, product)
	if err != nil {
		return nil, err
	}
	if err := s.allow(ctx, PermEntitlementsCheck, tenantID, nil); err != nil {
		return nil, err
	}
	now := s.now()
	rec, err := s.tenantRecord(ctx, tenantID, now)
	if err != nil {
		return nil, err
	}
	e := rec.entitlement(product)
	if e == nil { // an entitlement names a product of the catalog
		if known, err := s.productExists(ctx, product); err != nil {
			return nil, err
		} else if !known {
			return unknownProduct, nil
		}
		if rec.Tenant.Status == TenantFrozen {
			return frozenWithout, nil
		}
		return noEntitlement, nil
	}
	return rec.check(e, now), nil
}

// check is the answer for e, the entitlement of rec's tenant for a
// product, at now. It changes with time only when e expires, so one
// answer serves every check from when it was made until then (or until
// the clock reads earlier than when it was made); a change to the tenant
// or its entitlements replaces rec in the cache, and its answers with it.
func (rec *TenantRecord) check(e *Entitlement, now time.Time) *Check {
	if v, ok := rec.checks.Load(e); ok {
		if c := v.(*Check); stillGood(c.at, c.until, now) {
			return c
		}
	}
	t := rec.Tenant
	c := &Check{Entitled: Entitled(t, e, now), Entitlement: e.ReadAt(now), at: now}
	if s := c.Entitlement.Status; (s == EntitlementTrial || s == EntitlementActive) && !e.ExpireTime.IsZero() {
		c.until = e.ExpireTime // when StatusAt turns EXPIRED
	}
	if c.Entitled {
		c.Limits = e.EffectiveLimits()
	}
	switch {
	case c.Entitled:
		c.Reason = CheckOK
	case t.Status == TenantFrozen:
		// The tenant's state comes first: activating it is what brings the
		// products back.
		c.Reason = CheckTenantFrozen
	case c.Entitlement.Status == EntitlementExpired:
		c.Reason = CheckExpired
	default:
		c.Reason = CheckRevoked
	}
	rec.checks.Store(e, c)
	return c
}

// tenantRecord reads a tenant and its entitlements through the key cache,
// which the same changes keep coherent as for verifications.
func (s *EntitlementService) tenantRecord(ctx context.Context, tenantID string, now time.Time) (*TenantRecord, error) {
	rec, gen := s.cache.lookupTenant(tenantID, now)
	if rec != nil {
		return rec, nil
	}
	t, err := s.store.Tenants().Get(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	es, err := s.store.Entitlements().ListByTenant(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	rec = &TenantRecord{Tenant: t, Entitlements: es}
	s.cache.putTenant(rec, gen, now)
	return rec, nil
}

// productExists reports whether product is in the catalog. That a product
// is not is not cached: it may be created any moment.
func (s *EntitlementService) productExists(ctx context.Context, product string) (bool, error) {
	if s.cache.productExists(product) {
		return true, nil
	}
	_, err := s.store.Products().Get(ctx, product)
	switch {
	case err == nil:
		s.cache.putProduct(product)
		return true, nil
	case ErrorKind(err) == KindNotFound:
		return false, nil
	}
	return false, err
}

// GrantEntitlement is the input of EntitlementService.Grant. A zero
// ExpireTime means the grant does not end.
type GrantEntitlement struct {
	TenantID   string
	Product    string
	ExpireTime time.Time
	Limits     Limits // override the product's, key by key; empty: none
	Etag       string // the entitlement as the caller read it; empty: whatever it is
}

// Grant makes the tenant's entitlement for a product ACTIVE with source
// GRANT, starting now, replacing any earlier one (a trial included: there
// stays one entitlement per tenant and product). Granting again what is
// already granted, with the same expiry, returns it unchanged.
func (s *EntitlementService) Grant(ctx context.Context, in GrantEntitlement) (*Entitlement, error) {
	var v Violations
	tenantID := checkID(&v, "tenant_id", in.TenantID)
	checkProductKey(&v, "product", in.Product)
	now := s.now()
	// As stored: a retry compares it with the stored one, and what is
	// returned equals what a later read returns.
	expire := s.store.StoredTime(in.ExpireTime)
	if !in.ExpireTime.IsZero() && !expire.After(now) {
		v.Add("expire_time", "must be in the future")
	}
	checkLimits(&v, "limits", in.Limits)
	if err := v.Err(); err != nil {
		return nil, err
	}
	limits := Limits{}.Over(in.Limits) // never nil: stored as given, compared as maps
	if err := s.allow(ctx, PermEntitlementsWrite, tenantID, tried("entitlement.granted", "u", "entitlement", in.Product)); err != nil {
		return nil, err
	}
	var out *Entitlement
	err := s.store.Atomically(ctx, func(r Repositories) error {
		// Locking the tenant orders every entitlement change of a tenant.
		t, err := r.Tenants().GetForUpdate(ctx, tenantID)
		if err != nil {
			return err
		}
		p, err := r.Products().Get(ctx, in.Product)
		if err != nil {
			return err
		}
		prev, err := r.Entitlements().Get(ctx, t.ID, in.Product)
		if err != nil && ErrorKind(err) != KindNotFound {
			return err
		}
		if err := entitlementEtag(in.Etag, prev); err != nil {
			return err
		}
		from := "NONE"
		if prev != nil {
			from = string(prev.StatusAt(now))
			if prev.Source == SourceGrant && from == string(EntitlementActive) && prev.ExpireTime.Equal(expire) && maps.Equal(prev.Limits, limits) {
				out = prev.ReadAt(now)
				out.Base = baseLimits(p, out.Source)
				// A retry: nothing changes and no event, but the answer
				// waits until this replica's cache feels the grant.
				return r.Invalidations().Repeat(ctx, staleEntitlement(prev, ChangeEntitlementGranted))
			}
		}
		e := &Entitlement{
			TenantID: t.ID, Product: in.Product, Status: EntitlementActive, Source: SourceGrant,
			StartTime: now, ExpireTime: expire, CreateTime: now, UpdateTime: now, Limits: limits,
		}
		if prev != nil {
			e.CreateTime = prev.CreateTime
		}
		if err := r.Entitlements().Upsert(ctx, e); err != nil {
			return err
		}
		kind := ChangeEntitlementGranted
		if from == string(EntitlementActive) && prev.Source == SourceGrant {
			kind = ChangeEntitlementChanged // an active grant whose end or limits changed
		}
		if err := r.Invalidations().Announce(ctx, staleEntitlement(e, kind)); err != nil {
			return err
		}
		e.Base = baseLimits(p, e.Source)
		out = e
		crud := "c"
		if prev != nil {
			crud = "u"
		}
		c := entitlementChange(e, "entitlement.granted", crud, fmt.Sprintf("%s granted (was %s)", e.Product, from))
		c.Fields["from"] = from
		if prev != nil && !maps.Equal(prev.Limits, limits) {
			c.Fields["limits_before"] = limitsText(prev.Limits)
		}
		return recordChange(ctx, r, now, c)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Revoke sets the tenant's entitlement for a product to REVOKED. Revoking
// a revoked entitlement returns it unchanged.
func (s *EntitlementService) Revoke(ctx context.Context, tenantID, product, etag string) (*Entitlement, error) {
	tenantID, err := tenantAndProduct(tenantID, product)
	if err != nil {
		return nil, err
	}
	if err := s.allow(ctx, PermEntitlementsWrite, tenantID, tried("entitlement.revoked", "u", "entitlement", product)); err != nil {
		return nil, err
	}
	now := s.now()
	var out *Entitlement
	err = s.store.Atomically(ctx, func(r Repositories) error {
		t, err := r.Tenants().GetForUpdate(ctx, tenantID)
		if err != nil {
			return err
		}
		e, err := r.Entitlements().Get(ctx, t.ID, product)
		if ErrorKind(err) == KindNotFound {
			return Errorf(KindNotFound, "tenant %s has no entitlement for %s", t.ID, product)
		} else if err != nil {
			return err
		}
		if err := entitlementEtag(etag, e); err != nil {
			return err
		}
		if e.Status == EntitlementRevoked {
			out = e.ReadAt(now)
			return r.Invalidations().Repeat(ctx, staleEntitlement(e, ChangeEntitlementRevoked)) // already revoked: a safe retry, felt here before it answers
		}
		from := e.StatusAt(now)
		e.Status, e.UpdateTime = EntitlementRevoked, now
		if err := r.Entitlements().Upsert(ctx, e); err != nil {
			return err
		}
		if err := r.Invalidations().Announce(ctx, staleEntitlement(e, ChangeEntitlementRevoked)); err != nil {
			return err
		}
		out = e.ReadAt(now)
		c := entitlementChange(e, "entitlement.revoked", "u", fmt.Sprintf("%s revoked (was %s)", product, from))
		c.Fields["from"] = string(from)
		return recordChange(ctx, r, now, c)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// entitlementEtag refuses a change of an entitlement read at another
// version than prev's (nil: there is none, which no etag names).
func entitlementEtag(given string, prev *Entitlement) error {
	if given == "" {
		return nil
	}
	if prev == nil {
		return Errorf(KindAborted, "etag %q is stale: the tenant has no entitlement for the product now", given)
	}
	return checkEtag(given, prev.Etag(), "entitlement")
}

// limitsText writes limits for an audit event's fields, keys sorted.
func limitsText(l Limits) string {
	keys := slices.Sorted(maps.Keys(l))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, l[k])
	}
	return strings.Join(parts, ",")
}

// entitlementChange describes a change of e for the tenant's audit chain.
func entitlementChange(e *Entitlement, action, crud, description string) change {
	fields := map[string]string{"product": e.Product, "status": string(e.Status), "source": string(e.Source)}
	if len(e.Limits) > 0 {
		fields["limits"] = limitsText(e.Limits)
	}
	if !e.ExpireTime.IsZero() {
		fields["expire_time"] = e.ExpireTime.Format(time.RFC3339Nano)
	}
	return change{
		TenantID: e.TenantID, Action: action, CRUD: crud, Description: description, Fields: fields,
		Target: AuditTarget{ID: e.Product, Type: "entitlement", Name: e.Product},
	}
}

// tenantAndProduct validates the (tenant_id, product) pair most
// entitlement calls take, returning the tenant id in canonical form.
func tenantAndProduct(tenantID, product string) (string, error) {
	var v Violations
	tenantID = checkID(&v, "tenant_id", tenantID)
	checkProductKey(&v, "product", product)
	return tenantID, v.Err()
}

// staleEntitlement is the change of kind to entitlement e.
func staleEntitlement(e *Entitlement, kind ChangeKind) Change {
	return Change{Kind: kind, TenantID: e.TenantID, Product: e.Product}
}
