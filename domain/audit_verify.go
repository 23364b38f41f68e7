package domain

import (
	"context"
	"encoding/hex"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/tenant-registry/tenant-registry/sdk/go/auditlog"
)

// LogProblem says how a log fails verification.
type LogProblem string

// Log problems, in the order VerifyChain looks for them.
const (
	ProblemTreeInconsistent LogProblem = "TREE_INCONSISTENT" // a stored tree hash was edited, removed or added
	ProblemEventChanged     LogProblem = "EVENT_CHANGED"     // an event's body no longer hashes to its leaf
	ProblemEventMissing     LogProblem = "EVENT_MISSING"     // an event was deleted (and retention did not)
	ProblemEventOutOfBand   LogProblem = "EVENT_OUT_OF_BAND" // an event exists beyond the log's head, or twice
	ProblemTruncated        LogProblem = "TRUNCATED"         // the log is shorter than a checkpoint says it was
	ProblemRewritten        LogProblem = "REWRITTEN"         // the log's first events no longer hash to a checkpoint
)

// ChainReport is the result of verifying a tenant's log.
type ChainReport struct {
	OK             bool
	Size           int64 // the log's size: events appended, expired ones included
	EventsChecked  int64 // events whose bodies were rehashed
	ExpiredThrough int64 // events up to this seq were removed by retention
	FirstBrokenSeq int64 // 0 when OK, or when no single event can be blamed (a rewrite)
	Problem        LogProblem
	Detail         string // what is wrong, in words
}

func (r *ChainReport) broken(seq int64, p LogProblem, format string, args ...any) *ChainReport {
	r.OK, r.FirstBrokenSeq, r.Problem, r.Detail = false, seq, p, fmt.Sprintf(format, args...)
	return r
}

// verifyPage is how many events or stored hashes VerifyChain reads at once.
const verifyPage = 2000

// VerifyChain checks a tenant's log (the platform's for an empty tenant
// id) as stored: the tree is whole and every interior hash is the hash of
// its children; every event's body hashes to its leaf; no event is missing
// but those retention removed, none exists beyond the head; the head's
// root is the tree's. With a checkpoint the caller kept (signed by this
// registry's key, now or before a rotation), it also reports a log that
// is shorter than the checkpoint (truncated) or whose first events no
// longer hash to its root (rewritten, even consistently).
func (s *AuditService) VerifyChain(ctx context.Context, tenantID string, checkpoint []byte) (*ChainReport, error) {
	tenantID, err := s.chainTenant(ctx, PermAuditVerify, tenantID)
	if err != nil {
		return nil, err
	}
	var cp *auditlog.Checkpoint
	if len(checkpoint) > 0 {
		c, err := s.openCheckpoint(tenantID, checkpoint)
		if err != nil {
			return nil, err
		}
		cp = &c
	}
	log := s.store.Audit()
	head, err := log.Head(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	r := &ChainReport{OK: true, Size: head.Size, ExpiredThrough: head.ExpiredThrough}
	if bad, err := verifyTree(ctx, log, tenantID, head, r); bad || err != nil {
		return r, err
	}
	if bad, err := verifyEvents(ctx, log, tenantID, head, r); bad || err != nil {
		return r, err
	}
	root, err := tlog.TreeHash(head.Size, treeReader{ctx, log, tenantID})
	if err != nil {
		return nil, err
	}
	if root != head.Root {
		return r.broken(0, ProblemTreeInconsistent, "the log's head names root %s, its tree hashes to %s", head.Root, root), nil
	}
	if cp != nil {
		if cp.Size > head.Size {
			return r.broken(head.Size+1, ProblemTruncated,
				"the checkpoint covers %d events, the log holds %d: the newest were cut off", cp.Size, head.Size), nil
		}
		old, err := tlog.TreeHash(cp.Size, treeReader{ctx, log, tenantID})
		if err != nil {
			return nil, err
		}
		if old != cp.Root {
			return r.broken(0, ProblemRewritten,
				"the log's first %d events no longer hash to the checkpoint's root: they were rewritten", cp.Size), nil
		}
	}
	return r, nil
}

// verifyTree reads every stored hash of the tree in index order: each must
// be there, and each interior one must be the hash of its two children,
// which precede it.
func verifyTree(ctx context.Context, log AuditReader, tenantID string, head AuditHead, r *ChainReport) (bool, error) {
	want := tlog.StoredHashCount(head.Size)
	type node struct {
		n int64
		h tlog.Hash
	}
	var last [64][2]node // per level, the two latest hashes
	next := int64(0)
	for {
		page, err := log.StoredHashes(ctx, tenantID, next, verifyPage)
		if err != nil {
			return false, err
		}
		for _, sh := range page {
			level, n := tlog.SplitStoredHashIndex(sh.Index)
			first := n<<level + 1 // the first event under the hash
			switch {
			case sh.Index >= want:
				r.broken(head.Size+1, ProblemEventOutOfBand, "the tree holds hashes beyond its %d leaves: events were appended around the registry", head.Size)
				return true, nil
			case sh.Index != next:
				lvl, m := tlog.SplitStoredHashIndex(next)
				r.broken(m<<lvl+1, ProblemTreeInconsistent, "the tree's hash at index %d is missing", next)
				return true, nil
			case level > 0:
				left, right := last[level-1][0], last[level-1][1]
				if left.n != 2*n || right.n != 2*n+1 || tlog.NodeHash(left.h, right.h) != sh.Hash {
					r.broken(first, ProblemTreeInconsistent, "the tree's hash over events %d to %d is not the hash of its halves", first, (n+1)<<level)
					return true, nil
				}
			}
			last[level][0], last[level][1] = last[level][1], node{n, sh.Hash}
			next++
		}
		if len(page) < verifyPage {
			break
		}
	}
	if next != want {
		lvl, m := tlog.SplitStoredHashIndex(next)
		r.broken(m<<lvl+1, ProblemTreeInconsistent, "the tree holds %d of the %d hashes of %d leaves", next, want, head.Size)
		return true, nil
	}
	return false, nil
}

// verifyEvents rehashes every event in seq order against its leaf.
func verifyEvents(ctx context.Context, log AuditReader, tenantID string, head AuditHead, r *ChainReport) (bool, error) {
	next := int64(1) // the seq expected next
	missing := func(from, to int64) bool {
		if to <= head.ExpiredThrough {
			return false
		}
		seq := max(from, head.ExpiredThrough+1)
		r.broken(seq, ProblemEventMissing, "event seq %d is missing", seq)
		return true
	}
	for after := int64(0); ; {
		events, err := log.Chain(ctx, tenantID, after, verifyPage)
		if err != nil {
			return false, err
		}
		var indexes []int64
		for _, e := range events {
			if e.Seq <= head.Size {
				indexes = append(indexes, tlog.StoredHashIndex(0, e.Seq-1))
			}
		}
		leaves, err := log.ReadHashes(ctx, tenantID, indexes)
		if err != nil {
			return false, err // verifyTree found every index present
		}
		for i, e := range events {
			switch {
			case e.Seq > head.Size:
				r.broken(e.Seq, ProblemEventOutOfBand, "event seq %d is beyond the log's head (%d): it was written around the registry", e.Seq, head.Size)
				return true, nil
			case e.Seq < next:
				r.broken(e.Seq, ProblemEventOutOfBand, "event seq %d is stored twice", e.Seq)
				return true, nil
			case e.Seq > next && missing(next, e.Seq-1):
				return true, nil
			}
			leaf := e.LeafHash()
			if leaf != leaves[i] || e.Hash != hex.EncodeToString(leaf[:]) {
				r.broken(e.Seq, ProblemEventChanged, "event seq %d does not match its hash: it was changed after it was written", e.Seq)
				return true, nil
			}
			r.EventsChecked++
			next = e.Seq + 1
		}
		if len(events) < verifyPage {
			break
		}
		after = events[len(events)-1].Seq
	}
	if next <= head.Size && missing(next, head.Size) {
		return true, nil
	}
	return false, nil
}

// treeReader reads a tenant's stored tree hashes for tlog.
type treeReader struct {
	ctx    context.Context
	log    AuditReader
	tenant string
}

func (t treeReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	return t.log.ReadHashes(t.ctx, t.tenant, indexes)
}

// chainTenant validates a tenant id naming a log ("" for the platform's),
// authorises perm on it, and checks the tenant exists.
func (s *AuditService) chainTenant(ctx context.Context, perm Permission, tenantID string) (string, error) {
	if tenantID != "" {
		var err error
		if tenantID, err = ParseID("tenant_id", tenantID); err != nil {
			return "", err
		}
	}
	if err := s.allow(ctx, perm, tenantID, nil); err != nil {
		return "", err
	}
	if tenantID != "" {
		if _, err := s.store.Tenants().Get(ctx, tenantID); err != nil {
			return "", err
		}
	}
	return tenantID, nil
}

// openCheckpoint verifies a checkpoint a caller kept: signed by this
// registry, for this tenant's log.
func (s *AuditService) openCheckpoint(tenantID string, signed []byte) (auditlog.Checkpoint, error) {
	c, err := s.keys.Open(signed)
	if err != nil {
		return c, Violations{{Field: "checkpoint", Description: "is not a checkpoint signed by this registry's audit key: " + err.Error()}}.Err()
	}
	if want := auditlog.Origin(s.keys.Name(), tenantID); c.Origin != want {
		return c, Violations{{Field: "checkpoint", Description: fmt.Sprintf("is of log %q, not of %q", c.Origin, want)}}.Err()
	}
	return c, nil
}
