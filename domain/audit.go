package domain

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"
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
	Seq         int64  // position in the tenant's chain, from 1, gapless
	Hash        string // hex SHA-256 over the previous hash and Canonical()
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

// Canonical is the encoding the chain hashes: every field but Hash, in a
// fixed order, each length-prefixed, fields sorted by key, times in
// microseconds. It never changes for a stored event, whatever the database.
func (e *AuditEvent) Canonical() []byte {
	b := make([]byte, 0, 256)
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	num := func(n int64) { b = binary.AppendVarint(b, n) }
	flag := func(v bool) {
		if v {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	}
	b = append(b, 1) // encoding version
	str(e.ID)
	str(e.TenantID)
	num(e.Seq)
	str(e.Product)
	str(e.Action)
	str(e.CRUD)
	str(e.Actor.ID)
	str(e.Actor.Name)
	str(e.Actor.Type)
	str(e.Target.ID)
	str(e.Target.Type)
	str(e.Target.Name)
	str(e.SourceIP)
	str(e.Description)
	flag(e.IsFailure)
	flag(e.IsAnonymous)
	keys := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	num(int64(len(keys)))
	for _, k := range keys {
		str(k)
		str(e.Fields[k])
	}
	num(e.OccurTime.UnixMicro())
	num(e.ReceiveTime.UnixMicro())
	str(e.ExternalID)
	return b
}

// ChainHash returns the hash of e following prevHash (hex; empty for the
// first event of a chain).
func (e *AuditEvent) ChainHash(prevHash string) string {
	h := sha256.New()
	prev, _ := hex.DecodeString(prevHash)
	h.Write(prev)
	h.Write(e.Canonical())
	return hex.EncodeToString(h.Sum(nil))
}

// validate checks an event a product records, normalising what may be
// written in more than one way (CRUD case, IP form, times). Field names
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
	default:
		e.OccurTime = e.OccurTime.UTC().Truncate(time.Microsecond)
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

// AuditLog is the audit log's storage. Append is used inside
// Store.Atomically, so events commit with the changes they describe.
type AuditLog interface {
	// Append adds events to their tenants' chains: it serialises with every
	// other append to the same chain (across processes), and sets Seq, Hash
	// and ReceiveTime. An event whose (tenant, product, external id) is
	// stored already is replaced, in place, by the stored event.
	Append(ctx context.Context, events []*AuditEvent) error
	// List returns up to limit events matching f with seq below beforeSeq
	// (all when 0), newest first.
	List(ctx context.Context, f AuditFilter, beforeSeq int64, limit int) ([]*AuditEvent, error)
	// Chain returns up to limit events of a tenant's chain with seq above
	// afterSeq, oldest first.
	Chain(ctx context.Context, tenantID string, afterSeq int64, limit int) ([]*AuditEvent, error)
	// Head returns the seq and hash of a chain's last event (0 and "" for
	// an empty chain).
	Head(ctx context.Context, tenantID string) (int64, string, error)
}
