package persistence

import (
	"context"
	"strings"

	"github.com/uptrace/bun"

	"github.com/tenant-registry/tenant-registry/domain"
)

// changeChannel is the PostgreSQL NOTIFY channel that carries committed
// changes between replicas, in the format of encodeChange.
const changeChannel = "tenant_registry_changes"

// legacyChannel carried invalidations before changeChannel, as
// "t:<tenant id>" or "k:<key hash>". Both are sent and heard, so that
// during a rolling upgrade replicas of either version keep each other's
// key caches coherent; drop it once no replica of the earlier version runs.
const legacyChannel = "tenant_registry_invalidations"

// afterCommit is the work that waits for a transaction to commit:
// deliveries to this process's change feed, and the audit counter.
type afterCommit struct{ fns []func() }

func (a *afterCommit) add(fn func()) { a.fns = append(a.fns, fn) }

func (a *afterCommit) run() {
	for _, fn := range a.fns {
		fn()
	}
}

// invalidations implements domain.Invalidations for one transaction. The dialect announces a change to the other replicas; this
// replica delivers it to its own feed right after the commit.
type invalidations struct {
	conn
	owner *DB
	after *afterCommit
}

func (i invalidations) Announce(ctx context.Context, c domain.Change) error {
	if err := i.dialect.announce(ctx, i.db, i.owner.origin, c); err != nil {
		return dbError(err)
	}
	i.after.add(func() { i.owner.feed.Committed(c) })
	return nil
}

// announce sends c by NOTIFY, which PostgreSQL delivers to every replica
// when the transaction commits, on both channels (see legacyChannel).
func (postgresDialect) announce(ctx context.Context, db bun.IDB, origin string, c domain.Change) error {
	_, err := db.ExecContext(ctx, "SELECT pg_notify(?, ?), pg_notify(?, ?)",
		changeChannel, encodeChange(origin, c), legacyChannel, legacyPayload(c))
	return err
}

// announce has no one to tell: one process owns the file.
func (sqliteDialect) announce(context.Context, bun.IDB, string, domain.Change) error { return nil }

func (i invalidations) Repeat(_ context.Context, c domain.Change) error {
	i.after.add(func() { i.owner.feed.Committed(c) })
	return nil
}

// encodeChange writes a change as a NOTIFY payload: a version, the
// sending replica, then the change's fields, separated by "|" (which no
// id, kind, hash or product key contains).
func encodeChange(origin string, c domain.Change) string {
	return strings.Join([]string{"1", origin, string(c.Kind), c.TenantID, c.KeyID, c.KeyHash, c.Product}, "|")
}

// decodeChange reads a payload of encodeChange.
func decodeChange(payload string) (c domain.Change, origin string, ok bool) {
	f := strings.Split(payload, "|")
	if len(f) != 7 || f[0] != "1" || f[2] == "" {
		return domain.Change{}, "", false
	}
	return domain.Change{Kind: domain.ChangeKind(f[2]), TenantID: f[3], KeyID: f[4], KeyHash: f[5], Product: f[6]}, f[1], true
}

// legacyPayload is c as the earlier version announced it.
func legacyPayload(c domain.Change) string {
	if c.KeyHash != "" {
		return "k:" + c.KeyHash
	}
	return "t:" + c.TenantID
}

// decodeLegacy reads a payload of the earlier version. It names a key hash
// or a tenant only, which is all a key cache needs.
func decodeLegacy(payload string) (domain.Change, bool) {
	if id, ok := strings.CutPrefix(payload, "t:"); ok && id != "" {
		return domain.Change{Kind: domain.ChangeUnknown, TenantID: id}, true
	}
	if h, ok := strings.CutPrefix(payload, "k:"); ok && h != "" {
		return domain.Change{Kind: domain.ChangeUnknown, KeyHash: h}, true
	}
	return domain.Change{}, false
}
