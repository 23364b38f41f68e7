package persistence

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/uptrace/bun"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/sdk/go/auditlog"
)

// auditEventRow is the audit_events table.
type auditEventRow struct {
	bun.BaseModel `bun:"table:audit_events"`

	ID          string            `bun:"id,notnull"`
	TenantID    string            `bun:"tenant_id,pk"`
	Seq         int64             `bun:"seq,pk"`
	Product     string            `bun:"product,notnull"`
	Action      string            `bun:"action,notnull"`
	CRUD        string            `bun:"crud,notnull"`
	ActorID     string            `bun:"actor_id,notnull"`
	ActorName   string            `bun:"actor_name,notnull"`
	ActorType   string            `bun:"actor_type,notnull"`
	TargetID    string            `bun:"target_id,notnull"`
	TargetType  string            `bun:"target_type,notnull"`
	TargetName  string            `bun:"target_name,notnull"`
	SourceIP    string            `bun:"source_ip,notnull"`
	Description string            `bun:"description,notnull"`
	IsFailure   bool              `bun:"is_failure,notnull"`
	IsAnonymous bool              `bun:"is_anonymous,notnull"`
	Fields      map[string]string `bun:"fields,notnull"`
	OccurTime   time.Time         `bun:"occur_time,notnull"`
	ReceiveTime time.Time         `bun:"receive_time,pk"`
	ExternalID  string            `bun:"external_id,notnull"`
	Hash        string            `bun:"hash,notnull"`
}

func newAuditEventRow(e *domain.AuditEvent) auditEventRow {
	fields := e.Fields
	if fields == nil {
		fields = map[string]string{}
	}
	return auditEventRow{
		ID: e.ID, TenantID: e.TenantID, Seq: e.Seq, Product: e.Product, Action: e.Action, CRUD: e.CRUD,
		ActorID: e.Actor.ID, ActorName: e.Actor.Name, ActorType: e.Actor.Type,
		TargetID: e.Target.ID, TargetType: e.Target.Type, TargetName: e.Target.Name,
		SourceIP: e.SourceIP, Description: e.Description, IsFailure: e.IsFailure, IsAnonymous: e.IsAnonymous,
		Fields: fields, OccurTime: storedTime(e.OccurTime), ReceiveTime: storedTime(e.ReceiveTime), ExternalID: e.ExternalID, Hash: e.Hash,
	}
}

func (r *auditEventRow) domain() *domain.AuditEvent {
	fields := r.Fields
	if fields == nil {
		fields = map[string]string{}
	}
	return &domain.AuditEvent{
		ID: r.ID, TenantID: r.TenantID, Seq: r.Seq, Product: r.Product, Action: r.Action, CRUD: r.CRUD,
		Actor:    domain.AuditActor{ID: r.ActorID, Name: r.ActorName, Type: r.ActorType},
		Target:   domain.AuditTarget{ID: r.TargetID, Type: r.TargetType, Name: r.TargetName},
		SourceIP: r.SourceIP, Description: r.Description, IsFailure: r.IsFailure, IsAnonymous: r.IsAnonymous,
		Fields: fields, OccurTime: r.OccurTime.UTC(), ReceiveTime: r.ReceiveTime.UTC(), ExternalID: r.ExternalID, Hash: r.Hash,
	}
}

// auditChainHeadRow is the audit_chain_heads table: per tenant's log, its
// size and the root hash of its tree. Appends lock the row.
type auditChainHeadRow struct {
	bun.BaseModel `bun:"table:audit_chain_heads"`

	TenantID       string `bun:"tenant_id,pk"`
	Seq            int64  `bun:"seq,notnull"`
	Hash           string `bun:"hash,notnull"` // hex root of the tree of Seq leaves; "" for none
	ExpiredThrough int64  `bun:"expired_through,notnull"`
}

// treeHashRow is the audit_tree_hashes table: every stored hash of every
// tenant's tree, by tlog's stored-hash index. Rows outlive the events
// whose bodies retention deletes, so proofs of what remains still work.
type treeHashRow struct {
	bun.BaseModel `bun:"table:audit_tree_hashes"`

	TenantID string `bun:"tenant_id,pk"`
	Index    int64  `bun:"idx,pk"`
	Hash     []byte `bun:"hash,notnull"`
}

// AuditLog implements domain.AuditLog.
type AuditLog struct {
	conn
	// appended, when set, is told how many new events were written, for
	// the audit append-rate metric; nil counts nothing.
	appended func(n int)
}

var _ domain.AuditLog = AuditLog{}

// insertChunk bounds the rows of one INSERT statement.
const insertChunk = 100

// Append adds events to their chains. Chains are locked in tenant id order,
// so two transactions appending to the same chains cannot deadlock.
func (l AuditLog) Append(ctx context.Context, events []*domain.AuditEvent) error {
	byTenant := map[string][]*domain.AuditEvent{}
	for _, e := range events {
		byTenant[e.TenantID] = append(byTenant[e.TenantID], e)
	}
	tenants := make([]string, 0, len(byTenant))
	for t := range byTenant {
		tenants = append(tenants, t)
	}
	slices.Sort(tenants)
	for _, t := range tenants {
		if err := l.appendChain(ctx, t, byTenant[t]); err != nil {
			return duplicateError(err, "audit event already exists")
		}
	}
	return nil
}

func (l AuditLog) appendChain(ctx context.Context, tenantID string, events []*domain.AuditEvent) error {
	head := &auditChainHeadRow{TenantID: tenantID}
	if _, err := l.db.NewInsert().Model(head).On("CONFLICT DO NOTHING").Exec(ctx); err != nil {
		return err
	}
	if err := l.dialect.forUpdate(l.db.NewSelect().Model(head).WherePK()).Scan(ctx); err != nil {
		return err
	}
	stored, err := l.storedByExternalID(ctx, tenantID, events)
	if err != nil {
		return err
	}
	// Every earlier hash the new leaves need is on the tree's right edge
	// as it stands: read it once, then grow the tree in memory.
	tree, err := l.rightEdge(ctx, tenantID, head.Seq)
	if err != nil {
		return err
	}
	rows := make([]auditEventRow, 0, len(events))
	var hashes []treeHashRow
	for _, e := range events {
		key := e.Product + "\x00" + e.ExternalID
		if e.ExternalID != "" {
			if prev, ok := stored[key]; ok {
				*e = *prev // idempotent append: the stored event stands
				continue
			}
		}
		head.Seq++
		e.Seq = head.Seq
		leaf := e.LeafHash()
		e.Hash = hex.EncodeToString(leaf[:])
		added, err := tlog.StoredHashesForRecordHash(head.Seq-1, leaf, tree)
		if err != nil {
			return err
		}
		first := tlog.StoredHashIndex(0, head.Seq-1)
		for i, h := range added {
			tree[first+int64(i)] = h
			hashes = append(hashes, treeHashRow{TenantID: tenantID, Index: first + int64(i), Hash: slices.Clone(h[:])})
		}
		rows = append(rows, newAuditEventRow(e))
		if e.ExternalID != "" {
			copied := *e
			stored[key] = &copied
		}
	}
	if len(rows) == 0 {
		return nil
	}
	root, err := tlog.TreeHash(head.Seq, tree)
	if err != nil {
		return err
	}
	head.Hash = hex.EncodeToString(root[:])
	for chunk := range slices.Chunk(rows, insertChunk) {
		if _, err := l.db.NewInsert().Model(&chunk).Exec(ctx); err != nil {
			return err
		}
	}
	for chunk := range slices.Chunk(hashes, 4*insertChunk) {
		if _, err := l.db.NewInsert().Model(&chunk).Exec(ctx); err != nil {
			return err
		}
	}
	var keys []externalIDRow
	for _, r := range rows {
		if r.ExternalID != "" {
			keys = append(keys, externalIDRow{TenantID: r.TenantID, Product: r.Product, ExternalID: r.ExternalID, Seq: r.Seq, ReceiveTime: r.ReceiveTime})
		}
	}
	for chunk := range slices.Chunk(keys, insertChunk) {
		if _, err := l.db.NewInsert().Model(&chunk).Exec(ctx); err != nil {
			return err
		}
	}
	if _, err = l.db.NewUpdate().Model(head).Column("seq", "hash").WherePK().Exec(ctx); err != nil {
		return err
	}
	if l.appended != nil {
		l.appended(len(rows)) // idempotent repeats wrote nothing and are not counted
	}
	return nil
}

// treeHashes are tree hashes by stored-hash index, read as a tlog.HashReader.
type treeHashes map[int64]tlog.Hash

func (t treeHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		h, ok := t[idx]
		if !ok {
			return nil, fmt.Errorf("tree hash %d is not loaded", idx)
		}
		out[i] = h
	}
	return out, nil
}

// rightEdge loads the hashes of the perfect subtrees a tree of size
// leaves is made of: all that appending to it, and its root, need.
func (l AuditLog) rightEdge(ctx context.Context, tenantID string, size int64) (treeHashes, error) {
	indexes := auditlog.EdgeIndexes(size)
	hashes, err := l.ReadHashes(ctx, tenantID, indexes)
	if err != nil {
		return nil, err
	}
	tree := treeHashes{}
	for i, idx := range indexes {
		tree[idx] = hashes[i]
	}
	return tree, nil
}

// hashLookupsPerQuery bounds the lookups ReadHashes joins into one
// statement (SQLite allows 500 terms in a compound SELECT).
const hashLookupsPerQuery = 200

// ReadHashes returns stored tree hashes of a tenant, in the order asked.
func (l AuditLog) ReadHashes(ctx context.Context, tenantID string, indexes []int64) ([]tlog.Hash, error) {
	if len(indexes) == 0 {
		return nil, nil
	}
	// One primary-key lookup per hash, in one statement: a plan for
	// "idx IN (…)" may scan the tenant's whole tree instead, when the
	// statistics have not yet seen how large the tree grew (seconds at a
	// million events).
	byIndex := make(map[int64][]byte, len(indexes))
	for chunk := range slices.Chunk(indexes, hashLookupsPerQuery) {
		lookups := make([]string, len(chunk))
		args := make([]any, 0, 2*len(chunk))
		for i, idx := range chunk {
			lookups[i] = "SELECT idx, hash FROM audit_tree_hashes WHERE tenant_id = ? AND idx = ?"
			args = append(args, tenantID, idx)
		}
		var rows []treeHashRow
		if err := l.db.NewRaw(strings.Join(lookups, " UNION ALL "), args...).Scan(ctx, &rows); err != nil {
			return nil, dbError(err)
		}
		for _, r := range rows {
			byIndex[r.Index] = r.Hash
		}
	}
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		h, ok := byIndex[idx]
		if !ok || len(h) != tlog.HashSize {
			return nil, domain.Errorf(domain.KindNotFound, "the audit log's tree hash %d is missing", idx)
		}
		copy(out[i][:], h)
	}
	return out, nil
}

// StoredHashes returns a tenant's stored tree hashes from index from on.
func (l AuditLog) StoredHashes(ctx context.Context, tenantID string, from int64, limit int) ([]domain.StoredHash, error) {
	var rows []treeHashRow
	err := l.db.NewSelect().Model(&rows).Where("tenant_id = ? AND idx >= ?", tenantID, from).
		OrderExpr("idx ASC").Limit(limit).Scan(ctx)
	if err != nil {
		return nil, dbError(err)
	}
	out := make([]domain.StoredHash, len(rows))
	for i, r := range rows {
		out[i].Index = r.Index
		copy(out[i].Hash[:], r.Hash) // a short hash reads as a wrong one, which verification reports
	}
	return out, nil
}

// externalIDRow is the audit_external_ids table: the idempotency keys of
// appends, each naming its event.
type externalIDRow struct {
	bun.BaseModel `bun:"table:audit_external_ids"`

	TenantID    string    `bun:"tenant_id,pk"`
	Product     string    `bun:"product,pk"`
	ExternalID  string    `bun:"external_id,pk"`
	Seq         int64     `bun:"seq,notnull"`
	ReceiveTime time.Time `bun:"receive_time,notnull"`
}

// storedByExternalID returns the stored events of the log that share an
// external id with events, keyed by product and external id.
func (l AuditLog) storedByExternalID(ctx context.Context, tenantID string, events []*domain.AuditEvent) (map[string]*domain.AuditEvent, error) {
	out := map[string]*domain.AuditEvent{}
	idsByProduct := map[string][]string{}
	var products []string
	for _, e := range events {
		if e.ExternalID != "" {
			if idsByProduct[e.Product] == nil {
				products = append(products, e.Product)
			}
			idsByProduct[e.Product] = append(idsByProduct[e.Product], e.ExternalID)
		}
	}
	// One query per product (a batch usually has one): primary-key
	// lookups in the keys' table, and the events they name by theirs,
	// receive time included, so that PostgreSQL reads one partition each.
	for _, product := range products {
		var keys []externalIDRow
		err := l.db.NewSelect().Model(&keys).
			Where("tenant_id = ? AND product = ? AND external_id IN (?)", tenantID, product, bun.In(idsByProduct[product])).Scan(ctx)
		if err != nil {
			return nil, dbError(err)
		}
		if len(keys) == 0 {
			continue // none of this product's ids recorded yet; another product's may be
		}
		var rows []auditEventRow
		err = l.db.NewRaw(`SELECT a.* FROM audit_external_ids AS x
			JOIN audit_events AS a ON a.tenant_id = x.tenant_id AND a.seq = x.seq AND a.receive_time = x.receive_time
			WHERE x.tenant_id = ? AND x.product = ? AND x.external_id IN (?)`, tenantID, product, bun.In(idsByProduct[product])).Scan(ctx, &rows)
		if err != nil {
			return nil, dbError(err)
		}
		for i := range rows {
			out[rows[i].Product+"\x00"+rows[i].ExternalID] = rows[i].domain()
		}
		for _, k := range keys {
			if _, ok := out[k.Product+"\x00"+k.ExternalID]; !ok {
				return nil, domain.Errorf(domain.KindFailedPrecondition,
					"the event with external_id %q of product %s is no longer stored; record it under another external id", k.ExternalID, k.Product)
			}
		}
	}
	return out, nil
}

// List returns events matching f below beforeSeq, newest first.
func (l AuditLog) List(ctx context.Context, f domain.AuditFilter, beforeSeq int64, limit int) ([]*domain.AuditEvent, error) {
	var rows []auditEventRow
	q := l.db.NewSelect().Model(&rows).Where("tenant_id = ?", f.TenantID).OrderExpr("seq DESC").Limit(limit)
	if beforeSeq > 0 {
		q = q.Where("seq < ?", beforeSeq)
	}
	if f.Product != "" {
		q = q.Where("product = ?", f.Product)
	}
	if f.ActorID != "" {
		q = q.Where("actor_id = ?", f.ActorID)
	}
	if f.TargetID != "" {
		q = q.Where("target_id = ?", f.TargetID)
	}
	if prefix, ok := f.ActionPrefix(); ok {
		// A range rather than LIKE: it uses the (tenant_id, action, seq)
		// index on both dialects. Actions are ASCII, so bumping the last
		// byte gives the first string past the prefix.
		q = q.Where("action >= ? AND action < ?", prefix, prefix[:len(prefix)-1]+string(prefix[len(prefix)-1]+1))
	} else if f.Action != "" {
		q = q.Where("action = ?", f.Action)
	}
	if !f.Since.IsZero() {
		q = q.Where("occur_time >= ?", f.Since)
	}
	if !f.Until.IsZero() {
		q = q.Where("occur_time < ?", f.Until)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, dbError(err)
	}
	return auditEvents(rows), nil
}

// Chain returns a chain's events after afterSeq, oldest first.
func (l AuditLog) Chain(ctx context.Context, tenantID string, afterSeq int64, limit int) ([]*domain.AuditEvent, error) {
	var rows []auditEventRow
	err := l.db.NewSelect().Model(&rows).Where("tenant_id = ? AND seq > ?", tenantID, afterSeq).
		OrderExpr("seq ASC").Limit(limit).Scan(ctx)
	if err != nil {
		return nil, dbError(err)
	}
	return auditEvents(rows), nil
}

// Head returns where a tenant's log stands.
func (l AuditLog) Head(ctx context.Context, tenantID string) (domain.AuditHead, error) {
	empty, _ := tlog.TreeHash(0, nil)
	head := &auditChainHeadRow{TenantID: tenantID}
	err := l.db.NewSelect().Model(head).WherePK().Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.AuditHead{Root: empty}, nil
	}
	if err != nil {
		return domain.AuditHead{}, dbError(err)
	}
	out := domain.AuditHead{Size: head.Seq, Root: empty, ExpiredThrough: head.ExpiredThrough}
	if head.Hash != "" {
		// A root that is not hex reads as a wrong one, which verification reports.
		root, _ := hex.DecodeString(head.Hash)
		copy(out.Root[:], root)
	}
	return out, nil
}

func auditEvents(rows []auditEventRow) []*domain.AuditEvent {
	out := make([]*domain.AuditEvent, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out
}
