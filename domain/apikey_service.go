package domain

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ApiKeyService issues, lists, rotates, revokes, imports and verifies API
// keys.
type ApiKeyService struct {
	guard
	verifier *KeyVerifier
}

// NewApiKeyService returns an ApiKeyService on store, verifying keys
// through verifier.
func NewApiKeyService(store Store, now Clock, verifier *KeyVerifier) *ApiKeyService {
	return &ApiKeyService{guard: newGuard(store, now), verifier: verifier}
}

// Verify checks a presented key for a product (see KeyVerifier.Verify).
func (s *ApiKeyService) Verify(ctx context.Context, key, product string, requiredScopes []string) (*Verification, error) {
	if err := s.allow(ctx, PermKeysVerify, "", nil); err != nil {
		return nil, err
	}
	return s.verifier.Verify(ctx, key, product, requiredScopes)
}

// loadKey reads key id for a caller that may manage its tenant's keys: a
// key of a tenant the caller may not see is answered like a missing one.
// A refused change (action not empty) is recorded.
func (s *ApiKeyService) loadKey(ctx context.Context, id, action string) (*ApiKey, error) {
	var a *attempt
	if action != "" {
		a = tried(action, "u", "api_key", id)
	}
	k, err := s.store.ApiKeys().Get(ctx, id)
	if ErrorKind(err) == KindNotFound && !CallerFrom(ctx).Principal.IsPlatformAdmin() {
		// A missing key is answered, and recorded, as a key of a tenant
		// the caller may not see is: neither the answer, nor its time, nor
		// the audit events the caller can read tell the two apart.
		if rerr := s.record(ctx, PermKeysManage, "", a, true); rerr != nil {
			return nil, rerr
		}
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	if err := s.allowKey(ctx, PermKeysManage, k, a); err != nil {
		return nil, err
	}
	return k, nil
}

// outlived is why principal p may not hand out a key of expiry expire
// (zero: never), or "": a key hands out nothing that outlives it.
func outlived(p Principal, expire time.Time) string {
	if !p.isKey() || p.ExpireTime.IsZero() || !expire.IsZero() && !expire.After(p.ExpireTime) {
		return ""
	}
	return fmt.Sprintf("the calling key expires at %s and cannot create a key that outlives it: set expire_time at or before then",
		p.ExpireTime.Format(time.RFC3339))
}

// createdBy is the key a new key is created by: the calling key, if a key calls.
func createdBy(ctx context.Context) string {
	if p := CallerFrom(ctx).Principal; p.isKey() {
		return p.ID
	}
	return ""
}

// handsOut refuses a credential of tenantID with scopes and expiry expire
// that the caller may not hand out: see ungrantable and outlived.
func (s *ApiKeyService) handsOut(ctx context.Context, tenantID string, scopes []string, expire time.Time, a *attempt) error {
	return s.refuseFor(ctx, tenantID, a, handOutRefusal(CallerFrom(ctx).Principal, tenantID, scopes, expire))
}

// handOutRefusal is why principal p may not hand out a credential of
// tenantID with scopes and expiry expire, or "": for checks made inside a
// transaction, which carry it out as a handOutRefused.
func handOutRefusal(p Principal, tenantID string, scopes []string, expire time.Time) string {
	if why := ungrantable(p, tenantID, scopes); why != "" {
		return why
	}
	return outlived(p, expire)
}

// handOutRefused ends a transaction that found the caller may not hand a
// key out; the refusal is recorded once the transaction has rolled back.
type handOutRefused struct{ tenantID, why string }

func (r *handOutRefused) Error() string { return r.why }

// refusedAfter records and answers a handOutRefused that ended a
// transaction; any other error is returned as it is.
func (s *ApiKeyService) refusedAfter(ctx context.Context, err error, a *attempt) error {
	var r *handOutRefused
	if errors.As(err, &r) {
		return s.refuse(ctx, PermKeysManage, r.tenantID, a, r.why)
	}
	return err
}

// refuseFor refuses, recording it, when why is not empty.
func (s *ApiKeyService) refuseFor(ctx context.Context, tenantID string, a *attempt, why string) error {
	if why == "" {
		return nil
	}
	return s.refuse(ctx, PermKeysManage, tenantID, a, why)
}

// grantable refuses, with PermissionDenied naming the scope, a credential
// of tenantID that would carry a scope its kind of key may not carry, or
// one the caller does not hold itself: a principal hands out only what it
// holds, where it holds it.
func (s *ApiKeyService) grantable(ctx context.Context, tenantID string, scopes []string, a *attempt) error {
	return s.refuseFor(ctx, tenantID, a, ungrantable(CallerFrom(ctx).Principal, tenantID, scopes))
}

// ungrantable is why principal p may not grant scopes on a key of
// tenantID, or "".
func ungrantable(p Principal, tenantID string, scopes []string) string {
	for _, scope := range scopes {
		switch {
		case tenantID != PlatformTenantID && IsPlatformScope(scope):
			return fmt.Sprintf("scope %s is carried by platform keys only (keys of tenant %s)", scope, PlatformTenantID)
		case !p.Holds(scope):
			return fmt.Sprintf("the caller does not hold scope %s and so cannot grant it", scope)
		}
	}
	return ""
}

// CreateApiKey is the input of ApiKeyService.Create.
type CreateApiKey struct {
	TenantID   string
	Name       string
	Scopes     []string
	ExpireTime time.Time // zero: never
}

// Create issues a key and returns it with its plaintext, which is not
// stored and cannot be read again.
func (s *ApiKeyService) Create(ctx context.Context, in CreateApiKey) (*ApiKey, string, error) {
	now := s.now()
	var v Violations
	tenantID := checkID(&v, "tenant_id", in.TenantID)
	name := checkName(&v, "name", in.Name, MaxKeyNameLen)
	scopes := checkKeyScopes(&v, "scopes", tenantID, in.Scopes)
	if !in.ExpireTime.IsZero() && !in.ExpireTime.After(now) {
		v.Add("expire_time", "must be in the future")
	}
	if err := v.Err(); err != nil {
		return nil, "", err
	}
	a := tried("api_key.created", "c", "api_key", "")
	if err := s.allow(ctx, PermKeysManage, tenantID, a); err != nil {
		return nil, "", err
	}
	expire := s.store.StoredTime(in.ExpireTime) // compared with the calling key's, as stored
	if err := s.handsOut(ctx, tenantID, scopes, expire, a); err != nil {
		return nil, "", err
	}
	plaintext := NewPlaintextKey()
	k := &ApiKey{
		ID: NewID(), TenantID: tenantID, Name: name, Prefix: displayPrefix(plaintext),
		Hash: storedHash(keyDigest(plaintext)), Scopes: scopes, CreateTime: now, UpdateTime: now,
		ExpireTime: expire, CreatedBy: createdBy(ctx),
	}
	err := s.store.Atomically(ctx, func(r Repositories) error {
		if err := s.issue(ctx, r, k, keyDigest(plaintext)); err != nil {
			return err
		}
		return recordChange(ctx, r, now, keyChange(k, "api_key.created", "c", "API key created"))
	})
	if err != nil {
		return nil, "", err
	}
	return k, plaintext, nil
}

// issue stores a new key of a tenant that may have keys.
func (s *ApiKeyService) issue(ctx context.Context, r Repositories, k *ApiKey, digest string) error {
	t, err := r.Tenants().GetForUpdate(ctx, k.TenantID)
	if err != nil {
		return err
	}
	if t.Status == TenantFrozen {
		return Errorf(KindFailedPrecondition, "tenant %s is FROZEN: activate it before issuing keys", t.ID)
	}
	// A key creating a key is locked and must still be active: otherwise
	// a key made while its creator is revoked or disabled would be missed
	// by the walk over the creator's descendants and outlast it.
	if caller := createdBy(ctx); caller != "" {
		creator, err := r.ApiKeys().GetForUpdate(ctx, caller)
		if err != nil {
			return err
		}
		if st := creator.StatusAt(s.now()); st != ApiKeyActive {
			return Errorf(KindUnauthenticated, "the calling API key is %s", st)
		}
	}
	if err := productScopesExist(ctx, r, "scopes", k.Scopes); err != nil {
		return err
	}
	if err := r.ApiKeys().Create(ctx, k); err != nil {
		return err
	}
	// Another replica may remember this hash as unknown.
	return r.Invalidations().Announce(ctx, Change{Kind: ChangeKeyCreated, TenantID: k.TenantID, KeyID: k.ID, KeyHash: digest})
}

// Get returns a key's metadata.
func (s *ApiKeyService) Get(ctx context.Context, id string) (*ApiKey, error) {
	id, err := ParseID("id", id)
	if err != nil {
		return nil, err
	}
	return s.loadKey(ctx, id, "")
}

// List returns one page of a tenant's keys, oldest first.
func (s *ApiKeyService) List(ctx context.Context, tenantID string, p PageRequest) (*Page[*ApiKey], error) {
	var v Violations
	tenantID = checkID(&v, "tenant_id", tenantID)
	size := p.pageSize(&v)
	query := "api_keys|" + tenantID
	after := p.afterID(&v, query)
	if err := v.Err(); err != nil {
		return nil, err
	}
	if err := s.allow(ctx, PermKeysManage, tenantID, nil); err != nil {
		return nil, err
	}
	if _, err := s.store.Tenants().Get(ctx, tenantID); err != nil {
		return nil, err
	}
	keys, err := s.store.ApiKeys().List(ctx, tenantID, after, size+1)
	if err != nil {
		return nil, err
	}
	return pageOf(keys, size, query, func(k *ApiKey) string { return k.ID }), nil
}

// Revoke revokes a key at once. Revoking a revoked key changes nothing.
func (s *ApiKeyService) Revoke(ctx context.Context, id string) (*ApiKey, error) {
	id, err := ParseID("id", id)
	if err != nil {
		return nil, err
	}
	if _, err := s.loadKey(ctx, id, "api_key.revoked"); err != nil {
		return nil, err
	}
	var out *ApiKey
	err = s.store.Atomically(ctx, func(r Repositories) error {
		k, err := r.ApiKeys().GetForUpdate(ctx, id)
		if err != nil {
			return err
		}
		out = k
		if !k.RevokeTime.IsZero() {
			// A concurrent first revocation may have committed without
			// having reached this replica's cache yet: answering before it
			// has would let a verification that starts after this answer
			// see the key as valid.
			return r.Invalidations().Repeat(ctx, staleKey(k, ChangeKeyRevoked))
		}
		return revokeWithDescendants(ctx, r, k, s.now())
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Rotate issues a new key with the settings of key id and lets the old one
// expire after grace (at once for 0). It returns the new key, its
// plaintext, and the old key.
func (s *ApiKeyService) Rotate(ctx context.Context, id string, grace time.Duration) (*ApiKey, string, *ApiKey, error) {
	var v Violations
	id = checkID(&v, "id", id)
	if grace < 0 || grace > MaxGracePeriod {
		v.Add("grace_period", "must be between 0 and %s", MaxGracePeriod)
	}
	if err := v.Err(); err != nil {
		return nil, "", nil, err
	}
	// A rotation hands out a new key with the old one's scopes: the
	// caller must hold every one of them.
	k, err := s.loadKey(ctx, id, "api_key.rotated")
	if err != nil {
		return nil, "", nil, err
	}
	a := tried("api_key.rotated", "u", "api_key", k.ID)
	if err := s.handsOut(ctx, k.TenantID, k.Scopes, k.ExpireTime, a); err != nil {
		return nil, "", nil, err
	}
	plaintext, checked := NewPlaintextKey(), k
	var fresh, old *ApiKey
	err = s.store.Atomically(ctx, func(r Repositories) error {
		k, err := r.ApiKeys().GetForUpdate(ctx, id)
		if err != nil {
			return err
		}
		now := s.now()
		if st := k.StatusAt(now); st != ApiKeyActive {
			return Errorf(KindFailedPrecondition, "API key %s is %s and cannot be rotated", k.ID, st)
		}
		if !slices.Equal(k.Scopes, checked.Scopes) || !k.ExpireTime.Equal(checked.ExpireTime) {
			// What the caller was checked against changed meanwhile.
			return Errorf(KindAborted, "API key %s changed during the rotation; read it again and retry", k.ID)
		}
		// The successor takes the old key's place in the lineage (a key
		// rotating another becomes its creator), and the keys the old one
		// created are now the successor's.
		parent := createdBy(ctx)
		if parent == "" || parent == k.ID { // a key rotating itself keeps its place
			parent = k.CreatedBy
		}
		fresh = &ApiKey{
			ID: NewID(), TenantID: k.TenantID, Name: k.Name, Prefix: displayPrefix(plaintext),
			Hash: storedHash(keyDigest(plaintext)), Scopes: k.Scopes, CreateTime: now, UpdateTime: now, ExpireTime: k.ExpireTime,
			Metadata: k.Metadata, CreatedBy: parent,
		}
		if err := s.issue(ctx, r, fresh, keyDigest(plaintext)); err != nil {
			return err
		}
		if err := r.ApiKeys().Reparent(ctx, k.ID, fresh.ID); err != nil {
			return err
		}
		if end := now.Add(grace); k.ExpireTime.IsZero() || end.Before(k.ExpireTime) {
			k.ExpireTime = end
		}
		k.UpdateTime = now
		if err := r.ApiKeys().Update(ctx, k); err != nil {
			return err
		}
		if err := r.Invalidations().Announce(ctx, staleKey(k, ChangeKeyRotated)); err != nil {
			return err
		}
		old = k
		c := keyChange(k, "api_key.rotated", "u", "API key rotated; the old key expires at "+k.ExpireTime.Format(time.RFC3339))
		c.Fields = map[string]string{"new_key_id": fresh.ID, "grace_period": grace.String()}
		return recordChange(ctx, r, now, c)
	})
	if err != nil {
		return nil, "", nil, err
	}
	return fresh, plaintext, old, nil
}

// ImportedApiKey is a key of the previous REST implementation.
type ImportedApiKey struct {
	TenantID   string
	Name       string
	Prefix     string // "bp_" + 8 characters
	Hash       string // "argon2id|<salt-b64>|<hash-b64>"
	Scopes     []string
	CreateTime time.Time // zero: now
	ExpireTime time.Time
}

var legacyPrefixPattern = regexp.MustCompile(`^bp_[A-Za-z0-9+/_-]{8}$`)

// Import stores keys of the previous implementation, all or nothing. They
// verify by their argon2id hash until their first good verification, which
// rehashes them to the fast format.
func (s *ApiKeyService) Import(ctx context.Context, in []ImportedApiKey) ([]*ApiKey, error) {
	now := s.now()
	var v Violations
	switch {
	case len(in) == 0:
		v.Add("keys", "must hold at least one key")
	case len(in) > MaxImportBatch:
		v.Add("keys", "must hold at most %d keys, got %d", MaxImportBatch, len(in))
	}
	keys := make([]*ApiKey, 0, len(in))
	for i, k := range in {
		if len(v) > 20 || len(in) > MaxImportBatch {
			break
		}
		f := "keys[" + strconv.Itoa(i) + "]."
		tenantID := checkID(&v, f+"tenant_id", k.TenantID)
		name := checkName(&v, f+"name", k.Name, MaxKeyNameLen)
		if !legacyPrefixPattern.MatchString(k.Prefix) {
			v.Add(f+"prefix", "must be bp_ and 8 base64 characters")
		}
		if _, err := parseArgon2Hash(k.Hash); err != nil {
			v.Add(f+"hash", "%s", err.Error())
		}
		scopes := checkKeyScopes(&v, f+"scopes", tenantID, k.Scopes)
		created := k.CreateTime
		if created.IsZero() {
			created = now
		}
		keys = append(keys, &ApiKey{
			ID: NewID(), TenantID: tenantID, Name: name, Prefix: k.Prefix, Hash: k.Hash, Scopes: scopes,
			CreateTime: s.store.StoredTime(created), UpdateTime: now, ExpireTime: s.store.StoredTime(k.ExpireTime),
		})
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	a := tried("api_key.imported", "c", "api_key", "")
	if err := s.allow(ctx, PermKeysImport, "", a); err != nil {
		return nil, err
	}
	for _, k := range keys {
		if err := s.grantable(ctx, k.TenantID, k.Scopes, a); err != nil {
			return nil, err
		}
	}
	err := s.store.Atomically(ctx, func(r Repositories) error {
		for i, k := range keys {
			if _, err := r.Tenants().Get(ctx, k.TenantID); err != nil {
				return err
			}
			if err := productScopesExist(ctx, r, "keys["+strconv.Itoa(i)+"].scopes", k.Scopes); err != nil {
				return err
			}
			if err := r.ApiKeys().Create(ctx, k); err != nil {
				return err
			}
			// Its plaintext may have been presented, and remembered as
			// unknown, before.
			if err := r.Invalidations().Announce(ctx, staleKey(k, ChangeKeyCreated)); err != nil {
				return err
			}
			if err := recordChange(ctx, r, now, keyChange(k, "api_key.imported", "c", "API key imported from the previous implementation")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return keys, nil
}

// argon2Hash is a decoded "argon2id|<salt-b64>|<hash-b64>" hash.
type argon2Hash struct{ salt, key []byte }

func parseArgon2Hash(s string) (argon2Hash, error) {
	parts := strings.Split(s, "|")
	if len(parts) != 3 || parts[0]+"|" != hashFormatArgon2ID {
		return argon2Hash{}, fmt.Errorf("must be argon2id|<salt-base64>|<hash-base64>")
	}
	salt, err1 := decodeBase64(parts[1])
	key, err2 := decodeBase64(parts[2])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(salt) > 64 || len(key) != 32 {
		return argon2Hash{}, fmt.Errorf("must hold a base64 salt of 8 to 64 bytes and a base64 32-byte hash")
	}
	return argon2Hash{salt: salt, key: key}, nil
}

// decodeBase64 accepts standard or URL base64, padded or not.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// maxRevocationChanges is how many keys one revocation names to the
// caches one by one; beyond it, they are told to drop everything.
const maxRevocationChanges = 1000

// revokeWithDescendants revokes k and every key it created, and theirs,
// with a statement or two however many there are, so that no key can
// create enough keys to make itself too costly to revoke. Each revoked
// key gets an event in its tenant's log, appended together.
func revokeWithDescendants(ctx context.Context, r Repositories, k *ApiKey, now time.Time) error {
	k.RevokeTime, k.UpdateTime = now, now
	if err := r.ApiKeys().Update(ctx, k); err != nil {
		return err
	}
	// Walked again until a walk finds nothing: a key whose creation
	// committed while this ran (its creator locked, then read as active)
	// is revoked too; after k is written, no key it descends from can
	// create one.
	var descendants []*ApiKey
	for {
		found, err := r.ApiKeys().Descendants(ctx, k.ID)
		if err != nil {
			return err
		}
		if len(found) == 0 {
			break
		}
		ids := make([]string, len(found))
		for i, d := range found {
			ids[i] = d.ID
		}
		if err := r.ApiKeys().RevokeAll(ctx, ids, now); err != nil {
			return err
		}
		descendants = append(descendants, found...)
	}
	if err := announceWith(ctx, r, k, descendants, ChangeKeyRevoked); err != nil {
		return err
	}
	changes := []change{keyChange(k, "api_key.revoked", "u", "API key revoked")}
	if len(descendants) > 0 {
		changes[0].Fields = map[string]string{"descendants_revoked": strconv.Itoa(len(descendants))}
	}
	if len(descendants) <= maxRevocationChanges {
		for _, d := range descendants {
			c := keyChange(d, "api_key.revoked", "u", "API key revoked with the key that created it, or one of its creators")
			c.Fields = map[string]string{"created_by_key": d.CreatedBy, "revoked_with": k.ID}
			changes = append(changes, c)
		}
		return recordChanges(ctx, r, now, changes)
	}
	// So many that an event each would make the revocation as costly as
	// the keys were cheap to make: one event per tenant, with the count.
	count := map[string]int{}
	for _, d := range descendants {
		count[d.TenantID]++
	}
	for _, tenant := range slices.Sorted(maps.Keys(count)) {
		c := keyChange(k, "api_key.revoked", "u", "API keys revoked with the key that created them, or one of their creators")
		c.TenantID = tenant
		c.Fields = map[string]string{"keys_revoked": strconv.Itoa(count[tenant]), "revoked_with": k.ID}
		changes = append(changes, c)
	}
	return recordChanges(ctx, r, now, changes)
}

// announceWith announces the change of kind to key k and to the keys
// changed with it: each by name up to maxRevocationChanges of them, and
// beyond, a reset, so that the announcement costs no more than the
// change.
func announceWith(ctx context.Context, r Repositories, k *ApiKey, with []*ApiKey, kind ChangeKind) error {
	stale := []Change{staleKey(k, kind)}
	if len(with) > maxRevocationChanges {
		stale = []Change{{Kind: ChangeReset}}
	} else {
		for _, d := range with {
			stale = append(stale, staleKey(d, kind))
		}
	}
	for _, c := range stale {
		if err := r.Invalidations().Announce(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// staleKey is the change of kind to key k. A key of the previous format
// is cached under the digest of a plaintext never seen here, once a
// verification rehashes it: without its digest the change drops the
// tenant's keys from the registry's cache.
func staleKey(k *ApiKey, kind ChangeKind) Change {
	digest, _ := strings.CutPrefix(k.Hash, hashFormatSHA256)
	if digest == k.Hash {
		digest = ""
	}
	return Change{Kind: kind, TenantID: k.TenantID, KeyID: k.ID, KeyHash: digest}
}

func keyChange(k *ApiKey, action, crud, description string) change {
	return change{
		TenantID: k.TenantID, Action: action, CRUD: crud, Description: description,
		Target: AuditTarget{ID: k.ID, Type: "api_key", Name: k.Name},
	}
}
