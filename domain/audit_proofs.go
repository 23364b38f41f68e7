package domain

import (
	"context"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/tenant-registry/tenant-registry/sdk/go/auditlog"
)

// SignedCheckpoint is a tenant's tree head, signed.
type SignedCheckpoint struct {
	Checkpoint auditlog.Checkpoint
	Note       []byte // the C2SP signed note: what a customer keeps
}

// Checkpoint returns the signed tree head of a tenant's log as it stands.
func (s *AuditService) Checkpoint(ctx context.Context, tenantID string) (*SignedCheckpoint, error) {
	tenantID, err := s.chainTenant(ctx, PermAuditRead, tenantID)
	if err != nil {
		return nil, err
	}
	head, err := s.store.Audit().Head(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	c := auditlog.Checkpoint{Origin: auditlog.Origin(s.keys.Name(), tenantID), Size: head.Size, Root: head.Root}
	signed, err := s.keys.Sign(c)
	if err != nil {
		return nil, err
	}
	return &SignedCheckpoint{Checkpoint: c, Note: signed}, nil
}

// InclusionProof shows that one event is a leaf of a tree of some size.
type InclusionProof struct {
	Seq      int64
	TreeSize int64
	Leaf     tlog.Hash // the event's leaf hash, as the tree stores it
	Root     tlog.Hash // the root of the tree of TreeSize leaves
	Proof    tlog.RecordProof
}

// ProveEvent proves that event seq of a tenant's log is in the tree of
// treeSize events (0: as the log stands), so that a customer holding a
// checkpoint of that size can check it with tlog.CheckRecord.
func (s *AuditService) ProveEvent(ctx context.Context, tenantID string, seq, treeSize int64) (*InclusionProof, error) {
	tenantID, err := s.chainTenant(ctx, PermAuditRead, tenantID)
	if err != nil {
		return nil, err
	}
	log := s.store.Audit()
	head, err := log.Head(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	if treeSize == 0 {
		treeSize = head.Size
	}
	var v Violations
	switch {
	case seq < 1 || seq > head.Size:
		v.Add("seq", "must be between 1 and the log's size, %d", head.Size)
	case treeSize < seq || treeSize > head.Size:
		v.Add("tree_size", "must be between seq (%d) and the log's size (%d), or 0 for the log's size", seq, head.Size)
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	r := treeReader{ctx, log, tenantID}
	proof, err := tlog.ProveRecord(treeSize, seq-1, r)
	if err != nil {
		return nil, err
	}
	leaves, err := log.ReadHashes(ctx, tenantID, []int64{tlog.StoredHashIndex(0, seq-1)})
	if err != nil {
		return nil, err
	}
	root, err := tlog.TreeHash(treeSize, r)
	if err != nil {
		return nil, err
	}
	return &InclusionProof{Seq: seq, TreeSize: treeSize, Leaf: leaves[0], Root: root, Proof: proof}, nil
}

// ConsistencyProof shows that a tree of OldSize leaves is the prefix of
// one of NewSize: nothing was changed or removed in between.
type ConsistencyProof struct {
	OldSize, NewSize int64
	OldRoot, NewRoot tlog.Hash
	Proof            tlog.TreeProof
}

// ProveConsistency proves that the tree of oldSize events is a prefix of
// the tree of newSize (0: as the log stands), for tlog.CheckTree.
func (s *AuditService) ProveConsistency(ctx context.Context, tenantID string, oldSize, newSize int64) (*ConsistencyProof, error) {
	tenantID, err := s.chainTenant(ctx, PermAuditRead, tenantID)
	if err != nil {
		return nil, err
	}
	log := s.store.Audit()
	head, err := log.Head(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	if newSize == 0 {
		newSize = head.Size
	}
	var v Violations
	switch {
	case oldSize < 1 || oldSize > head.Size:
		v.Add("old_size", "must be between 1 and the log's size, %d", head.Size)
	case newSize < oldSize || newSize > head.Size:
		v.Add("new_size", "must be between old_size (%d) and the log's size (%d), or 0 for the log's size", oldSize, head.Size)
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	r := treeReader{ctx, log, tenantID}
	proof, err := tlog.ProveTree(newSize, oldSize, r)
	if err != nil {
		return nil, err
	}
	oldRoot, err := tlog.TreeHash(oldSize, r)
	if err != nil {
		return nil, err
	}
	newRoot, err := tlog.TreeHash(newSize, r)
	if err != nil {
		return nil, err
	}
	return &ConsistencyProof{OldSize: oldSize, NewSize: newSize, OldRoot: oldRoot, NewRoot: newRoot, Proof: proof}, nil
}

// VerifierKey returns the key checkpoints are signed with, for customers
// to check them: its name, id, and the verifier key itself. Every caller
// may read it: it is public.
func (s *AuditService) VerifierKey() (name, keyID, vkey string) {
	return s.keys.Name(), s.keys.KeyID(), s.keys.VerifierKey()
}
