package main

import (
	"context"
	"fmt"
	"sync"
	"testing"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
)

// TestTwoReplicasAppendToOneChain has two server processes' wiring on one
// PostgreSQL append to one tenant's audit chain at once, in batches and
// singly, with some appends retried on both replicas (the same external
// id): afterwards the chain verifies, its seq runs 1…n without a gap or a
// repeat, and each retried event is stored once.
func TestTwoReplicasAppendToOneChain(t *testing.T) {
	const (
		writersPerReplica = 4
		rounds            = 8
		batch             = 25
	)
	dbURL := testdb.PostgresURL(t)
	replicas := []*replica{startReplica(t, dbURL), startReplica(t, dbURL)}
	ctx := context.Background()
	tn, err := replicas[0].tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: "two-writers", DisplayName: "Two writers"})
	if err != nil {
		t.Fatal(err)
	}
	tenantID := tn.GetTenant().GetId()
	event := func(externalID string) *v1.AuditEvent {
		return &v1.AuditEvent{TenantId: tenantID, Product: "race", Action: "race.append", Crud: "c",
			Actor: &v1.AuditActor{Id: "writer"}, ExternalId: externalID}
	}
	var wg sync.WaitGroup
	for r, rep := range replicas {
		audit := tenantregistryv1connect.NewAuditServiceClient(testserver.HTTP1, rep.url)
		for w := range writersPerReplica {
			wg.Go(func() {
				for round := range rounds {
					req := &v1.RecordAuditEventsRequest{}
					for i := range batch {
						req.Events = append(req.Events, event(fmt.Sprintf("r%d-w%d-%d-%d", r, w, round, i)))
					}
					if _, err := audit.RecordAuditEvents(ctx, req); err != nil {
						t.Errorf("RecordAuditEvents on replica %d: %v", r, err)
						return
					}
					// The same event sent to both replicas at once: a retry
					// that went to another replica.
					if _, err := audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{
						Event: event(fmt.Sprintf("retried-w%d-%d", w, round)),
					}); err != nil {
						t.Errorf("RecordAuditEvent on replica %d: %v", r, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	want := int64(1 + len(replicas)*writersPerReplica*rounds*batch + writersPerReplica*rounds) // with tenant.created
	for r, rep := range replicas {
		audit := tenantregistryv1connect.NewAuditServiceClient(testserver.HTTP1, rep.url)
		res, err := audit.VerifyAuditChain(ctx, &v1.VerifyAuditChainRequest{TenantId: tenantID})
		if err != nil || !res.GetOk() || res.GetEventsChecked() != want {
			t.Errorf("VerifyAuditChain on replica %d = %v, %v; want ok with %d events", r, res, err, want)
		}
	}
	var count, distinct, minSeq, maxSeq int64
	if err := replicas[0].m.DB.Bun().QueryRowContext(ctx, `SELECT count(*), count(DISTINCT seq), min(seq), max(seq)
		FROM audit_events WHERE tenant_id = ?`, tenantID).Scan(&count, &distinct, &minSeq, &maxSeq); err != nil {
		t.Fatal(err)
	}
	if count != want || distinct != want || minSeq != 1 || maxSeq != want {
		t.Errorf("chain: %d events, %d distinct seqs from %d to %d; want 1…%d without gaps or repeats", count, distinct, minSeq, maxSeq, want)
	}
}
