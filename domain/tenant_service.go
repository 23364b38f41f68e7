package domain

import (
	"context"
	"fmt"
	"maps"
)

// TenantService runs the tenant use cases: creation, lookup, listing,
// updates and the lifecycle.
type TenantService struct{ guard }

// NewTenantService returns a TenantService persisting to store and telling
// time by now.
func NewTenantService(store Store, now Clock) *TenantService {
	return &TenantService{guard: newGuard(store, now)}
}

// CreateTenant is the input of TenantService.Create.
type CreateTenant struct {
	Slug        string
	DisplayName string
	ExternalID  string
	Metadata    map[string]string
}

// Create validates in and stores a new TRIAL tenant.
func (s *TenantService) Create(ctx context.Context, in CreateTenant) (*Tenant, error) {
	var v Violations
	checkSlug(&v, "slug", in.Slug)
	name := checkName(&v, "display_name", in.DisplayName, MaxDisplayNameLen)
	checkText(&v, "external_id", in.ExternalID, MaxExternalIDLen, false)
	checkMetadata(&v, in.Metadata)
	if err := v.Err(); err != nil {
		return nil, err
	}
	if err := s.allow(ctx, PermTenantCreate, "", tried("tenant.created", "c", "tenant", "")); err != nil {
		return nil, err
	}
	now := s.now()
	t := &Tenant{
		ID:          NewID(),
		Slug:        in.Slug,
		DisplayName: name,
		Status:      TenantTrial,
		ExternalID:  in.ExternalID,
		Metadata:    nonNil(in.Metadata),
		CreateTime:  now,
		UpdateTime:  now,
	}
	err := s.store.Atomically(ctx, func(r Repositories) error {
		if err := r.Tenants().Create(ctx, t); err != nil {
			return err
		}
		return recordChange(ctx, r, now, tenantChange(t, "tenant.created", "c", "tenant created"))
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Get returns the tenant with the given id.
func (s *TenantService) Get(ctx context.Context, id string) (*Tenant, error) {
	id, err := ParseID("id", id)
	if err != nil {
		return nil, err
	}
	if err := s.allow(ctx, PermTenantRead, id, nil); err != nil {
		return nil, err
	}
	return s.store.Tenants().Get(ctx, id)
}

// GetBySlug returns the tenant with the given slug.
func (s *TenantService) GetBySlug(ctx context.Context, slug string) (*Tenant, error) {
	var v Violations
	if slug == "" || !slugPattern.MatchString(slug) {
		checkSlug(&v, "slug", slug)
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	// A slug names no tenant until it is looked up: look, then check,
	// answering a tenant the caller may not see as a missing one.
	t, err := s.store.Tenants().GetBySlug(ctx, slug)
	if err != nil {
		return nil, err
	}
	if err := s.allow(ctx, PermTenantRead, t.ID, nil); err != nil {
		return nil, err
	}
	return t, nil
}

// List returns one page of the tenants matching f, in creation order.
func (s *TenantService) List(ctx context.Context, f TenantFilter, p PageRequest) (*Page[*Tenant], error) {
	var v Violations
	if f.Status != "" && !f.Status.Valid() {
		v.Add("status", "must be one of TRIAL, ACTIVE, FROZEN")
	}
	checkText(&v, "query", f.Query, MaxQueryLen, false)
	size := p.pageSize(&v)
	query := "tenants|" + string(f.Status) + "|" + f.Query
	after := p.afterID(&v, query)
	if err := v.Err(); err != nil {
		return nil, err
	}
	if err := s.allow(ctx, PermTenantList, "", nil); err != nil {
		return nil, err
	}
	tenants, err := s.store.Tenants().List(ctx, f, after, size+1)
	if err != nil {
		return nil, err
	}
	return pageOf(tenants, size, query, func(t *Tenant) string { return t.ID }), nil
}

// UpdateTenant is the input of TenantService.Update. A nil DisplayName
// leaves the name as it is; Metadata entries are merged into the tenant's
// metadata, and an entry with an empty value removes its key.
type UpdateTenant struct {
	ID          string
	DisplayName *string
	Metadata    map[string]string
	// Mask, when set, names exactly the fields that change (display_name,
	// metadata), metadata being then replaced whole; Etag, when set, is the
	// tenant's as the caller read it.
	Mask []string
	Etag string
}

// tenantPaths are the fields UpdateTenant may change.
var tenantPaths = []string{"display_name", "metadata"}

// Update changes a tenant's display name and metadata.
func (s *TenantService) Update(ctx context.Context, in UpdateTenant) (*Tenant, error) {
	var v Violations
	id := checkID(&v, "id", in.ID)
	paths := checkMask(&v, in.Mask, tenantPaths, false)
	if paths != nil {
		zero := ""
		in.DisplayName = pick(paths["display_name"], in.DisplayName, &zero)
	}
	if in.DisplayName != nil {
		name := checkName(&v, "display_name", *in.DisplayName, MaxDisplayNameLen)
		in.DisplayName = &name
	}
	// Removals (empty values) are checked like the keys they name.
	checkMetadata(&v, in.Metadata)
	if err := v.Err(); err != nil {
		return nil, err
	}
	if err := s.allow(ctx, PermTenantUpdate, id, tried("tenant.updated", "u", "tenant", id)); err != nil {
		return nil, err
	}
	var out *Tenant
	err := s.store.Atomically(ctx, func(r Repositories) error {
		t, err := r.Tenants().GetForUpdate(ctx, id)
		if err != nil {
			return err
		}
		if err := checkEtag(in.Etag, t.Etag(), "tenant"); err != nil {
			return err
		}
		before := *t
		if in.DisplayName != nil {
			t.DisplayName = *in.DisplayName
		}
		switch {
		case paths == nil:
			t.Metadata = mergeMetadata(t.Metadata, in.Metadata)
		case paths["metadata"]:
			t.Metadata = mergeMetadata(nil, in.Metadata) // replaced whole; empty values name nothing
		}
		if len(t.Metadata) > MaxMetadataKeys {
			return Violations{{Field: "metadata", Description: fmt.Sprintf("the update would leave %d keys, more than %d", len(t.Metadata), MaxMetadataKeys)}}.Err()
		}
		out = t
		if t.DisplayName == before.DisplayName && maps.Equal(t.Metadata, before.Metadata) {
			return nil // nothing changes: no write, no new update_time
		}
		t.UpdateTime = s.now()
		if err := r.Tenants().Update(ctx, t); err != nil {
			return err
		}
		return recordChange(ctx, r, t.UpdateTime, tenantChange(t, "tenant.updated", "u", "tenant updated"))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Activate moves a TRIAL or FROZEN tenant to ACTIVE.
func (s *TenantService) Activate(ctx context.Context, id string) (*Tenant, error) {
	return s.moveTo(ctx, id, TenantActive, "tenant.activated")
}

// Cancel freezes a TRIAL or ACTIVE tenant: its keys stop verifying and its
// entitlements stop counting, but nothing is deleted.
func (s *TenantService) Cancel(ctx context.Context, id string) (*Tenant, error) {
	return s.moveTo(ctx, id, TenantFrozen, "tenant.canceled")
}

func (s *TenantService) moveTo(ctx context.Context, id string, to TenantStatus, action string) (*Tenant, error) {
	id, err := ParseID("id", id)
	if err != nil {
		return nil, err
	}
	if err := s.allow(ctx, PermTenantLifecycle, id, tried(action, "u", "tenant", id)); err != nil {
		return nil, err
	}
	if id == PlatformTenantID {
		// Freezing it would stop every platform key, the products' included.
		return nil, Errorf(KindFailedPrecondition, "the platform tenant's lifecycle cannot change")
	}
	var out *Tenant
	err = s.store.Atomically(ctx, func(r Repositories) error {
		t, err := r.Tenants().GetForUpdate(ctx, id)
		if err != nil {
			return err
		}
		if err := t.transition(to); err != nil {
			return err
		}
		out = t
		if t.Status == to {
			// Already there: a safe retry changes nothing, but it answers
			// only once the change it repeats is felt by this replica's
			// cache (a concurrent first call may not have got that far).
			return r.Invalidations().Repeat(ctx, staleTenant(t.ID, to))
		}
		from := t.Status
		t.Status = to
		t.UpdateTime = s.now()
		if err := r.Tenants().Update(ctx, t); err != nil {
			return err
		}
		// Keys and entitlements of the tenant answer differently now.
		if err := r.Invalidations().Announce(ctx, staleTenant(t.ID, to)); err != nil {
			return err
		}
		c := tenantChange(t, action, "u", fmt.Sprintf("tenant moved from %s to %s", from, to))
		c.Fields = map[string]string{"from": string(from), "to": string(to)}
		return recordChange(ctx, r, t.UpdateTime, c)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func tenantChange(t *Tenant, action, crud, description string) change {
	return change{
		TenantID: t.ID, Action: action, CRUD: crud, Description: description,
		Target: AuditTarget{ID: t.ID, Type: "tenant", Name: t.Slug},
	}
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func mergeMetadata(base, patch map[string]string) map[string]string {
	out := maps.Clone(nonNil(base))
	for k, v := range patch {
		if v == "" {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

// staleTenant is the change of a tenant moved to status to: its keys and
// entitlements answer differently now.
func staleTenant(id string, to TenantStatus) Change {
	kind := ChangeTenantActivated
	if to == TenantFrozen {
		kind = ChangeTenantFrozen
	}
	return Change{Kind: kind, TenantID: id}
}
