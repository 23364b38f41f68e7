package domain

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"
)

// CatalogService runs the catalog use cases: the products, the requests
// tenants make for them, and self-serve trials.
type CatalogService struct{ guard }

// NewCatalogService returns a CatalogService persisting to store and
// telling time by now.
func NewCatalogService(store Store, now Clock) *CatalogService {
	return &CatalogService{guard: newGuard(store, now)}
}

// ListProducts returns the whole catalog, by key.
func (s *CatalogService) ListProducts(ctx context.Context) ([]*Product, error) {
	// Every tenant's users may read the catalog: it is checked against
	// the caller's own tenant.
	if err := s.allow(ctx, PermCatalogRead, CallerFrom(ctx).Principal.OwnTenant(), nil); err != nil {
		return nil, err
	}
	return s.store.Products().List(ctx)
}

// CreateProduct is the input of CatalogService.CreateProduct. A nil
// TrialDays means DefaultTrialDays.
type CreateProduct struct {
	Key           string
	DisplayName   string
	Description   string
	TrialDays     *int
	DefaultLimits Limits
	TrialLimits   Limits // empty: trials get the defaults
}

// CreateProduct validates in and adds it to the catalog.
func (s *CatalogService) CreateProduct(ctx context.Context, in CreateProduct) (*Product, error) {
	var v Violations
	checkNewProductKey(&v, "key", in.Key)
	name := checkName(&v, "display_name", in.DisplayName, MaxDisplayNameLen)
	checkText(&v, "description", in.Description, MaxProductDescriptionLen, true)
	days := DefaultTrialDays
	if in.TrialDays != nil {
		days = *in.TrialDays
		checkTrialDays(&v, "trial_days", days)
	}
	checkLimits(&v, "default_limits", in.DefaultLimits)
	checkLimits(&v, "trial_limits", in.TrialLimits)
	if err := v.Err(); err != nil {
		return nil, err
	}
	if err := s.allow(ctx, PermCatalogWrite, "", tried("product.created", "c", "product", in.Key)); err != nil {
		return nil, err
	}
	now := s.now()
	p := &Product{
		Key: in.Key, DisplayName: name, Description: in.Description,
		TrialDays: days, CreateTime: now, UpdateTime: now,
		DefaultLimits: Limits{}.Over(in.DefaultLimits), TrialLimits: Limits{}.Over(in.TrialLimits),
	}
	err := s.store.Atomically(ctx, func(r Repositories) error {
		if err := r.Products().Create(ctx, p); err != nil {
			return err
		}
		return recordChange(ctx, r, now, productChange(p, "product.created", "c", "product created", nil))
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// UpdateProduct is the input of CatalogService.UpdateProduct. Without a
// Mask, nil fields (and empty limits) stay as they are; with one, exactly
// the fields it names change, an absent value being the field's zero.
type UpdateProduct struct {
	Key           string
	DisplayName   *string
	Description   *string
	TrialDays     *int
	DefaultLimits Limits
	TrialLimits   Limits
	Mask          []string
	Etag          string
}

// productPaths are the fields UpdateProduct may change.
var productPaths = []string{"display_name", "description", "trial_days", "default_limits", "trial_limits"}

// UpdateProduct changes a product's display name, description, trial
// length and limits. Running trials keep their expiry; changed limits are
// announced, as every tenant's verification answers name them.
func (s *CatalogService) UpdateProduct(ctx context.Context, in UpdateProduct) (*Product, error) {
	var v Violations
	checkProductKey(&v, "key", in.Key)
	if paths := checkMask(&v, in.Mask, productPaths, false); paths != nil {
		// A mask names what changes: everything it names, and nothing else.
		zero, none := "", 0
		in.DisplayName, in.Description, in.TrialDays = pick(paths["display_name"], in.DisplayName, &zero),
			pick(paths["description"], in.Description, &zero), pick(paths["trial_days"], in.TrialDays, &none)
		if paths["default_limits"] {
			in.DefaultLimits = Limits{}.Over(in.DefaultLimits)
		} else {
			in.DefaultLimits = nil
		}
		if paths["trial_limits"] {
			in.TrialLimits = Limits{}.Over(in.TrialLimits)
		} else {
			in.TrialLimits = nil
		}
	} else {
		if len(in.DefaultLimits) == 0 {
			in.DefaultLimits = nil
		}
		if len(in.TrialLimits) == 0 {
			in.TrialLimits = nil
		}
	}
	checkLimits(&v, "default_limits", in.DefaultLimits)
	checkLimits(&v, "trial_limits", in.TrialLimits)
	if in.DisplayName != nil {
		name := checkName(&v, "display_name", *in.DisplayName, MaxDisplayNameLen)
		in.DisplayName = &name
	}
	if in.Description != nil {
		checkText(&v, "description", *in.Description, MaxProductDescriptionLen, true)
	}
	if in.TrialDays != nil {
		checkTrialDays(&v, "trial_days", *in.TrialDays)
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	if err := s.allow(ctx, PermCatalogWrite, "", tried("product.updated", "u", "product", in.Key)); err != nil {
		return nil, err
	}
	var out *Product
	err := s.store.Atomically(ctx, func(r Repositories) error {
		p, err := r.Products().GetForUpdate(ctx, in.Key)
		if err != nil {
			return err
		}
		if err := checkEtag(in.Etag, p.Etag(), "product"); err != nil {
			return err
		}
		out = p
		var changed []string
		if in.DisplayName != nil && *in.DisplayName != p.DisplayName {
			p.DisplayName, changed = *in.DisplayName, append(changed, "display_name")
		}
		if in.Description != nil && *in.Description != p.Description {
			p.Description, changed = *in.Description, append(changed, "description")
		}
		if in.TrialDays != nil && *in.TrialDays != p.TrialDays {
			p.TrialDays, changed = *in.TrialDays, append(changed, "trial_days")
		}
		limitsChanged := false
		if in.DefaultLimits != nil && !maps.Equal(in.DefaultLimits, p.DefaultLimits) {
			p.DefaultLimits, changed, limitsChanged = in.DefaultLimits, append(changed, "default_limits"), true
		}
		if in.TrialLimits != nil && !maps.Equal(in.TrialLimits, p.TrialLimits) {
			p.TrialLimits, changed, limitsChanged = in.TrialLimits, append(changed, "trial_limits"), true
		}
		if len(changed) == 0 { // nothing changes: no write, no event, so retries are safe
			if in.DefaultLimits != nil || in.TrialLimits != nil { // a retried change of limits is felt here before it answers
				return r.Invalidations().Repeat(ctx, Change{Kind: ChangeProductChanged, Product: p.Key})
			}
			return nil
		}
		p.UpdateTime = s.now()
		if err := r.Products().Update(ctx, p); err != nil {
			return err
		}
		if limitsChanged {
			// Every tenant's verifications name the product's limits.
			if err := r.Invalidations().Announce(ctx, Change{Kind: ChangeProductChanged, Product: p.Key}); err != nil {
				return err
			}
		}
		fields := map[string]string{"changed": strings.Join(changed, ",")}
		return recordChange(ctx, r, p.UpdateTime, productChange(p, "product.updated", "u", "product updated", fields))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// pick is v when the mask names the field and holds a value, zero when it
// names it without one, and nil (unchanged) when it does not name it.
func pick[T any](named bool, v, zero *T) *T {
	switch {
	case !named:
		return nil
	case v == nil:
		return zero
	}
	return v
}

// RequestProduct is the input of CatalogService.RequestProduct.
type RequestProduct struct {
	TenantID string
	Product  string
	Note     string
}

// RequestProduct stores an OPEN request of a tenant for a product, for
// sales to follow up. While one is open, asking again returns it.
func (s *CatalogService) RequestProduct(ctx context.Context, in RequestProduct) (*ProductRequest, error) {
	var v Violations
	tenantID := checkID(&v, "tenant_id", in.TenantID)
	checkProductKey(&v, "product", in.Product)
	checkText(&v, "note", in.Note, MaxProductNoteLen, true)
	if err := v.Err(); err != nil {
		return nil, err
	}
	if err := s.allow(ctx, PermProductRequest, tenantID, tried("product.requested", "c", "product", in.Product)); err != nil {
		return nil, err
	}
	now := s.now()
	req := &ProductRequest{
		ID: NewID(), TenantID: tenantID, Product: in.Product, Note: in.Note, Status: RequestOpen,
		RequestedBy: CallerFrom(ctx).Principal.ID, CreateTime: now,
	}
	out, raced := req, false
	err := s.store.Atomically(ctx, func(r Repositories) error {
		t, err := r.Tenants().Get(ctx, tenantID)
		if err != nil {
			return err
		}
		if _, err := r.Products().Get(ctx, in.Product); err != nil {
			return err
		}
		open, err := r.ProductRequests().GetOpen(ctx, tenantID, in.Product)
		if err == nil {
			out = open
			return nil
		} else if ErrorKind(err) != KindNotFound {
			return err
		}
		if err := r.ProductRequests().Create(ctx, req); err != nil {
			raced = ErrorKind(err) == KindAlreadyExists
			return err
		}
		return recordChange(ctx, r, now, change{
			TenantID: tenantID, Action: "product.requested", CRUD: "c",
			Description: fmt.Sprintf("tenant %s requested product %s", t.Slug, in.Product),
			Target:      AuditTarget{ID: req.ID, Type: "product_request", Name: in.Product},
			Fields:      map[string]string{"product": in.Product},
		})
	})
	if raced {
		// A concurrent request stored the open one first: answer with it.
		return s.store.ProductRequests().GetOpen(ctx, tenantID, in.Product)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ListProductRequests returns one page of the requests in status (any when
// empty), oldest first, the order sales works through them.
func (s *CatalogService) ListProductRequests(ctx context.Context, status ProductRequestStatus, p PageRequest) (*Page[*ProductRequest], error) {
	var v Violations
	if status != "" && status != RequestOpen && status != RequestClosed {
		v.Add("status", "must be one of OPEN, CLOSED")
	}
	size := p.pageSize(&v)
	query := "product_requests|" + string(status)
	after := p.afterID(&v, query)
	if err := v.Err(); err != nil {
		return nil, err
	}
	if err := s.allow(ctx, PermProductRequestsList, "", nil); err != nil {
		return nil, err
	}
	reqs, err := s.store.ProductRequests().List(ctx, status, after, size+1)
	if err != nil {
		return nil, err
	}
	return pageOf(reqs, size, query, func(r *ProductRequest) string { return r.ID }), nil
}

// StartTrial grants a tenant a TRIAL entitlement for a product, ending
// after the product's trial days. A tenant gets one trial per product,
// ever; a FROZEN tenant, a tenant that has or had the product, and a
// product without trials get KindFailedPrecondition.
func (s *CatalogService) StartTrial(ctx context.Context, tenantID, product string) (*Entitlement, error) {
	tenantID, err := tenantAndProduct(tenantID, product)
	if err != nil {
		return nil, err
	}
	if err := s.allow(ctx, PermTrialStart, tenantID, tried("trial.started", "c", "entitlement", product)); err != nil {
		return nil, err
	}
	now := s.now()
	var out *Entitlement
	err = s.store.Atomically(ctx, func(r Repositories) error {
		// The tenant's row lock orders the trial after any lifecycle change
		// or entitlement change of the tenant running concurrently.
		t, err := r.Tenants().GetForUpdate(ctx, tenantID)
		if err != nil {
			return err
		}
		p, err := r.Products().Get(ctx, product)
		if err != nil {
			return err
		}
		if err := trialAllowed(ctx, r, t, p, now); err != nil {
			return err
		}
		// The trials table's key holds the rule even if the checks above
		// were raced past: the second insert fails.
		if err := r.Trials().Start(ctx, t.ID, p.Key, now); err != nil {
			if ErrorKind(err) == KindAlreadyExists {
				return alreadyTrialed(p.Key)
			}
			return err
		}
		e := &Entitlement{
			TenantID: t.ID, Product: p.Key, Status: EntitlementTrial, Source: SourceTrial,
			StartTime: now, ExpireTime: p.TrialEnd(now), CreateTime: now, UpdateTime: now,
			Limits: Limits{}, Base: baseLimits(p, SourceTrial),
		}
		if err := r.Entitlements().Upsert(ctx, e); err != nil {
			return err
		}
		if err := r.Invalidations().Announce(ctx, staleEntitlement(e, ChangeEntitlementGranted)); err != nil {
			return err
		}
		out = e
		return recordChange(ctx, r, now, entitlementChange(e, "trial.started", "c",
			fmt.Sprintf("%d-day trial of %s started", p.TrialDays, p.Key)))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// trialAllowed refuses a trial the rules do not allow, saying why.
func trialAllowed(ctx context.Context, r Repositories, t *Tenant, p *Product, now time.Time) error {
	if t.Status == TenantFrozen {
		return Errorf(KindFailedPrecondition, "tenant %s is FROZEN and cannot start a trial", t.ID)
	}
	if p.TrialDays == 0 {
		return Errorf(KindFailedPrecondition, "product %s offers no self-serve trial; request it instead", p.Key)
	}
	e, err := r.Entitlements().Get(ctx, t.ID, p.Key)
	switch {
	case ErrorKind(err) == KindNotFound:
		return nil
	case err != nil:
		return err
	}
	switch st := e.StatusAt(now); {
	case st == EntitlementTrial || st == EntitlementActive:
		return Errorf(KindFailedPrecondition, "tenant already has %s (%s)", p.Key, st)
	case e.Source == SourceTrial:
		return alreadyTrialed(p.Key)
	default:
		return Errorf(KindFailedPrecondition, "tenant already had an entitlement for %s (now %s); a trial is for new products only", p.Key, st)
	}
}

func alreadyTrialed(product string) error {
	return Errorf(KindFailedPrecondition, "tenant already had a trial of %s", product)
}

func productChange(p *Product, action, crud, description string, fields map[string]string) change {
	return change{
		TenantID: "", // products belong to no tenant: the platform's chain
		Action:   action, CRUD: crud, Description: description, Fields: fields,
		Target: AuditTarget{ID: p.Key, Type: "product", Name: p.DisplayName},
	}
}
