// Package auditlog checks tenant-registry's audit log without trusting
// the server: the canonical encoding of an event, its leaf hash in the
// tenant's Merkle tree (the transparency-log form of
// golang.org/x/mod/sumdb/tlog), signed checkpoints (C2SP signed notes,
// Ed25519) and the verification of an export against a checkpoint. The
// registry itself hashes events with this package, so what a customer
// recomputes is what the server computed.
package auditlog

import (
	"encoding/binary"
	"slices"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// Event is an audit event as the log hashes it: every field but its hash.
type Event struct {
	ID          string
	TenantID    string // empty for the platform's own log
	Seq         int64  // position in the tenant's log, from 1
	Product     string
	Action      string
	CRUD        string
	ActorID     string
	ActorName   string
	ActorType   string
	TargetID    string
	TargetType  string
	TargetName  string
	SourceIP    string
	Description string
	IsFailure   bool
	IsAnonymous bool
	Fields      map[string]string
	OccurTime   time.Time // hashed to the microsecond
	ReceiveTime time.Time // hashed to the microsecond
	ExternalID  string
}

// canonicalVersion is the first byte of the encoding; it changes if the
// encoding ever does, so an old event keeps hashing as it was written.
const canonicalVersion = 1

// Canonical is the encoding the log hashes: every field, in a fixed order,
// each length-prefixed, fields sorted by key, times in microseconds since
// the Unix epoch. It is the same for an event whatever database stored it.
func (e *Event) Canonical() []byte {
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
	b = append(b, canonicalVersion)
	str(e.ID)
	str(e.TenantID)
	num(e.Seq)
	str(e.Product)
	str(e.Action)
	str(e.CRUD)
	str(e.ActorID)
	str(e.ActorName)
	str(e.ActorType)
	str(e.TargetID)
	str(e.TargetType)
	str(e.TargetName)
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

// LeafHash is the event's record hash in its tenant's tree:
// tlog.RecordHash of the canonical encoding.
func (e *Event) LeafHash() tlog.Hash { return tlog.RecordHash(e.Canonical()) }
