package migrations

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
	"github.com/uptrace/bun/migrate"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/tenant-registry/tenant-registry/sdk/go/auditlog"
)

// RegisterGo adds the migrations written in Go, data conversions SQL
// cannot express, to ms; they serve both dialects. Bun names each after
// the file that registers it.
func RegisterGo(ms *migrate.Migrations) {
	ms.MustRegister(backfillAuditTrees, func(context.Context, *bun.DB) error {
		return nil // the trees stay; the chain hashes they replaced are not kept
	})
}

// backfillPage is how many events the backfill reads at once.
const backfillPage = 1000

// backfillAuditTrees turns every hash-chained log into a tree: each
// event's hash becomes its leaf hash, the tree's stored hashes are written,
// and the head's hash becomes the tree's root. A log with a gap cannot be
// turned into a tree that proves anything, and stops the migration.
func backfillAuditTrees(ctx context.Context, db *bun.DB) error {
	return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var tenants []string
		if err := tx.NewRaw("SELECT tenant_id FROM audit_chain_heads ORDER BY tenant_id").Scan(ctx, &tenants); err != nil {
			return err
		}
		for _, tenant := range tenants {
			if err := backfillTree(ctx, tx, tenant); err != nil {
				return fmt.Errorf("audit log of tenant %q: %w", tenant, err)
			}
		}
		return nil
	})
}

// backfillEvent is the part of an audit_events row the tree hashes.
type backfillEvent struct {
	ID          string            `bun:"id"`
	TenantID    string            `bun:"tenant_id"`
	Seq         int64             `bun:"seq"`
	Product     string            `bun:"product"`
	Action      string            `bun:"action"`
	CRUD        string            `bun:"crud"`
	ActorID     string            `bun:"actor_id"`
	ActorName   string            `bun:"actor_name"`
	ActorType   string            `bun:"actor_type"`
	TargetID    string            `bun:"target_id"`
	TargetType  string            `bun:"target_type"`
	TargetName  string            `bun:"target_name"`
	SourceIP    string            `bun:"source_ip"`
	Description string            `bun:"description"`
	IsFailure   bool              `bun:"is_failure"`
	IsAnonymous bool              `bun:"is_anonymous"`
	Fields      map[string]string `bun:"fields"`
	OccurTime   time.Time         `bun:"occur_time"`
	ReceiveTime time.Time         `bun:"receive_time"`
	ExternalID  string            `bun:"external_id"`
}

func backfillTree(ctx context.Context, tx bun.Tx, tenant string) error {
	edge := map[int64]tlog.Hash{}
	reader := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, idx := range indexes {
			out[i] = edge[idx]
		}
		return out, nil
	})
	size := int64(0)
	for {
		var page []backfillEvent
		err := tx.NewRaw(`SELECT id, tenant_id, seq, product, action, crud, actor_id, actor_name, actor_type,
				target_id, target_type, target_name, source_ip, description, is_failure, is_anonymous, fields,
				occur_time, receive_time, external_id
			FROM audit_events WHERE tenant_id = ? AND seq > ? ORDER BY seq LIMIT ?`, tenant, size, backfillPage).Scan(ctx, &page)
		if err != nil {
			return err
		}
		var hashRows, idHashes []string
		var args, idArgs []any
		for _, r := range page {
			if r.Seq != size+1 {
				return fmt.Errorf("event seq %d is missing: restore it (VerifyAuditChain names it) before migrating", size+1)
			}
			e := auditlog.Event{
				ID: r.ID, TenantID: r.TenantID, Seq: r.Seq, Product: r.Product, Action: r.Action, CRUD: r.CRUD,
				ActorID: r.ActorID, ActorName: r.ActorName, ActorType: r.ActorType, TargetID: r.TargetID,
				TargetType: r.TargetType, TargetName: r.TargetName, SourceIP: r.SourceIP, Description: r.Description,
				IsFailure: r.IsFailure, IsAnonymous: r.IsAnonymous, Fields: r.Fields, OccurTime: r.OccurTime,
				ReceiveTime: r.ReceiveTime, ExternalID: r.ExternalID,
			}
			leaf := e.LeafHash()
			added, err := tlog.StoredHashesForRecordHash(size, leaf, reader)
			if err != nil {
				return err
			}
			first := tlog.StoredHashIndex(0, size)
			for i, h := range added {
				edge[first+int64(i)] = h
				hashRows = append(hashRows, "(?, ?, ?)")
				args = append(args, tenant, first+int64(i), h[:])
			}
			size++
			// Only the right edge is needed from here on.
			keep := map[int64]tlog.Hash{}
			for _, idx := range auditlog.EdgeIndexes(size) {
				keep[idx] = edge[idx]
			}
			edge = keep
			idHashes = append(idHashes, "(?, ?)")
			idArgs = append(idArgs, r.ID, hex.EncodeToString(leaf[:]))
		}
		if len(page) > 0 {
			if _, err := tx.ExecContext(ctx, "INSERT INTO audit_tree_hashes (tenant_id, idx, hash) VALUES "+strings.Join(hashRows, ", "), args...); err != nil {
				return err
			}
			if err := setLeafHashes(ctx, tx, idHashes, idArgs); err != nil {
				return err
			}
		}
		if len(page) < backfillPage {
			break
		}
	}
	root, err := tlog.TreeHash(size, reader)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, "UPDATE audit_chain_heads SET seq = ?, hash = ? WHERE tenant_id = ?", size, hex.EncodeToString(root[:]), tenant)
	return err
}

// setLeafHashes writes each event's leaf hash over its chain hash.
func setLeafHashes(ctx context.Context, tx bun.Tx, pairs []string, args []any) error {
	if tx.Dialect().Name() == dialect.PG {
		_, err := tx.ExecContext(ctx, `UPDATE audit_events SET hash = v.hash FROM (VALUES `+strings.Join(pairs, ", ")+
			`) AS v(id, hash) WHERE audit_events.id = v.id::uuid`, args...)
		return err
	}
	for i := 0; i < len(args); i += 2 {
		if _, err := tx.ExecContext(ctx, "UPDATE audit_events SET hash = ? WHERE id = ?", args[i+1], args[i]); err != nil {
			return err
		}
	}
	return nil
}
