package transport_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/persistence"
	"github.com/tenant-registry/tenant-registry/sdk/go/auditlog"
)

// logEvent is an event as the audit log hashes it, from its message.
func logEvent(e *v1.AuditEvent) *auditlog.Event {
	return &auditlog.Event{
		ID: e.GetId(), TenantID: e.GetTenantId(), Seq: e.GetSeq(), Product: e.GetProduct(), Action: e.GetAction(), CRUD: e.GetCrud(),
		ActorID: e.GetActor().GetId(), ActorName: e.GetActor().GetName(), ActorType: e.GetActor().GetType(),
		TargetID: e.GetTarget().GetId(), TargetType: e.GetTarget().GetType(), TargetName: e.GetTarget().GetName(),
		SourceIP: e.GetSourceIp(), Description: e.GetDescription(), IsFailure: e.GetIsFailure(), IsAnonymous: e.GetIsAnonymous(),
		Fields: e.GetFields(), OccurTime: e.GetOccurTime().AsTime(), ReceiveTime: e.GetReceiveTime().AsTime(), ExternalID: e.GetExternalId(),
	}
}

func hashOf(t *testing.T, b []byte) tlog.Hash {
	t.Helper()
	var h tlog.Hash
	if len(b) != tlog.HashSize {
		t.Fatalf("a hash of %d bytes", len(b))
	}
	copy(h[:], b)
	return h
}

// proofWorld is a tenant whose log holds 41 events, appended singly and
// in batches, and the verifier of the server's checkpoints.
type proofWorld struct {
	auditClients
	tenantID string
	verifier note.Verifier
	events   []*v1.AuditEvent // by seq-1
}

func newProofWorld(t *testing.T, db *persistence.DB) *proofWorld {
	t.Helper()
	ctx := context.Background()
	w := &proofWorld{auditClients: startAudit(t, db)}
	w.tenantID = w.createTenant(t, "proofs").GetId() // seq 1: tenant.created
	for _, batch := range []int{1, 7, 16, 16} {
		events := make([]*v1.AuditEvent, batch)
		for i := range events {
			events[i] = productEvent(w.tenantID, "report.viewed")
		}
		if _, err := w.audit.RecordAuditEvents(ctx, &v1.RecordAuditEventsRequest{Events: events}); err != nil {
			t.Fatal(err)
		}
	}
	key, err := w.audit.GetAuditVerifierKey(ctx, &v1.GetAuditVerifierKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if w.verifier, err = note.NewVerifier(key.GetVerifierKey()); err != nil {
		t.Fatal(err)
	}
	if w.verifier.Name() != key.GetName() || fmt.Sprintf("%08x", w.verifier.KeyHash()) != key.GetKeyId() {
		t.Errorf("verifier key %s names %s/%08x, the answer %s/%s", key.GetVerifierKey(), w.verifier.Name(), w.verifier.KeyHash(), key.GetName(), key.GetKeyId())
	}
	list, err := w.audit.ListAuditEvents(ctx, &v1.ListAuditEventsRequest{TenantId: w.tenantID, PageSize: 100})
	if err != nil || len(list.GetEvents()) != 41 {
		t.Fatalf("the log holds %d events, %v", len(list.GetEvents()), err)
	}
	for i := len(list.GetEvents()) - 1; i >= 0; i-- {
		w.events = append(w.events, list.GetEvents()[i])
	}
	return w
}

func (w *proofWorld) checkpoint(t *testing.T) (string, auditlog.Checkpoint) {
	t.Helper()
	res, err := w.audit.GetAuditCheckpoint(context.Background(), &v1.GetAuditCheckpointRequest{TenantId: w.tenantID})
	if err != nil {
		t.Fatal(err)
	}
	c, err := auditlog.Open([]byte(res.GetCheckpoint()), w.verifier)
	if err != nil {
		t.Fatalf("the server's checkpoint does not open with its verifier key: %v\n%s", err, res.GetCheckpoint())
	}
	if c.Size != res.GetTreeSize() || !bytes.Equal(c.Root[:], res.GetRootHash()) {
		t.Fatalf("checkpoint %+v, answer size %d root %x", c, res.GetTreeSize(), res.GetRootHash())
	}
	return res.GetCheckpoint(), c
}

func (w *proofWorld) verify(t *testing.T, checkpoint string) *v1.VerifyAuditChainResponse {
	t.Helper()
	r, err := w.audit.VerifyAuditChain(context.Background(), &v1.VerifyAuditChainRequest{TenantId: w.tenantID, Checkpoint: checkpoint})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestAuditProofsRoundTrip: every event's body hashes to the leaf the
// server proves, each proof checks against the signed checkpoint's root,
// and an older tree is proved a prefix of the newer.
func TestAuditProofsRoundTrip(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		w := newProofWorld(t, db)
		_, c := w.checkpoint(t)
		if c.Size != 41 || c.Origin != auditlog.Origin(w.verifier.Name(), w.tenantID) {
			t.Fatalf("checkpoint %+v", c)
		}
		var tree auditlog.Tree
		for _, e := range w.events {
			leaf := logEvent(e).LeafHash()
			if hex.EncodeToString(leaf[:]) != e.GetHash() {
				t.Fatalf("seq %d: body hashes to %x, the event says %s", e.GetSeq(), leaf, e.GetHash())
			}
			tree.Append(leaf)
			p, err := w.audit.ProveAuditEvent(ctx, &v1.ProveAuditEventRequest{TenantId: w.tenantID, Seq: e.GetSeq()})
			if err != nil {
				t.Fatal(err)
			}
			proof := make(tlog.RecordProof, len(p.GetProof()))
			for i, h := range p.GetProof() {
				proof[i] = hashOf(t, h)
			}
			if hashOf(t, p.GetLeafHash()) != leaf || p.GetTreeSize() != 41 || hashOf(t, p.GetRootHash()) != c.Root {
				t.Fatalf("seq %d: proof of leaf %x in %d/%x", e.GetSeq(), p.GetLeafHash(), p.GetTreeSize(), p.GetRootHash())
			}
			if err := tlog.CheckRecord(proof, 41, c.Root, e.GetSeq()-1, leaf); err != nil {
				t.Fatalf("seq %d: the inclusion proof does not check: %v", e.GetSeq(), err)
			}
		}
		if tree.Root() != c.Root {
			t.Fatal("the events' bodies do not hash to the checkpoint's root")
		}
		for _, old := range []int64{1, 2, 17, 20, 40, 41} {
			p, err := w.audit.ProveAuditConsistency(ctx, &v1.ProveAuditConsistencyRequest{TenantId: w.tenantID, OldSize: old})
			if err != nil {
				t.Fatal(err)
			}
			proof := make(tlog.TreeProof, len(p.GetProof()))
			for i, h := range p.GetProof() {
				proof[i] = hashOf(t, h)
			}
			var prefix auditlog.Tree
			for _, e := range w.events[:old] {
				prefix.Append(logEvent(e).LeafHash())
			}
			if hashOf(t, p.GetOldRootHash()) != prefix.Root() || hashOf(t, p.GetNewRootHash()) != c.Root {
				t.Fatalf("consistency %d→41: roots %x, %x", old, p.GetOldRootHash(), p.GetNewRootHash())
			}
			if err := tlog.CheckTree(proof, 41, c.Root, old, prefix.Root()); err != nil {
				t.Fatalf("consistency %d→41 does not check: %v", old, err)
			}
		}
		// A proof against an older tree size, for a customer's older checkpoint.
		p, err := w.audit.ProveAuditEvent(ctx, &v1.ProveAuditEventRequest{TenantId: w.tenantID, Seq: 5, TreeSize: 20})
		if err != nil {
			t.Fatal(err)
		}
		proof := make(tlog.RecordProof, len(p.GetProof()))
		for i, h := range p.GetProof() {
			proof[i] = hashOf(t, h)
		}
		if err := tlog.CheckRecord(proof, 20, hashOf(t, p.GetRootHash()), 4, logEvent(w.events[4]).LeafHash()); err != nil {
			t.Errorf("seq 5 in the tree of 20: %v", err)
		}

		bad := []struct {
			name  string
			call  func() error
			field string
		}{
			{"seq 0", func() error {
				_, err := w.audit.ProveAuditEvent(ctx, &v1.ProveAuditEventRequest{TenantId: w.tenantID})
				return err
			}, "seq"},
			{"seq beyond the log", func() error {
				_, err := w.audit.ProveAuditEvent(ctx, &v1.ProveAuditEventRequest{TenantId: w.tenantID, Seq: 42})
				return err
			}, "seq"},
			{"tree smaller than seq", func() error {
				_, err := w.audit.ProveAuditEvent(ctx, &v1.ProveAuditEventRequest{TenantId: w.tenantID, Seq: 20, TreeSize: 10})
				return err
			}, "tree_size"},
			{"tree beyond the log", func() error {
				_, err := w.audit.ProveAuditEvent(ctx, &v1.ProveAuditEventRequest{TenantId: w.tenantID, Seq: 1, TreeSize: 99})
				return err
			}, "tree_size"},
			{"old size 0", func() error {
				_, err := w.audit.ProveAuditConsistency(ctx, &v1.ProveAuditConsistencyRequest{TenantId: w.tenantID})
				return err
			}, "old_size"},
			{"new size before old", func() error {
				_, err := w.audit.ProveAuditConsistency(ctx, &v1.ProveAuditConsistencyRequest{TenantId: w.tenantID, OldSize: 30, NewSize: 20})
				return err
			}, "new_size"},
			{"a checkpoint of another key", func() error {
				skey, _, _ := domain.GenerateCheckpointKey(w.verifier.Name())
				signer, _ := domain.NewCheckpointSigner(skey)
				forged, _ := signer.Sign(auditlog.Checkpoint{Origin: auditlog.Origin(w.verifier.Name(), w.tenantID), Size: 41})
				_, err := w.audit.VerifyAuditChain(ctx, &v1.VerifyAuditChainRequest{TenantId: w.tenantID, Checkpoint: string(forged)})
				return err
			}, "checkpoint"},
			{"a checkpoint of another log", func() error {
				other := w.createTenant(t, "other-log").GetId()
				res, err := w.audit.GetAuditCheckpoint(ctx, &v1.GetAuditCheckpointRequest{TenantId: other})
				if err != nil {
					return err
				}
				_, err = w.audit.VerifyAuditChain(ctx, &v1.VerifyAuditChainRequest{TenantId: w.tenantID, Checkpoint: res.GetCheckpoint()})
				return err
			}, "checkpoint"},
		}
		for _, b := range bad {
			assertViolation(t, b.name, b.call(), b.field)
		}
	})
}

// rebuild rewrites a tenant's tree and head from leaves, as someone with
// the database and no signing key could: every hash consistent.
func rebuild(t *testing.T, db *persistence.DB, tenantID string, leaves []tlog.Hash) {
	t.Helper()
	ctx := context.Background()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Bun().ExecContext(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec("DELETE FROM audit_tree_hashes WHERE tenant_id = ?", tenantID)
	stored := map[int64]tlog.Hash{}
	reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	for n, leaf := range leaves {
		added, err := tlog.StoredHashesForRecordHash(int64(n), leaf, reader)
		if err != nil {
			t.Fatal(err)
		}
		for i, h := range added {
			idx := tlog.StoredHashIndex(0, int64(n)) + int64(i)
			stored[idx] = h
			exec("INSERT INTO audit_tree_hashes (tenant_id, idx, hash) VALUES (?, ?, ?)", tenantID, idx, h[:])
		}
	}
	root, err := tlog.TreeHash(int64(len(leaves)), reader)
	if err != nil {
		t.Fatal(err)
	}
	exec("UPDATE audit_chain_heads SET seq = ?, hash = ? WHERE tenant_id = ?", len(leaves), hex.EncodeToString(root[:]), tenantID)
}

// TestVerifyAuditLogAgainstACheckpoint: what the stored log alone cannot
// show (its newest events cut off, or a rewrite that recomputed every
// hash) a checkpoint kept from before shows; and what breaks the stored
// log is named by kind and first position.
func TestVerifyAuditLogAgainstACheckpoint(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		w := newProofWorld(t, db)
		kept, _ := w.checkpoint(t)
		if r := w.verify(t, kept); !r.GetOk() || r.GetEventsChecked() != 41 || r.GetLogSize() != 41 {
			t.Fatalf("the untouched log against its checkpoint: %v", r)
		}
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := db.Bun().ExecContext(ctx, q, args...); err != nil {
				t.Fatal(err)
			}
		}
		leaves := make([]tlog.Hash, len(w.events))
		for i, e := range w.events {
			leaves[i] = logEvent(e).LeafHash()
		}
		want := func(name string, r *v1.VerifyAuditChainResponse, kind v1.AuditLogProblem, seq int64) {
			t.Helper()
			if r.GetOk() || r.GetProblemKind() != kind || r.GetFirstBrokenSeq() != seq || r.GetProblem() == "" {
				t.Errorf("%s: %v, want %v at seq %d", name, r, kind, seq)
			}
		}

		// Rewritten: event 10 edited, its hash and the whole tree and head
		// recomputed. The stored log is consistent; the checkpoint says not.
		exec("UPDATE audit_events SET description = 'nothing to see' WHERE tenant_id = ? AND seq = 10", w.tenantID)
		edited := logEvent(w.events[9])
		edited.Description = "nothing to see"
		leaves[9] = edited.LeafHash()
		exec("UPDATE audit_events SET hash = ? WHERE tenant_id = ? AND seq = 10", hex.EncodeToString(leaves[9][:]), w.tenantID)
		rebuild(t, db, w.tenantID, leaves)
		if r := w.verify(t, ""); !r.GetOk() {
			t.Fatalf("a consistently rewritten log, without a checkpoint: %v (the checkpoint is what catches this)", r)
		}
		want("rewritten", w.verify(t, kept), v1.AuditLogProblem_AUDIT_LOG_PROBLEM_REWRITTEN, 0)

		// The newest three cut off, tree and head recomputed.
		exec("DELETE FROM audit_events WHERE tenant_id = ? AND seq > 38", w.tenantID)
		rebuild(t, db, w.tenantID, leaves[:38])
		if r := w.verify(t, ""); !r.GetOk() {
			t.Fatalf("a consistently truncated log, without a checkpoint: %v", r)
		}
		want("truncated", w.verify(t, kept), v1.AuditLogProblem_AUDIT_LOG_PROBLEM_TRUNCATED, 39)

		// Breaks of the stored log itself, each named by kind and first position.
		exec("UPDATE audit_tree_hashes SET hash = ? WHERE tenant_id = ? AND idx = ?", make([]byte, 32), w.tenantID, tlog.StoredHashIndex(1, 2))
		want("a tree hash edited", w.verify(t, ""), v1.AuditLogProblem_AUDIT_LOG_PROBLEM_TREE_INCONSISTENT, 5)
		exec("DELETE FROM audit_tree_hashes WHERE tenant_id = ? AND idx = ?", w.tenantID, tlog.StoredHashIndex(0, 20))
		want("a tree hash removed", w.verify(t, ""), v1.AuditLogProblem_AUDIT_LOG_PROBLEM_TREE_INCONSISTENT, 5)
		rebuild(t, db, w.tenantID, leaves[:38])
		exec(`INSERT INTO audit_events (id, tenant_id, seq, product, action, crud, occur_time, receive_time, hash)
			SELECT ?, tenant_id, 39, product, action, crud, occur_time, receive_time, hash FROM audit_events WHERE tenant_id = ? AND seq = 38`,
			domain.NewID(), w.tenantID)
		want("an event appended around the registry", w.verify(t, ""), v1.AuditLogProblem_AUDIT_LOG_PROBLEM_EVENT_OUT_OF_BAND, 39)
		exec("DELETE FROM audit_events WHERE tenant_id = ? AND seq = 39", w.tenantID)
		exec("UPDATE audit_events SET description = 'edited again' WHERE tenant_id = ? AND seq = 10", w.tenantID)
		want("an edited event", w.verify(t, ""), v1.AuditLogProblem_AUDIT_LOG_PROBLEM_EVENT_CHANGED, 10)
		exec("UPDATE audit_events SET description = 'nothing to see' WHERE tenant_id = ? AND seq = 10", w.tenantID)
		exec("DELETE FROM audit_events WHERE tenant_id = ? AND seq = 7", w.tenantID)
		want("a deleted event", w.verify(t, ""), v1.AuditLogProblem_AUDIT_LOG_PROBLEM_EVENT_MISSING, 7)
		exec("UPDATE audit_chain_heads SET hash = ? WHERE tenant_id = ?", hex.EncodeToString(make([]byte, 32)), w.tenantID)
		if r := w.verify(t, ""); r.GetOk() {
			t.Errorf("a forged head passed: %v", r)
		}
	})
}
