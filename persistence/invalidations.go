package persistence

import (
	"context"
	"strings"
	"sync"

	"github.com/uptrace/bun"

	"github.com/tenant-registry/tenant-registry/domain"
)

// invalidationChannel is the PostgreSQL NOTIFY channel that carries
// invalidations between replicas. Payloads are "t:<tenant id>" or
// "k:<key hash>".
const invalidationChannel = "tenant_registry_invalidations"

// subscribers hold the callbacks that invalidations are delivered to.
type subscribers struct {
	mu  sync.RWMutex
	fns []func(domain.Invalidation)
}

func (s *subscribers) add(fn func(domain.Invalidation)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fns = append(s.fns, fn)
}

func (s *subscribers) deliver(inv domain.Invalidation) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, fn := range s.fns {
		fn(inv)
	}
}

// invalidations implements domain.Invalidations for one transaction (or
// none). On PostgreSQL it sends a NOTIFY, which PostgreSQL delivers to
// every replica when the transaction commits; the replica making the change
// delivers it to itself right after the commit.
type invalidations struct {
	db      bun.IDB
	pending *[]domain.Invalidation // nil outside a transaction: deliver at once
	subs    *subscribers
}

func (i invalidations) Tenant(ctx context.Context, tenantID string) error {
	return i.publish(ctx, domain.Invalidation{TenantID: tenantID}, "t:"+tenantID)
}

func (i invalidations) Key(ctx context.Context, keyHash string) error {
	return i.publish(ctx, domain.Invalidation{KeyHash: keyHash}, "k:"+keyHash)
}

func (i invalidations) publish(ctx context.Context, inv domain.Invalidation, payload string) error {
	if isPostgres(i.db) {
		if _, err := i.db.ExecContext(ctx, "SELECT pg_notify(?, ?)", invalidationChannel, payload); err != nil {
			return dbError(err, "", "")
		}
	}
	if i.pending != nil {
		*i.pending = append(*i.pending, inv)
	} else {
		i.subs.deliver(inv)
	}
	return nil
}

// parseInvalidation reads a NOTIFY payload.
func parseInvalidation(payload string) (domain.Invalidation, bool) {
	if id, ok := strings.CutPrefix(payload, "t:"); ok && id != "" {
		return domain.Invalidation{TenantID: id}, true
	}
	if h, ok := strings.CutPrefix(payload, "k:"); ok && h != "" {
		return domain.Invalidation{KeyHash: h}, true
	}
	return domain.Invalidation{}, false
}
