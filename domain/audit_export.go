package domain

import "context"

// Bounds of what reading the audit log holds in memory.
const (
	// auditPageBytes bounds the text of a page of events, listed or
	// exported: a page stops after the event that reaches it, so it holds
	// about a megabyte of events however large they are.
	auditPageBytes = 1 << 20
	// exportPageSize is the most events an export reads at once, and
	// firstExportPage how many its first page reads.
	exportPageSize  = 500
	firstExportPage = 64
	// MaxExportsPerLog is how many exports of one log (a tenant's, or the
	// platform's) one tenant's callers may run at once on a replica (the
	// platform's users count as one tenant), and MaxExports how many
	// in all: each holds a page while its client reads it, for as long as
	// the client keeps reading.
	MaxExportsPerLog = 4
	MaxExports       = 32
)

// AuditBytes is the Size of events together.
func AuditBytes(events []*AuditEvent) int {
	n := 0
	for _, e := range events {
		n += e.Size()
	}
	return n
}

// Export calls send for every event matching f, newest first. It reads in
// pages bounded by auditPageBytes, so memory stays constant however many
// events match and however large they are, and it runs only while fewer
// than MaxExportsPerLog exports of the same log by callers of the same
// tenant, and fewer than MaxExports in all, run.
func (s *AuditService) Export(ctx context.Context, f AuditFilter, send func(*AuditEvent) error) error {
	var v Violations
	f = checkAuditFilter(&v, f)
	if err := v.Err(); err != nil {
		return err
	}
	if err := s.allow(ctx, PermAuditRead, f.TenantID, nil); err != nil {
		return err
	}
	slot := ReaderLogKey(ctx, f.TenantID)
	if err := s.exports.take(slot); err != nil {
		return err
	}
	defer s.exports.release(slot)
	var before int64
	limit := firstExportPage
	for {
		events, err := s.store.Audit().List(ctx, f, before, limit, auditPageBytes)
		if err != nil {
			return err
		}
		n, bytes := len(events), 0
		for i, e := range events {
			bytes += e.Size()
			before = e.Seq
			if err := send(e); err != nil {
				return err
			}
			events[i] = nil // sent: its memory may go while the rest wait
		}
		cut := bytes >= auditPageBytes
		if n < limit && !cut {
			return nil
		}
		limit = nextExportLimit(limit, n, cut)
	}
}

// nextExportLimit is how many events an export asks for after a page of n
// events that limit allowed, cut by its bytes or not. After a cut it asks
// for twice what fitted, after a full page for twice as many again, up to
// exportPageSize: the database reads at most about twice the events a
// page takes (PostgreSQL sends every row a statement finds, taken or not),
// and small events soon come 500 at a time.
func nextExportLimit(limit, n int, cut bool) int {
	if cut {
		limit = n
	}
	return max(1, min(exportPageSize, 2*limit))
}

// exportSlots counts the exports running, per log and in all.
type exportSlots struct{ Budget }

// take claims a slot for an export under key (ReaderLogKey), or says why
// not.
func (s *exportSlots) take(key string) error {
	switch ok, logFull := s.Take(key, 1, MaxExportsPerLog, MaxExports); {
	case ok:
		return nil
	case logFull:
		return Errorf(KindResourceExhausted, "%d exports of this audit log by this tenant's callers are running already; start another when one ends", MaxExportsPerLog)
	default:
		return Errorf(KindResourceExhausted, "%d audit exports are running on this server already; try again shortly", MaxExports)
	}
}

func (s *exportSlots) release(key string) { s.Release(key, 1) }

// ReaderLogKey is what a read of the log of logTenantID counts under: the
// reading principal's tenant and the log, so that one tenant's callers
// (the platform's users among them) spend their own share of a log's
// bound, never the share of the log's own tenant.
func ReaderLogKey(ctx context.Context, logTenantID string) string {
	return CallerFrom(ctx).Principal.TenantID + "\x00" + logTenantID
}
