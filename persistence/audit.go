package persistence

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
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
	// Edge is the tree's right edge: the hex roots of the perfect subtrees
	// of auditlog.EdgeIndexes(Seq), concatenated; "" when not yet kept.
	Edge string `bun:"edge,notnull"`
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

// Append adds events to their logs. However many logs they belong to,
// each step is a statement or two for all of them (create and lock the
// heads, find replays, read the trees' right edges, insert the events,
// their tree hashes and external ids, write the heads; on PostgreSQL the
// writes travel in one round trip), so a shared
// transaction of single appends to many logs costs about what one log's
// batch does. Heads are locked in tenant id order, so two transactions
// appending to the same logs cannot deadlock.
func (l AuditLog) Append(ctx context.Context, events []*domain.AuditEvent) error {
	return duplicateError(l.appendAll(ctx, events), "audit event already exists")
}

func (l AuditLog) appendAll(ctx context.Context, events []*domain.AuditEvent) error {
	byTenant := map[string][]*domain.AuditEvent{}
	for _, e := range events {
		byTenant[e.TenantID] = append(byTenant[e.TenantID], e)
	}
	tenants := slices.Sorted(maps.Keys(byTenant))
	heads, err := l.lockHeads(ctx, tenants)
	if err != nil {
		return err
	}
	stored, err := l.storedByExternalID(ctx, events)
	if err != nil {
		return err
	}
	// Every earlier hash the new leaves need is on each tree's right
	// edge as it stands: read them once, then grow the trees in memory.
	edges, err := l.rightEdges(ctx, heads)
	if err != nil {
		return err
	}
	var rows []auditEventRow
	var hashes []treeHashRow
	var changed []*auditChainHeadRow
	for _, tenantID := range tenants {
		head, tree := heads[tenantID], edges[tenantID]
		before := head.Seq
		for _, e := range byTenant[tenantID] {
			key := externalKey(e.TenantID, e.Product, e.ExternalID)
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
		if head.Seq == before {
			continue
		}
		root, err := tlog.TreeHash(head.Seq, tree)
		if err != nil {
			return err
		}
		head.Hash = hex.EncodeToString(root[:])
		if head.Edge, err = edgeText(head.Seq, tree); err != nil {
			return err
		}
		changed = append(changed, head)
	}
	if len(rows) == 0 {
		return nil
	}
	var keys []externalIDRow
	for _, r := range rows {
		if r.ExternalID != "" {
			keys = append(keys, externalIDRow{TenantID: r.TenantID, Product: r.Product, ExternalID: r.ExternalID, Seq: r.Seq, ReceiveTime: r.ReceiveTime})
		}
	}
	writes := slices.Concat(inserts(l.db, rows, insertChunk), inserts(l.db, hashes, 4*insertChunk), inserts(l.db, keys, insertChunk), l.headWrites(changed))
	if err := l.dialect.execAll(ctx, l.db, writes); err != nil {
		return err
	}
	if l.appended != nil {
		l.appended(len(rows)) // idempotent repeats wrote nothing and are not counted
	}
	return nil
}

// inserts are the statements that insert rows, a chunk of them each.
func inserts[T any](db bun.IDB, rows []T, chunk int) []statement {
	var out []statement
	for part := range slices.Chunk(rows, chunk) {
		out = append(out, db.NewInsert().Model(&part))
	}
	return out
}

// lockHeads creates the heads of the logs of tenants that have none and
// locks them all, in tenant id order, until the transaction ends.
func (l AuditLog) lockHeads(ctx context.Context, tenants []string) (map[string]*auditChainHeadRow, error) {
	out := make(map[string]*auditChainHeadRow, len(tenants))
	for chunk := range slices.Chunk(tenants, insertChunk) {
		fresh := make([]auditChainHeadRow, len(chunk))
		for i, t := range chunk {
			fresh[i] = auditChainHeadRow{TenantID: t}
		}
		// One statement creates the missing heads and locks them all: an
		// upsert locks each row it meets, in the order given, and returns
		// it as it stands (the update changes nothing).
		var heads []auditChainHeadRow
		err := l.db.NewInsert().Model(&fresh).On("CONFLICT (tenant_id) DO UPDATE").Set("tenant_id = EXCLUDED.tenant_id").
			Returning("*").Scan(ctx, &heads)
		if err != nil {
			return nil, err
		}
		for i := range heads {
			out[heads[i].TenantID] = &heads[i]
		}
	}
	for _, t := range tenants {
		if out[t] == nil {
			return nil, fmt.Errorf("the audit log head of %q was not found after it was created", t)
		}
	}
	return out, nil
}

// headWrites are the statements that write the new size, root and edge
// of each head, one for up to a chunk of them.
func (l AuditLog) headWrites(heads []*auditChainHeadRow) []statement {
	var out []statement
	for chunk := range slices.Chunk(heads, insertChunk) {
		var seq, hash, edge strings.Builder
		var seqArgs, hashArgs, edgeArgs []any
		ids := make([]string, len(chunk))
		for i, h := range chunk {
			seq.WriteString(" WHEN ? THEN ?")
			hash.WriteString(" WHEN ? THEN ?")
			edge.WriteString(" WHEN ? THEN ?")
			seqArgs = append(seqArgs, h.TenantID, h.Seq)
			hashArgs = append(hashArgs, h.TenantID, h.Hash)
			edgeArgs = append(edgeArgs, h.TenantID, h.Edge)
			ids[i] = h.TenantID
		}
		args := slices.Concat(seqArgs, hashArgs, edgeArgs, []any{bun.In(ids)})
		out = append(out, l.db.NewRaw("UPDATE audit_chain_heads SET seq = CASE tenant_id"+seq.String()+" END, hash = CASE tenant_id"+hash.String()+
			" END, edge = CASE tenant_id"+edge.String()+" END WHERE tenant_id IN (?)", args...))
	}
	return out
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

// rightEdges returns, for every head, the hashes of the perfect subtrees
// its tree is made of: all that appending to it, and its root, need. The
// head keeps them; those of a head written before it did are read.
func (l AuditLog) rightEdges(ctx context.Context, heads map[string]*auditChainHeadRow) (map[string]treeHashes, error) {
	out := make(map[string]treeHashes, len(heads))
	var lookups []hashKey
	for t, h := range heads {
		indexes := auditlog.EdgeIndexes(h.Seq)
		if tree, ok := edgeOf(h.Edge, indexes); ok {
			out[t] = tree
			continue
		}
		out[t] = treeHashes{}
		for _, idx := range indexes {
			lookups = append(lookups, hashKey{t, idx})
		}
	}
	found, err := l.readHashes(ctx, lookups)
	if err != nil {
		return nil, err
	}
	for _, k := range lookups {
		out[k.tenantID][k.index] = found[k]
	}
	return out, nil
}

// edgeOf decodes a head's kept edge for the indexes of its size; false
// when it keeps none, or not one of that size.
func edgeOf(edge string, indexes []int64) (treeHashes, bool) {
	if len(edge) != len(indexes)*2*tlog.HashSize || len(indexes) == 0 {
		return nil, false
	}
	tree := treeHashes{}
	for i, idx := range indexes {
		var h tlog.Hash
		if _, err := hex.Decode(h[:], []byte(edge[i*2*tlog.HashSize:(i+1)*2*tlog.HashSize])); err != nil {
			return nil, false
		}
		tree[idx] = h
	}
	return tree, true
}

// edgeText encodes the edge of a tree of size leaves from tree, which
// holds it.
func edgeText(size int64, tree treeHashes) (string, error) {
	var b strings.Builder
	for _, idx := range auditlog.EdgeIndexes(size) {
		h, ok := tree[idx]
		if !ok {
			return "", fmt.Errorf("tree hash %d of the new edge is not loaded", idx)
		}
		b.WriteString(hex.EncodeToString(h[:]))
	}
	return b.String(), nil
}

// hashLookupsPerQuery bounds the lookups ReadHashes joins into one
// statement (SQLite allows 500 terms in a compound SELECT).
const hashLookupsPerQuery = 200

// ReadHashes returns stored tree hashes of a tenant, in the order asked.
func (l AuditLog) ReadHashes(ctx context.Context, tenantID string, indexes []int64) ([]tlog.Hash, error) {
	lookups := make([]hashKey, len(indexes))
	for i, idx := range indexes {
		lookups[i] = hashKey{tenantID, idx}
	}
	found, err := l.readHashes(ctx, lookups)
	if err != nil {
		return nil, err
	}
	out := make([]tlog.Hash, len(indexes))
	for i, k := range lookups {
		out[i] = found[k]
	}
	return out, nil
}

// hashKey names one stored tree hash.
type hashKey struct {
	tenantID string
	index    int64
}

// readHashes reads the stored hashes of lookups, NotFound naming the
// first that is missing (or not a hash). Each is one
// primary-key lookup, joined into one statement: a plan for "idx IN (…)"
// may scan the tenant's whole tree instead, when the statistics have not
// yet seen how large the tree grew (seconds at a million events).
func (l AuditLog) readHashes(ctx context.Context, lookups []hashKey) (map[hashKey]tlog.Hash, error) {
	found := make(map[hashKey]tlog.Hash, len(lookups))
	for chunk := range slices.Chunk(lookups, hashLookupsPerQuery) {
		selects := make([]string, len(chunk))
		args := make([]any, 0, 2*len(chunk))
		for i, k := range chunk {
			selects[i] = "SELECT tenant_id, idx, hash FROM audit_tree_hashes WHERE tenant_id = ? AND idx = ?"
			args = append(args, k.tenantID, k.index)
		}
		var rows []treeHashRow
		if err := l.db.NewRaw(strings.Join(selects, " UNION ALL "), args...).Scan(ctx, &rows); err != nil {
			return nil, dbError(err)
		}
		for _, r := range rows {
			if len(r.Hash) == tlog.HashSize {
				found[hashKey{r.TenantID, r.Index}] = tlog.Hash(r.Hash)
			}
		}
	}
	for _, k := range lookups {
		if _, ok := found[k]; !ok {
			return nil, domain.Errorf(domain.KindNotFound, "the audit log's tree hash %d is missing", k.index)
		}
	}
	return found, nil
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

// storedByExternalID returns the stored events that share an external id
// with one of events, by externalKey. It looks the ids up in the keys'
// table by its primary key, one statement for all of them (a join with
// a VALUES list, which PostgreSQL plans in a fraction of the time an OR
// per log takes), and only when some are found reads the events they
// name by theirs, receive time included, so that PostgreSQL reads one
// partition each. An id whose event was dropped with its month is
// refused: its event cannot be answered again, nor recorded a second time
// under the same id.
func (l AuditLog) storedByExternalID(ctx context.Context, events []*domain.AuditEvent) (map[string]*domain.AuditEvent, error) {
	out := map[string]*domain.AuditEvent{}
	seen := map[string]bool{}
	var rows []string
	var args []any
	for _, e := range events {
		key := externalKey(e.TenantID, e.Product, e.ExternalID)
		if e.ExternalID == "" || seen[key] {
			continue
		}
		seen[key] = true
		rows = append(rows, "(?, ?, ?)")
		args = append(args, e.TenantID, e.Product, e.ExternalID)
	}
	if len(rows) == 0 {
		return out, nil
	}
	with := "WITH k (tenant_id, product, external_id) AS (VALUES " + strings.Join(rows, ", ") + ") "
	const match = " JOIN k ON x.tenant_id = k.tenant_id AND x.product = k.product AND x.external_id = k.external_id"
	var keys []externalIDRow
	if err := l.db.NewRaw(with+"SELECT x.* FROM audit_external_ids AS x"+match, args...).Scan(ctx, &keys); err != nil {
		return nil, dbError(err)
	}
	if len(keys) == 0 {
		return out, nil
	}
	var stored []auditEventRow
	err := l.db.NewRaw(with+`SELECT a.* FROM audit_external_ids AS x`+match+`
		JOIN audit_events AS a ON a.tenant_id = x.tenant_id AND a.seq = x.seq AND a.receive_time = x.receive_time`, args...).Scan(ctx, &stored)
	if err != nil {
		return nil, dbError(err)
	}
	for i := range stored {
		out[externalKey(stored[i].TenantID, stored[i].Product, stored[i].ExternalID)] = stored[i].domain()
	}
	for _, k := range keys {
		if _, ok := out[externalKey(k.TenantID, k.Product, k.ExternalID)]; !ok {
			return nil, domain.Errorf(domain.KindFailedPrecondition,
				"the event with external_id %q of product %s is no longer stored; record it under another external id", k.ExternalID, k.Product)
		}
	}
	return out, nil
}

// externalKey is the key of an external id: unique per log and product.
func externalKey(tenantID, product, externalID string) string {
	return tenantID + "\x00" + product + "\x00" + externalID
}

// List reads its rows one at a time, so that it stops at maxBytes holding
// no more than the events it returns.
func (l AuditLog) List(ctx context.Context, f domain.AuditFilter, beforeSeq int64, limit, maxBytes int) ([]*domain.AuditEvent, error) {
	q := l.db.NewSelect().Model((*auditEventRow)(nil)).Where("tenant_id = ?", f.TenantID).OrderExpr("seq DESC").Limit(limit)
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
	rows, err := q.Rows(ctx)
	if err != nil {
		return nil, dbError(err)
	}
	defer rows.Close()
	var out []*domain.AuditEvent
	for bytes := 0; bytes < maxBytes && rows.Next(); {
		var row auditEventRow
		if err := q.DB().ScanRow(ctx, rows, &row); err != nil {
			return nil, dbError(err)
		}
		e := row.domain()
		bytes += e.Size()
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, dbError(err)
	}
	return out, nil
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
