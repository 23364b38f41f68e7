package persistence

import (
	"context"
	"slices"
	"time"

	"github.com/uptrace/bun"

	"github.com/tenant-registry/tenant-registry/domain"
)

// apiKeyRow is the api_keys table.
type apiKeyRow struct {
	bun.BaseModel `bun:"table:api_keys"`

	ID           string            `bun:"id,pk"`
	TenantID     string            `bun:"tenant_id,notnull"`
	Name         string            `bun:"name,notnull"`
	Prefix       string            `bun:"prefix,notnull"`
	Hash         string            `bun:"hash,notnull"`
	Scopes       []string          `bun:"scopes,notnull"`
	CreateTime   time.Time         `bun:"create_time,notnull"`
	UpdateTime   time.Time         `bun:"update_time,notnull"`
	ExpireTime   time.Time         `bun:"expire_time,nullzero"`
	RevokeTime   time.Time         `bun:"revoke_time,nullzero"`
	LastUsedTime time.Time         `bun:"last_used_time,nullzero"`
	CreatedBy    string            `bun:"created_by_key,nullzero"`
	DisableTime  time.Time         `bun:"disable_time,nullzero"`
	DisabledWith string            `bun:"disabled_with_key,nullzero"`
	Metadata     map[string]string `bun:"metadata,notnull"`
}

func newApiKeyRow(k *domain.ApiKey) *apiKeyRow {
	scopes := k.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	return &apiKeyRow{
		ID: k.ID, TenantID: k.TenantID, Name: k.Name, Prefix: k.Prefix, Hash: k.Hash, Scopes: scopes,
		CreateTime: storedTime(k.CreateTime), UpdateTime: storedTime(k.UpdateTime), ExpireTime: storedTime(k.ExpireTime),
		RevokeTime: storedTime(k.RevokeTime), LastUsedTime: storedTime(k.LastUsedTime), CreatedBy: k.CreatedBy,
		DisableTime: storedTime(k.DisableTime), DisabledWith: k.DisabledWith, Metadata: metadataRow(k.Metadata),
	}
}

// metadataRow is metadata as stored: never NULL.
func metadataRow(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func (r *apiKeyRow) domain() *domain.ApiKey {
	return &domain.ApiKey{
		ID: r.ID, TenantID: r.TenantID, Name: r.Name, Prefix: r.Prefix, Hash: r.Hash, Scopes: r.Scopes,
		CreateTime: utc(r.CreateTime), UpdateTime: utc(r.UpdateTime), ExpireTime: utc(r.ExpireTime),
		RevokeTime: utc(r.RevokeTime), LastUsedTime: utc(r.LastUsedTime), CreatedBy: r.CreatedBy,
		DisableTime: utc(r.DisableTime), DisabledWith: r.DisabledWith, Metadata: metadataRow(r.Metadata),
	}
}

// utc keeps the zero time zero (time.Time{}.UTC() is not IsZero-safe across drivers).
func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

// ApiKeyRepository implements domain.ApiKeyRepository.
type ApiKeyRepository struct{ conn }

var _ domain.ApiKeyRepository = ApiKeyRepository{}

// Create inserts k.
func (r ApiKeyRepository) Create(ctx context.Context, k *domain.ApiKey) error {
	_, err := r.db.NewInsert().Model(newApiKeyRow(k)).Exec(ctx)
	return duplicateError(err, "an API key with this hash already exists")
}

// Get returns the key with the given id.
func (r ApiKeyRepository) Get(ctx context.Context, id string) (*domain.ApiKey, error) {
	return r.one(ctx, r.db.NewSelect().Where("id = ?", id))
}

// GetForUpdate returns the key with the given id, keeping concurrent
// writers of it out until the transaction ends.
func (r ApiKeyRepository) GetForUpdate(ctx context.Context, id string) (*domain.ApiKey, error) {
	return r.one(ctx, r.dialect.forUpdate(r.db.NewSelect().Where("id = ?", id)))
}

func (r ApiKeyRepository) one(ctx context.Context, q *bun.SelectQuery) (*domain.ApiKey, error) {
	var row apiKeyRow
	if err := q.Model(&row).Limit(1).Scan(ctx); err != nil {
		return nil, missingRowError(err, domain.ApiKeyNotFoundMessage)
	}
	return row.domain(), nil
}

// ListLegacyByPrefix returns the argon2id-hashed keys with this prefix.
func (r ApiKeyRepository) ListLegacyByPrefix(ctx context.Context, prefix string) ([]*domain.ApiKey, error) {
	var rows []apiKeyRow
	err := r.db.NewSelect().Model(&rows).Where("prefix = ? AND hash LIKE 'argon2id|%'", prefix).Limit(16).Scan(ctx)
	if err != nil {
		return nil, dbError(err)
	}
	return apiKeys(rows), nil
}

// List returns a tenant's keys after afterID, by id.
func (r ApiKeyRepository) List(ctx context.Context, tenantID, afterID string, limit int) ([]*domain.ApiKey, error) {
	var rows []apiKeyRow
	q := r.db.NewSelect().Model(&rows).Where("tenant_id = ?", tenantID).OrderExpr("id ASC").Limit(limit)
	if afterID != "" {
		q = q.Where("id > ?", afterID)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, dbError(err)
	}
	return apiKeys(rows), nil
}

// Update writes a key's expire, revoke and update times.
func (r ApiKeyRepository) Update(ctx context.Context, k *domain.ApiKey) error {
	res, err := r.db.NewUpdate().Model(newApiKeyRow(k)).
		Column("name", "scopes", "expire_time", "revoke_time", "disable_time", "disabled_with_key", "metadata", "update_time").WherePK().Exec(ctx)
	if err != nil {
		return dbError(err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return domain.Errorf(domain.KindNotFound, "%s", domain.ApiKeyNotFoundMessage)
	}
	return nil
}

// Descendants returns the unrevoked keys key id created, and theirs, in
// one query however many there are.
func (r ApiKeyRepository) Descendants(ctx context.Context, id string) ([]*domain.ApiKey, error) {
	var rows []apiKeyRow
	err := r.db.NewRaw(`WITH RECURSIVE descendants(id) AS (
			SELECT id FROM api_keys WHERE created_by_key = ?
			UNION
			SELECT k.id FROM api_keys AS k JOIN descendants AS d ON k.created_by_key = d.id
		)
		SELECT * FROM api_keys WHERE id IN (SELECT id FROM descendants) AND revoke_time IS NULL ORDER BY id`, id).Scan(ctx, &rows)
	if err != nil {
		return nil, dbError(err)
	}
	return apiKeys(rows), nil
}

// CountLive counts a tenant's keys neither revoked nor expired at now.
func (r ApiKeyRepository) CountLive(ctx context.Context, tenantID string, now time.Time) (int, error) {
	n, err := r.db.NewSelect().Model((*apiKeyRow)(nil)).
		Where("tenant_id = ? AND revoke_time IS NULL AND (expire_time IS NULL OR expire_time > ?)", tenantID, storedTime(now)).Count(ctx)
	return n, dbError(err)
}

// RevokeAll revokes the keys of ids not yet revoked, a chunk of them per
// statement.
func (r ApiKeyRepository) RevokeAll(ctx context.Context, ids []string, now time.Time) error {
	return r.updateAll(ctx, ids, "revoke_time = ?, update_time = ?", []any{storedTime(now), storedTime(now)}, "revoke_time IS NULL")
}

// DisableAll disables the keys of ids neither revoked nor disabled, with
// key with, a chunk of them per statement.
func (r ApiKeyRepository) DisableAll(ctx context.Context, ids []string, with string, now time.Time) error {
	return r.updateAll(ctx, ids, "disable_time = ?, disabled_with_key = ?, update_time = ?", []any{storedTime(now), with, storedTime(now)},
		"disable_time IS NULL AND revoke_time IS NULL")
}

// EnableAll enables the keys of ids disabled with key with, a chunk of
// them per statement.
func (r ApiKeyRepository) EnableAll(ctx context.Context, ids []string, with string, now time.Time) error {
	return r.updateAll(ctx, ids, "disable_time = NULL, disabled_with_key = NULL, update_time = ?", []any{storedTime(now)},
		"disabled_with_key = ? AND revoke_time IS NULL", with)
}

// MoveDisabled makes the keys of ids disabled with key from count as
// disabled with key to, a chunk of them per statement.
func (r ApiKeyRepository) MoveDisabled(ctx context.Context, ids []string, from, to string) error {
	return r.updateAll(ctx, ids, "disabled_with_key = ?", []any{to}, "disabled_with_key = ?", from)
}

// updateAll sets set on the keys of ids that match where, a chunk of ids
// per statement.
func (r ApiKeyRepository) updateAll(ctx context.Context, ids []string, set string, setArgs []any, where string, whereArgs ...any) error {
	for chunk := range slices.Chunk(ids, 1000) {
		_, err := r.db.NewUpdate().Model((*apiKeyRow)(nil)).Set(set, setArgs...).
			Where("id IN (?)", bun.In(chunk)).Where(where, whereArgs...).Exec(ctx)
		if err != nil {
			return dbError(err)
		}
	}
	return nil
}

// Reparent moves the keys created by key from to key to.
func (r ApiKeyRepository) Reparent(ctx context.Context, from, to string) error {
	_, err := r.db.NewUpdate().Model((*apiKeyRow)(nil)).Set("created_by_key = ?", to).Where("created_by_key = ?", from).Exec(ctx)
	return dbError(err)
}

// Rehash replaces a key's hash if it is still oldHash; when a concurrent
// verification got there first there is nothing left to do.
func (r ApiKeyRepository) Rehash(ctx context.Context, id, oldHash, newHash string) error {
	_, err := r.db.NewUpdate().Model((*apiKeyRow)(nil)).Set("hash = ?", newHash).
		Where("id = ? AND hash = ?", id, oldHash).Exec(ctx)
	return dbError(err)
}

// TouchLastUsed records last-use times, never moving one backwards.
func (r ApiKeyRepository) TouchLastUsed(ctx context.Context, used map[string]time.Time) error {
	for id, t := range used {
		t = storedTime(t)
		_, err := r.db.NewUpdate().Model((*apiKeyRow)(nil)).Set("last_used_time = ?", t).
			Where("id = ? AND (last_used_time IS NULL OR last_used_time < ?)", id, t).Exec(ctx)
		if err != nil {
			return dbError(err)
		}
	}
	return nil
}

func apiKeys(rows []apiKeyRow) []*domain.ApiKey {
	out := make([]*domain.ApiKey, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out
}

// verificationRow is one row of the verification query: a key, its tenant,
// and one of the tenant's entitlements (NULL columns when it has none).
type verificationRow struct {
	ID           string            `bun:"id"`
	TenantID     string            `bun:"tenant_id"`
	Name         string            `bun:"name"`
	Prefix       string            `bun:"prefix"`
	Hash         string            `bun:"hash"`
	Scopes       []string          `bun:"scopes"`
	CreateTime   time.Time         `bun:"create_time"`
	UpdateTime   time.Time         `bun:"update_time"`
	ExpireTime   time.Time         `bun:"expire_time,nullzero"`
	RevokeTime   time.Time         `bun:"revoke_time,nullzero"`
	LastUsedTime time.Time         `bun:"last_used_time,nullzero"`
	DisableTime  time.Time         `bun:"disable_time,nullzero"`
	Metadata     map[string]string `bun:"metadata"`
	TenantSlug   string            `bun:"tenant_slug"`
	TenantStatus string            `bun:"tenant_status"`
	Product      *string           `bun:"e_product"`
	EntStatus    *string           `bun:"e_status"`
	EntSource    *string           `bun:"e_source"`
	EntStart     time.Time         `bun:"e_start_time,nullzero"`
	EntExpire    time.Time         `bun:"e_expire_time,nullzero"`
	EntLimits    map[string]int64  `bun:"e_limits"`
	Defaults     map[string]int64  `bun:"p_default_limits"`
	TrialLimits  map[string]int64  `bun:"p_trial_limits"`
}

// verificationQuery reads a key by hash, with its tenant and one row per
// entitlement of the tenant. SQLite runs it as it is; PostgreSQL runs the
// same query inside the api_key_verification function (migration
// 20261122000006), whose plan it keeps; TestVerificationQueryAgrees holds
// the three to the same rows.
const verificationQuery = `SELECT k.id, k.tenant_id, k.name, k.prefix, k.hash, k.scopes, k.create_time, k.update_time,
		k.expire_time, k.revoke_time, k.last_used_time, k.disable_time, k.metadata,
		t.slug AS tenant_slug, t.status AS tenant_status,
		e.product AS e_product, e.status AS e_status, e.source AS e_source,
		e.start_time AS e_start_time, e.expire_time AS e_expire_time,
		e.limits AS e_limits, p.default_limits AS p_default_limits, p.trial_limits AS p_trial_limits
	FROM api_keys AS k
	JOIN tenants AS t ON t.id = k.tenant_id
	LEFT JOIN entitlements AS e ON e.tenant_id = k.tenant_id
	LEFT JOIN products AS p ON p.key = e.product
	WHERE k.hash = ?`

// verificationFunction is verificationQuery as PostgreSQL runs it.
const verificationFunction = "SELECT * FROM api_key_verification(?)"

// GetForVerification reads the key with this hash, its tenant and the
// tenant's entitlements in one round trip: the database path of the
// verification hot path.
func (r ApiKeyRepository) GetForVerification(ctx context.Context, hash string) (*domain.KeyRecord, error) {
	var rows []verificationRow
	err := r.db.NewRaw(r.dialect.verificationQuery(), hash).Scan(ctx, &rows)
	return verificationRecord(rows, err)
}

// verificationRecord assembles the rows of the verification query.
func verificationRecord(rows []verificationRow, err error) (*domain.KeyRecord, error) {
	if err != nil {
		return nil, dbError(err)
	}
	if len(rows) == 0 {
		return nil, domain.Errorf(domain.KindNotFound, "%s", domain.ApiKeyNotFoundMessage)
	}
	first := rows[0]
	key := (&apiKeyRow{
		ID: first.ID, TenantID: first.TenantID, Name: first.Name, Prefix: first.Prefix, Hash: first.Hash, Scopes: first.Scopes,
		CreateTime: first.CreateTime, UpdateTime: first.UpdateTime, ExpireTime: first.ExpireTime,
		RevokeTime: first.RevokeTime, LastUsedTime: first.LastUsedTime, DisableTime: first.DisableTime, Metadata: first.Metadata,
	}).domain()
	rec := &domain.KeyRecord{
		Key:    key,
		Tenant: &domain.Tenant{ID: first.TenantID, Slug: first.TenantSlug, Status: domain.TenantStatus(first.TenantStatus)},
	}
	for _, row := range rows {
		if row.Product == nil {
			continue
		}
		rec.Entitlements = append(rec.Entitlements, &domain.Entitlement{
			TenantID: row.TenantID, Product: *row.Product, Status: domain.EntitlementStatus(deref(row.EntStatus)),
			Source: domain.EntitlementSource(deref(row.EntSource)), StartTime: utc(row.EntStart), ExpireTime: utc(row.EntExpire),
			Limits: domain.Limits(row.EntLimits), Base: productBase(deref(row.EntSource), row.Defaults, row.TrialLimits),
		})
	}
	return rec, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
