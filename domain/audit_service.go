package domain

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// AuditService records, lists, exports and proves audit events: each
// tenant's events are the leaves of a Merkle tree whose heads it signs.
type AuditService struct {
	guard
	keys *CheckpointSigner
	// retention is how many days a log keeps its events unless set for it.
	retention int
	// singles are the single appends, committed together when concurrent.
	singles *auditGroup
	// exports are the exports running, bounded per log and in all.
	exports exportSlots
	// known are the tenants single appends found to exist.
	known knownTenants
}

// knownTenants are tenants found to exist, which stay so (tenants are
// never deleted): appends to them need not look them up again. Bounded:
// past maxKnownTenants it starts again empty.
type knownTenants struct {
	mu  sync.Mutex
	ids map[string]struct{}
}

// maxKnownTenants bounds knownTenants.
const maxKnownTenants = 100_000

// has reports whether tenant id was found to exist before.
func (k *knownTenants) has(id string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.ids[id]
	return ok
}

// add remembers that tenant id exists.
func (k *knownTenants) add(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ids == nil || len(k.ids) >= maxKnownTenants {
		k.ids = map[string]struct{}{}
	}
	k.ids[id] = struct{}{}
}

// AuditSettings are the audit log's: the signer of its checkpoints, and
// how many days a log keeps its events unless set for it (0: forever).
type AuditSettings struct {
	Checkpoints   *CheckpointSigner
	RetentionDays int
}

// NewAuditService returns an AuditService on store.
func NewAuditService(store Store, now Clock, settings AuditSettings) *AuditService {
	return &AuditService{guard: newGuard(store, now), keys: settings.Checkpoints, retention: settings.RetentionDays, singles: &auditGroup{store: store}}
}

// Retention is how long a log keeps its events.
type Retention struct {
	TenantID string
	Days     int  // 0: forever
	Default  bool // the registry's default, not set for this log
}

// Retention returns how long a tenant's log (the platform's for "") keeps
// its events.
func (s *AuditService) Retention(ctx context.Context, tenantID string) (*Retention, error) {
	tenantID, err := s.chainTenant(ctx, PermAuditRead, tenantID)
	if err != nil {
		return nil, err
	}
	days, set, err := s.store.Audit().Retention(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	if !set {
		days = s.retention
	}
	return &Retention{TenantID: tenantID, Days: days, Default: !set}, nil
}

// SetRetention sets how many days a tenant's log keeps its events (0:
// forever). Events older than that are deleted within the hour; their
// leaves stay in the tree, so proofs and checkpoints of what remains
// still verify.
func (s *AuditService) SetRetention(ctx context.Context, tenantID string, days int) (*Retention, error) {
	if days < 0 || days > MaxAuditRetentionDays {
		return nil, Violations{{Field: "retention_days", Description: fmt.Sprintf("must be between 0 (keep forever) and %d", MaxAuditRetentionDays)}}.Err()
	}
	if tenantID != "" {
		var err error
		if tenantID, err = ParseID("tenant_id", tenantID); err != nil {
			return nil, err
		}
	}
	if err := s.allow(ctx, PermAuditRetention, tenantID, tried("audit.retention_set", "u", "tenant", tenantID)); err != nil {
		return nil, err
	}
	err := s.store.Atomically(ctx, func(r Repositories) error {
		if tenantID != "" {
			if _, err := r.Tenants().Get(ctx, tenantID); err != nil {
				return err
			}
		}
		before, set, err := r.Audit().Retention(ctx, tenantID)
		if err != nil {
			return err
		}
		if set && before == days {
			return nil // a retry: no change, no event
		}
		if err := r.Audit().SetRetention(ctx, tenantID, days); err != nil {
			return err
		}
		from := "default"
		if set {
			from = strconv.Itoa(before)
		}
		return recordChange(ctx, r, s.now(), change{
			TenantID: tenantID, Action: "audit.retention_set", CRUD: "u",
			Description: fmt.Sprintf("audit events kept %d days (0: forever)", days),
			Target:      AuditTarget{ID: tenantID, Type: "tenant"},
			Fields:      map[string]string{"from": from, "to": strconv.Itoa(days)},
		})
	})
	if err != nil {
		return nil, err
	}
	return &Retention{TenantID: tenantID, Days: days}, nil
}

// Record appends one event a product sends. It is idempotent by (tenant,
// product, external id): a repeat returns the stored event. Concurrent
// calls share transactions (see auditGroup).
func (s *AuditService) Record(ctx context.Context, e *AuditEvent) (*AuditEvent, error) {
	if err := s.admit(ctx, []*AuditEvent{e}, func(int) string { return "event." }); err != nil {
		return nil, err
	}
	// Tenants are never deleted: one that exists now still does at the
	// commit, and an unknown one does not fail a shared transaction. One
	// found once is known to exist from then on.
	if !s.known.has(e.TenantID) {
		if err := tenantsExist(ctx, s.store.Tenants(), []*AuditEvent{e}); err != nil {
			return nil, err
		}
		s.known.add(e.TenantID)
	}
	if err := s.singles.append(ctx, e); err != nil {
		return nil, err
	}
	return e, nil
}

// RecordBatch appends up to MaxAuditBatch events, all or nothing.
func (s *AuditService) RecordBatch(ctx context.Context, events []*AuditEvent) ([]*AuditEvent, error) {
	switch {
	case len(events) == 0:
		return nil, Violations{{Field: "events", Description: "must hold at least one event"}}.Err()
	case len(events) > MaxAuditBatch:
		return nil, Violations{{Field: "events", Description: fmt.Sprintf("must hold at most %d events, got %d", MaxAuditBatch, len(events))}}.Err()
	}
	if err := s.admit(ctx, events, func(i int) string { return "events[" + strconv.Itoa(i) + "]." }); err != nil {
		return nil, err
	}
	if err := s.store.Atomically(ctx, func(r Repositories) error { return appendEvents(ctx, r, events) }); err != nil {
		return nil, err
	}
	return events, nil
}

// admit validates events, naming bad fields by prefix, takes their occur
// time as the store keeps it (what the response and a later read show),
// stamps them as received now, and checks the caller may append them.
func (s *AuditService) admit(ctx context.Context, events []*AuditEvent, prefix func(int) string) error {
	now := s.now()
	var v Violations
	for i, e := range events {
		if e == nil {
			v.Add(strings.TrimSuffix(prefix(i), "."), "is required")
			continue
		}
		e.validate(&v, prefix(i), now)
		e.OccurTime = s.store.StoredTime(e.OccurTime)
		e.ID, e.Seq, e.Hash, e.ReceiveTime = NewID(), 0, "", now
	}
	if err := v.Err(); err != nil {
		return err
	}
	return s.authorizeRecord(ctx, events)
}

// authorizeRecord lets a caller append events to the tenants it may
// write for, and a platform key only events of the product it acts for.
func (s *AuditService) authorizeRecord(ctx context.Context, events []*AuditEvent) error {
	p := CallerFrom(ctx).Principal
	product, bound := p.Product()
	for _, e := range events {
		a := tried("audit_event.recorded", "c", "audit_event", "")
		if err := s.allow(ctx, PermAuditWrite, e.TenantID, a); err != nil {
			return err
		}
		switch {
		case p.IsPlatformAdmin():
		case e.TenantID == "" || e.TenantID == PlatformTenantID:
			// The platform's own logs hold the registry's events, refusals
			// included, and those of its platform keys: no product writes there.
			return s.refuse(ctx, PermAuditWrite, e.TenantID, a, "events of no tenant and of the platform tenant belong to the platform's own logs, which products do not write")
		case !bound || e.Product != product:
			return s.refuse(ctx, PermAuditWrite, e.TenantID, a, "a platform key records events of the product its product:<key> scope names only")
		}
	}
	return nil
}

// appendEvents appends events, whose tenants must exist, in r.
func appendEvents(ctx context.Context, r Repositories, events []*AuditEvent) error {
	if err := tenantsExist(ctx, r.Tenants(), events); err != nil {
		return err
	}
	return r.Audit().Append(ctx, events)
}

// tenantsExist reports NotFound for the first event whose tenant is unknown.
func tenantsExist(ctx context.Context, tenants TenantReader, events []*AuditEvent) error {
	seen := map[string]bool{"": true}
	for _, e := range events {
		if seen[e.TenantID] {
			continue
		}
		if _, err := tenants.Get(ctx, e.TenantID); err != nil {
			return err
		}
		seen[e.TenantID] = true
	}
	return nil
}

// List returns one page of the events matching f, newest first.
func (s *AuditService) List(ctx context.Context, f AuditFilter, p PageRequest) (*Page[*AuditEvent], error) {
	var v Violations
	f = checkAuditFilter(&v, f)
	size := p.pageSize(&v)
	query := auditQuery(f)
	var before int64
	if pos := decodeCursor(&v, p.Token, query, 1); pos != nil {
		n, err := strconv.ParseInt(pos[0], 10, 64)
		if err != nil || n < 1 {
			v.Add("page_token", "is not a page token of this query")
		}
		before = n
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	if err := s.allow(ctx, PermAuditRead, f.TenantID, nil); err != nil {
		return nil, err
	}
	events, err := s.store.Audit().List(ctx, f, before, size+1, auditPageBytes)
	if err != nil {
		return nil, err
	}
	seq := func(e *AuditEvent) string { return strconv.FormatInt(e.Seq, 10) }
	if len(events) <= size && AuditBytes(events) >= auditPageBytes {
		// Cut short by its bytes: more may follow.
		return &Page[*AuditEvent]{Items: events, NextPageToken: encodeCursor(query, seq(events[len(events)-1]))}, nil
	}
	return pageOf(events, size, query, seq), nil
}

func checkAuditFilter(v *Violations, f AuditFilter) AuditFilter {
	if f.TenantID != "" {
		f.TenantID = checkID(v, "tenant_id", f.TenantID)
	}
	if f.Product != "" && !auditProductPattern.MatchString(f.Product) {
		v.Add("product", "must be 1 to 63 characters of a-z, 0-9, '.', '_' and '-'")
	}
	if f.Action != "" {
		action, prefix := f.ActionPrefix()
		valid := len(action) <= MaxAuditActionLen && auditActionPattern.MatchString(strings.TrimSuffix(action, "."))
		if !valid || (!prefix && strings.HasSuffix(action, ".")) || (prefix && action == "") {
			v.Add("action", "must be an action like tenant.created, or a prefix ending in '*' like api_key.*")
		}
	}
	checkText(v, "actor_id", f.ActorID, MaxAuditTextLen, false)
	checkText(v, "target_id", f.TargetID, MaxAuditTextLen, false)
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		v.Add("since", "must be before until")
	}
	return f
}

func auditQuery(f AuditFilter) string {
	return strings.Join([]string{"audit", f.TenantID, f.Product, f.ActorID, f.Action, f.TargetID,
		f.Since.Format(time.RFC3339Nano), f.Until.Format(time.RFC3339Nano)}, "|")
}

// change describes a state change of the registry, for its audit event.
type change struct {
	TenantID    string // whose chain; empty for platform changes
	Action      string // e.g. tenant.created
	CRUD        string
	Target      AuditTarget
	Description string
	Fields      map[string]string
	Failure     bool // the change was refused
}

// recordChange appends the audit event of a change through r, the
// repositories of the transaction that makes the change, with the actor
// and source address of the caller in ctx.
func recordChange(ctx context.Context, r Repositories, now time.Time, c change) error {
	return recordChanges(ctx, r, now, []change{c})
}

// recordChanges appends the events of several changes in one go.
func recordChanges(ctx context.Context, r Repositories, now time.Time, changes []change) error {
	caller := CallerFrom(ctx)
	events := make([]*AuditEvent, len(changes))
	for i, c := range changes {
		p := caller.Principal
		if c.Failure {
			p.Name = "" // a refusal carries no text the caller could have chosen
		}
		events[i] = &AuditEvent{
			ID: NewID(), TenantID: c.TenantID, Product: RegistryProduct, Action: c.Action, CRUD: c.CRUD,
			Actor: AuditActor{ID: p.ID, Name: p.Name, Type: p.Type}, Target: c.Target,
			SourceIP: caller.SourceIP, Description: c.Description, Fields: c.Fields, IsFailure: c.Failure,
			IsAnonymous: p.ID == "", OccurTime: now, ReceiveTime: now,
		}
	}
	return r.Audit().Append(ctx, events)
}
