package domain

import (
	"context"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/tenant-registry/tenant-registry/sdk/go/auditlog"
)

// AuditActor is who did something.
type AuditActor struct{ ID, Name, Type string }

// AuditTarget is what something was done to.
type AuditTarget struct{ ID, Type, Name string }

// AuditEvent is one entry of the audit log, in Retraced's shape. TenantID
// is the group (empty for platform events), Product the component.
type AuditEvent struct {
	ID          string
	TenantID    string
	Product     string
	Action      string
	CRUD        string // c, r, u or d
	Actor       AuditActor
	Target      AuditTarget
	SourceIP    string
	Description string
	IsFailure   bool
	IsAnonymous bool
	Fields      map[string]string
	OccurTime   time.Time
	ReceiveTime time.Time
	ExternalID  string
	Seq         int64  // position in the tenant's log, from 1, gapless
	Hash        string // hex of LeafHash: the event's leaf in its tenant's Merkle tree
}

// Size is the bytes of an event's text, a measure of the memory it holds
// once read: the bound of a page of events is a sum of sizes.
func (e *AuditEvent) Size() int {
	n := len(e.ID) + len(e.TenantID) + len(e.Product) + len(e.Action) + len(e.CRUD) +
		len(e.Actor.ID) + len(e.Actor.Name) + len(e.Actor.Type) + len(e.Target.ID) + len(e.Target.Type) + len(e.Target.Name) +
		len(e.SourceIP) + len(e.Description) + len(e.ExternalID) + len(e.Hash)
	for k, v := range e.Fields {
		n += len(k) + len(v)
	}
	return n
}

// RegistryProduct is the product name of the registry's own events.
const RegistryProduct = "tenant-registry"

// Bounds of an audit event.
const (
	MaxAuditBatch          = 500
	MaxAuditActionLen      = 100
	MaxAuditTextLen        = 200 // ids, names, types, products, external ids
	MaxAuditDescriptionLen = 4000
	MaxAuditFields         = 50
	MaxAuditFieldKeyLen    = 100
	MaxAuditFieldValueLen  = 2000
	// maxAuditClockSkew is how far in the future an occur_time may be.
	maxAuditClockSkew = 5 * time.Minute
)

var (
	auditActionPattern  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*(\.[a-z0-9_-]+)*$`)
	auditProductPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
)

// Canonical is the encoding the log hashes: every field but Hash, in a
// fixed order, each length-prefixed, fields sorted by key, times in
// microseconds (see auditlog.Event.Canonical, which customers use to check
// the log themselves). It never changes for a stored event, whatever the
// database.
func (e *AuditEvent) Canonical() []byte { return e.logEvent().Canonical() }

// LeafHash is the event's record hash, its leaf in the tenant's tree.
func (e *AuditEvent) LeafHash() tlog.Hash { return e.logEvent().LeafHash() }

func (e *AuditEvent) logEvent() *auditlog.Event {
	return &auditlog.Event{
		ID: e.ID, TenantID: e.TenantID, Seq: e.Seq, Product: e.Product, Action: e.Action, CRUD: e.CRUD,
		ActorID: e.Actor.ID, ActorName: e.Actor.Name, ActorType: e.Actor.Type,
		TargetID: e.Target.ID, TargetType: e.Target.Type, TargetName: e.Target.Name,
		SourceIP: e.SourceIP, Description: e.Description, IsFailure: e.IsFailure, IsAnonymous: e.IsAnonymous,
		Fields: e.Fields, OccurTime: e.OccurTime, ReceiveTime: e.ReceiveTime, ExternalID: e.ExternalID,
	}
}

// validate checks an event a product records, normalising what may be
// written in more than one way (CRUD case, IP form). Field names
// are prefixed with prefix ("event." or "events[3].").
func (e *AuditEvent) validate(v *Violations, prefix string, now time.Time) {
	if e.TenantID != "" {
		e.TenantID = checkID(v, prefix+"tenant_id", e.TenantID)
	}
	if e.Product == "" {
		v.Add(prefix+"product", "is required")
	} else if !auditProductPattern.MatchString(e.Product) {
		v.Add(prefix+"product", "must be 1 to 63 characters of a-z, 0-9, '.', '_' and '-'")
	}
	switch {
	case e.Action == "":
		v.Add(prefix+"action", "is required")
	case len(e.Action) > MaxAuditActionLen || !auditActionPattern.MatchString(e.Action):
		v.Add(prefix+"action", "must be dotted lower-case words like tenant.created, at most %d characters", MaxAuditActionLen)
	}
	switch c := strings.ToLower(e.CRUD); c {
	case "c", "r", "u", "d":
		e.CRUD = c
	case "":
		v.Add(prefix+"crud", "is required: one of c, r, u, d")
	default:
		v.Add(prefix+"crud", "must be one of c, r, u, d")
	}
	if !e.IsAnonymous && e.Actor.ID == "" {
		v.Add(prefix+"actor.id", "is required unless is_anonymous is set")
	}
	for field, s := range map[string]string{
		"actor.id": e.Actor.ID, "actor.name": e.Actor.Name, "actor.type": e.Actor.Type,
		"target.id": e.Target.ID, "target.type": e.Target.Type, "target.name": e.Target.Name,
		"external_id": e.ExternalID,
	} {
		checkText(v, prefix+field, s, MaxAuditTextLen, false)
	}
	if e.SourceIP != "" {
		if ip, err := netip.ParseAddr(e.SourceIP); err != nil {
			v.Add(prefix+"source_ip", "must be an IPv4 or IPv6 address")
		} else {
			e.SourceIP = ip.Unmap().String()
		}
	}
	checkText(v, prefix+"description", e.Description, MaxAuditDescriptionLen, true)
	if len(e.Fields) > MaxAuditFields {
		v.Add(prefix+"fields", "must have at most %d entries, got %d", MaxAuditFields, len(e.Fields))
	} else {
		for k, val := range e.Fields {
			if k == "" {
				v.Add(prefix+"fields", "keys must not be empty")
				continue
			}
			checkText(v, prefix+"fields", k, MaxAuditFieldKeyLen, false)
			checkText(v, prefix+"fields["+strings.ToValidUTF8(k, "?")+"]", val, MaxAuditFieldValueLen, true)
		}
	}
	switch {
	case e.OccurTime.IsZero():
		e.OccurTime = now
	case e.OccurTime.After(now.Add(maxAuditClockSkew)):
		v.Add(prefix+"occur_time", "must not be in the future")
	case e.OccurTime.Year() < 2000:
		v.Add(prefix+"occur_time", "must be after the year 2000")
	}
}

// AuditFilter narrows a list or export of audit events. TenantID is always
// applied (empty selects platform events); other zero values match all.
type AuditFilter struct {
	TenantID     string
	Product      string
	ActorID      string
	Action       string // exact, or a prefix when it ends in '*'
	TargetID     string
	Since, Until time.Time // on occur_time: Since inclusive, Until exclusive
}

// ActionPrefix returns the prefix of a "prefix*" action filter.
func (f AuditFilter) ActionPrefix() (string, bool) {
	return strings.CutSuffix(f.Action, "*")
}

// AuditHead is where a tenant's log stands.
type AuditHead struct {
	Size int64     // events appended so far: the leaves of the tree
	Root tlog.Hash // the root hash of the tree of Size leaves
	// ExpiredThrough is the highest seq whose body retention deleted; the
	// tree keeps the hashes of every leaf.
	ExpiredThrough int64
}

// StoredHash is one hash of a tenant's tree, at its tlog stored-hash index.
type StoredHash struct {
	Index int64
	Hash  tlog.Hash
}

// AuditReader reads the audit log's storage: each tenant's events and the
// Merkle tree over them (golang.org/x/mod/sumdb/tlog's stored hashes).
type AuditReader interface {
	// List returns up to limit events matching f with seq below beforeSeq
	// (all when 0), newest first. It stops after the event that brings
	// their Size to maxBytes, so that a page of large events holds little
	// more than maxBytes however large limit is.
	List(ctx context.Context, f AuditFilter, beforeSeq int64, limit, maxBytes int) ([]*AuditEvent, error)
	// Chain returns up to limit events of a tenant's log with seq above
	// afterSeq, oldest first.
	Chain(ctx context.Context, tenantID string, afterSeq int64, limit int) ([]*AuditEvent, error)
	// Head returns where a tenant's log stands (the zero head for an empty one).
	Head(ctx context.Context, tenantID string) (AuditHead, error)
	// ReadHashes returns the stored hashes of a tenant's tree at indexes,
	// in that order; a missing one is KindNotFound.
	ReadHashes(ctx context.Context, tenantID string, indexes []int64) ([]tlog.Hash, error)
	// StoredHashes returns up to limit stored hashes of a tenant's tree
	// with index from or above, by index.
	StoredHashes(ctx context.Context, tenantID string, from int64, limit int) ([]StoredHash, error)
	// Retention returns how many days a log keeps its events, and whether
	// that was set for it (else the default applies).
	Retention(ctx context.Context, tenantID string) (days int, set bool, err error)
}

// AuditLog writes the audit log's storage, in a transaction
// (Store.Atomically), so events commit with the changes they describe.
type AuditLog interface {
	AuditReader
	// Append adds events to their tenants' logs: it serialises with every
	// other append to the same log (across processes), sets Seq and Hash,
	// and stores the tree hashes each new leaf completes. An event whose
	// (tenant, product, external id) is stored already is replaced, in
	// place, by the stored event.
	Append(ctx context.Context, events []*AuditEvent) error
	// SetRetention sets how many days a log keeps its events; 0: forever.
	SetRetention(ctx context.Context, tenantID string, days int) error
}

// Bounds of audit retention, in days.
const (
	MaxAuditRetentionDays     = 36500
	DefaultAuditRetentionDays = 400
)
