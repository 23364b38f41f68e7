package domain

import (
	"context"
	"sync"
	"time"
)

// Messages of the not-found answers that stand for "not yours" too, so
// that another tenant's data and missing data cannot be told apart.
// Storage answers a missing row with the same words.
const (
	TenantNotFoundMessage = "tenant not found"
	ApiKeyNotFoundMessage = "API key not found"
)

// guard is how every service authorises: one rule for the order (check,
// then look, for data addressed by tenant; look, then check, for data
// addressed by its own id) and one for the answer (not found when the
// caller may not even learn the data exists, permission denied when it
// may). Services embed it.
type guard struct {
	store    Store
	now      Clock
	refusals *refusalLimiter
}

// newGuard returns a guard over store, reading now as store keeps times,
// with a refusal limiter of its own.
func newGuard(store Store, now Clock) guard {
	return guard{store: store, now: storedClock(store, now), refusals: &refusalLimiter{}}
}

// attempt names a refused state change for the audit log: what was tried
// and on what, by id and type only. It never carries text the caller chose.
type attempt struct {
	action     string // e.g. "api_key.created"
	crud       string
	targetType string
	targetID   string
}

// tried names an attempt; a nil *attempt (reads) is refused without an
// audit event.
func tried(action, crud, targetType, targetID string) *attempt {
	return &attempt{action: action, crud: crud, targetType: targetType, targetID: targetID}
}

// allow returns nil when the caller may use perm on tenantID's data. A
// caller that may not see the tenant gets the answer a missing tenant
// gets; one that may gets PermissionDenied. A refused change (a not nil)
// is recorded.
func (g guard) allow(ctx context.Context, perm Permission, tenantID string, a *attempt) error {
	return g.allowOr(ctx, perm, tenantID, a, TenantNotFoundMessage)
}

// allowKey is allow for an API key already read: a key the caller may not
// see is answered like a key that does not exist.
func (g guard) allowKey(ctx context.Context, perm Permission, k *ApiKey, a *attempt) error {
	return g.allowOr(ctx, perm, k.TenantID, a, ApiKeyNotFoundMessage)
}

func (g guard) allowOr(ctx context.Context, perm Permission, tenantID string, a *attempt, notFound string) error {
	p := CallerFrom(ctx).Principal
	if p.Can(perm, tenantID) {
		return nil
	}
	hidden := tenantID != "" && !p.Sees(tenantID)
	if err := g.record(ctx, perm, tenantID, a, hidden); err != nil {
		return err
	}
	if hidden {
		return Errorf(KindNotFound, "%s", notFound)
	}
	return Errorf(KindPermissionDenied, "permission denied: the caller may not %s here", perm)
}

// refuse records a refused change that is not about the tenant's
// visibility (a scope the caller does not hold, a platform-only rule) and
// returns the PermissionDenied error with message msg.
func (g guard) refuse(ctx context.Context, perm Permission, tenantID string, a *attempt, msg string) error {
	if err := g.record(ctx, perm, tenantID, a, false); err != nil {
		return err
	}
	return Errorf(KindPermissionDenied, "permission denied: %s", msg)
}

// record writes a refused change to the audit log, where the operator and,
// unless it would tell the caller something it may not learn, the acting
// tenant see it: the caller's own tenant's chain for a refusal the caller
// may see (PermissionDenied), the platform chain for one answered as not
// found. The target tenant's chain is never written to, and no text the
// caller chose is: the target is named by id only when it is an id the
// registry made (a UUID), and the actor by id and type. The volume is
// bounded (see refusalLimiter).
func (g guard) record(ctx context.Context, perm Permission, tenantID string, a *attempt, hidden bool) error {
	if a == nil {
		return nil
	}
	p := CallerFrom(ctx).Principal
	now := g.now()
	if !g.refusals.admit(p, string(perm)+"|"+tenantID+"|"+a.targetID, hidden, now) {
		return nil
	}
	chain := ""
	if !hidden {
		chain = p.TenantID
	}
	target := AuditTarget{Type: a.targetType}
	var v Violations
	if id := checkID(&v, "target", a.targetID); len(v) == 0 {
		target.ID = id
	}
	c := change{
		TenantID: chain, Action: a.action, CRUD: a.crud, Failure: true, Target: target,
		Description: "refused: " + string(perm),
		Fields:      map[string]string{"permission": string(perm), "tenant_id": tenantID},
	}
	return g.store.Atomically(ctx, func(r Repositories) error {
		if c.TenantID != "" {
			if _, err := r.Tenants().Get(ctx, c.TenantID); err != nil {
				c.TenantID = "" // a tenant claim naming no tenant: the platform's chain
			}
		}
		return recordChange(ctx, r, now, c)
	})
}

// Bounds of refusal recording, per replica and per window.
const (
	refusalWindow     = time.Minute
	refusalsPerActor  = 10  // events per actor, and as many more for refusals it is told are not found
	refusalsPerTenant = 30  // events per acting tenant: every key a tenant mints is an actor of its own
	refusalsInAll     = 600 // events in all
)

// refusalLimiter decides which refusals get an audit event: at most one
// per actor, permission and target a window, and at most so many per
// actor, per acting tenant and in all. Refusals the caller is told are
// "not found" draw on budgets of their own, so that the events the caller
// can read tell it nothing about them. One limiter serves every service
// of a replica.
type refusalLimiter struct {
	mu      sync.Mutex
	window  time.Time           // start of the current window
	seen    map[string]struct{} // actor|target recorded in this window
	count   map[string]int      // events per budget in this window
	total   int
	dropped uint64 // refusals not recorded, for the log and metrics
}

func (l *refusalLimiter) admit(p Principal, target string, hidden bool, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= refusalWindow || now.Before(l.window) {
		l.window, l.seen, l.count, l.total = now, map[string]struct{}{}, map[string]int{}, 0
	}
	kind := "shown"
	if hidden {
		kind = "hidden"
	}
	actor, tenant := kind+"|actor|"+p.Type+"|"+p.ID, kind+"|tenant|"+p.TenantID
	key := actor + "|" + target
	_, seen := l.seen[key]
	if seen || l.count[actor] >= refusalsPerActor || (p.TenantID != "" && l.count[tenant] >= refusalsPerTenant) || l.total >= refusalsInAll {
		l.dropped++
		return false
	}
	l.seen[key] = struct{}{}
	l.count[actor]++
	l.count[tenant]++
	l.total++
	return true
}

// Dropped returns how many refusals were not recorded because of the bounds.
func (l *refusalLimiter) Dropped() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}
