package domain

import (
	"context"
	"crypto/subtle"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/argon2"
)

// VerifyCode is the outcome of a key verification.
type VerifyCode string

// Verification outcomes, checked in this order.
const (
	VerifyValid             VerifyCode = "VALID"
	VerifyMalformed         VerifyCode = "MALFORMED"
	VerifyNotFound          VerifyCode = "NOT_FOUND"
	VerifyRevoked           VerifyCode = "REVOKED"
	VerifyExpired           VerifyCode = "EXPIRED"
	VerifyTenantFrozen      VerifyCode = "TENANT_FROZEN"
	VerifyInsufficientScope VerifyCode = "INSUFFICIENT_SCOPE"
	VerifyNotEntitled       VerifyCode = "NOT_ENTITLED"
	VerifyDisabled          VerifyCode = "DISABLED"
)

// Verification is the answer to "is this key good": a code, and when it
// is VALID, whose key it is and what its tenant may use.
type Verification struct {
	Code       VerifyCode
	KeyID      string
	TenantID   string
	TenantSlug string
	Scopes     []string
	Products   []string  // the tenant's entitled products now
	ExpireTime time.Time // when the key stops verifying; zero: never
	// Entitlements are the tenant's counting now, as read at the
	// verification, with their limits; Metadata is the key's.
	Entitlements []*Entitlement
	Metadata     map[string]string
	// Until is when a VALID answer changes by the passing of time alone,
	// with no change announced: the key's expiry, or the end of one of the
	// entitlements in Products, whichever is first. Zero: never.
	Until time.Time

	at       time.Time           // when a VALID answer was made
	rendered atomic.Pointer[any] // see Rendered
}

// Rendered returns what render makes of v, rendering it at the first call
// only: a VALID answer is reused for every verification of its key until
// it changes (see KeyRecord), and so is its rendering. render must depend
// on v alone.
func (v *Verification) Rendered(render func(*Verification) any) any {
	return renderOnce(&v.rendered, v, render)
}

// stillGood reports whether an answer made at made, and changed by time
// alone at until (zero: never), is still the answer at now: neither has
// until passed nor does the clock read earlier than made.
func stillGood(made, until, now time.Time) bool {
	return !now.Before(made) && (until.IsZero() || now.Before(until))
}

// renderOnce returns what render made of answer the first time, kept in
// kept: answers reused for many calls are rendered once.
func renderOnce[T any](kept *atomic.Pointer[any], answer T, render func(T) any) any {
	if r := kept.Load(); r != nil {
		return *r
	}
	r := render(answer)
	kept.CompareAndSwap(nil, &r)
	return r
}

// answers are the verifications that say no more than their code, made
// once: a stranger's flood of bad keys allocates no answer.
var answers = func() map[VerifyCode]*Verification {
	m := map[VerifyCode]*Verification{}
	for _, c := range []VerifyCode{VerifyMalformed, VerifyNotFound, VerifyRevoked, VerifyExpired,
		VerifyTenantFrozen, VerifyInsufficientScope, VerifyNotEntitled, VerifyDisabled} {
		m[c] = &Verification{Code: c}
	}
	return m
}()

// Valid reports whether the key was accepted.
func (v *Verification) Valid() bool { return v.Code == VerifyValid }

// Argon2 parameters of the previous implementation's key hashes.
const (
	argon2Time    = 1
	argon2Memory  = 64 * 1024 // KiB
	argon2Threads = 4
	argon2KeyLen  = 32
)

// KeyVerifier verifies presented API keys: the hot path every product
// calls on every request. Repeated verifications are answered from a
// KeyCache; last use is recorded at most once a minute per key, off the
// request path.
type KeyVerifier struct {
	store Store
	now   Clock
	cache *KeyCache
	// legacy bounds the argon2 path of keys of the previous format: per
	// display prefix, and to one hash per core (64 MiB each).
	legacy *legacyGuard
	usage  usageRecorder
}

// NewKeyVerifier returns a verifier reading store through cache, and now
// as store keeps times.
func NewKeyVerifier(store Store, now Clock, cache *KeyCache) *KeyVerifier {
	return &KeyVerifier{
		store: store, now: storedClock(store, now), cache: cache,
		legacy: newLegacyGuard(),
		usage:  usageRecorder{pending: map[string]time.Time{}, written: map[string]time.Time{}},
	}
}

// Cache returns the verifier's key cache.
func (v *KeyVerifier) Cache() *KeyCache { return v.cache }

// Verify checks key, and when product is not empty that the key's tenant
// is entitled to it, and that the key has every required scope. Problems
// with the key are answered by the code; an error means the check could
// not be made (the database is unavailable).
func (v *KeyVerifier) Verify(ctx context.Context, key, product string, requiredScopes []string) (*Verification, error) {
	return v.verify(ctx, key, product, requiredScopes, true)
}

// Authenticate verifies a service key presented to the registry itself.
// It never takes the legacy argon2 path: the registry's own callers hold
// keys of the current format, and a stranger must not be able to make
// the server hash at its request. Keys of the previous format are
// MALFORMED here.
func (v *KeyVerifier) Authenticate(ctx context.Context, key string) (*Verification, error) {
	return v.verify(ctx, key, "", nil, false)
}

func (v *KeyVerifier) verify(ctx context.Context, key, product string, requiredScopes []string, legacy bool) (*Verification, error) {
	now := v.now()
	var rec *KeyRecord
	var err error
	switch shape := parseKey(key); {
	case shape == keyCurrent:
		rec, err = v.lookup(ctx, keyDigest(key), "", now)
	case shape == keyLegacy && legacy:
		rec, err = v.lookup(ctx, keyDigest(key), key, now)
	default:
		return answers[VerifyMalformed], nil
	}
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return answers[VerifyNotFound], nil
	}
	code := evaluate(rec, product, requiredScopes, now)
	if code != VerifyValid {
		return answers[code], nil
	}
	v.usage.touch(rec.Key.ID, now)
	return rec.validAnswer(now), nil
}

// validAnswer is rec's VALID answer at now. It depends on rec and on time
// alone (not on the product or scopes asked for), and on time only at its
// Until, so one answer serves every verification of rec from when it was
// made until its Until; a change to the key, its tenant or its
// entitlements replaces rec in the cache, and the answer with it.
func (rec *KeyRecord) validAnswer(now time.Time) *Verification {
	if a := rec.valid.Load(); a != nil && stillGood(a.at, a.Until, now) {
		return a
	}
	a := &Verification{
		Code: VerifyValid, KeyID: rec.Key.ID, TenantID: rec.Tenant.ID, TenantSlug: rec.Tenant.Slug,
		Scopes: rec.Key.Scopes, Products: EntitledProducts(rec.Tenant, rec.Entitlements, now), ExpireTime: rec.Key.ExpireTime,
		Until: validUntil(rec, now), Entitlements: counting(rec.Tenant, rec.Entitlements, now), Metadata: rec.Key.Metadata,
		at: now,
	}
	rec.valid.Store(a)
	return a
}

// validUntil is the first moment after now at which a valid answer for rec
// changes with time alone: the key expires, or an entitlement it counts
// ends.
func validUntil(rec *KeyRecord, now time.Time) time.Time {
	until := rec.Key.ExpireTime
	for _, e := range rec.Entitlements {
		if end := e.ExpireTime; Entitled(rec.Tenant, e, now) && !end.IsZero() && (until.IsZero() || end.Before(until)) {
			until = end
		}
	}
	return until
}

// counting are the entitlements that pass Entitled now, by product, as
// read now.
func counting(t *Tenant, ents []*Entitlement, now time.Time) []*Entitlement {
	var out []*Entitlement
	for _, e := range ents {
		if Entitled(t, e, now) {
			out = append(out, e.ReadAt(now))
		}
	}
	slices.SortFunc(out, func(a, b *Entitlement) int { return strings.Compare(a.Product, b.Product) })
	return out
}

func evaluate(rec *KeyRecord, product string, requiredScopes []string, now time.Time) VerifyCode {
	switch rec.Key.StatusAt(now) {
	case ApiKeyRevoked:
		return VerifyRevoked
	case ApiKeyExpired:
		return VerifyExpired
	case ApiKeyDisabled:
		return VerifyDisabled
	}
	if rec.Tenant.Status == TenantFrozen {
		return VerifyTenantFrozen
	}
	for _, s := range requiredScopes {
		if _, ok := slices.BinarySearch(rec.Key.Scopes, s); !ok {
			return VerifyInsufficientScope
		}
	}
	if product != "" {
		if _, ok := slices.BinarySearch(EntitledProducts(rec.Tenant, rec.Entitlements, now), product); !ok {
			return VerifyNotEntitled
		}
	}
	return VerifyValid
}

// lookup finds a key by digest: from the cache, else from the database,
// caching what it found (or, briefly, that nothing was found). A legacy
// key not yet rehashed is found by its display prefix and argon2id hash.
func (v *KeyVerifier) lookup(ctx context.Context, digest, legacyKey string, now time.Time) (*KeyRecord, error) {
	rec, unknown, gen := v.cache.lookup(digest, now)
	if rec != nil || unknown {
		return rec, nil
	}
	rec, err := v.store.ApiKeys().GetForVerification(ctx, storedHash(digest))
	if ErrorKind(err) == KindNotFound && legacyKey != "" {
		rec, err = v.findLegacy(ctx, legacyKey, digest)
	}
	if ErrorKind(err) == KindNotFound {
		v.cache.putUnknown(digest, gen, now)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	v.cache.put(digest, rec, gen, now)
	return rec, nil
}

// findLegacy verifies a key of the previous implementation against the
// argon2id hashes stored under its display prefix, and on a match stores it
// under the fast hash, so this slow path runs at most once per key. A
// prefix whose budget of failures is spent answers NOT_FOUND without
// hashing (see LegacyFailuresPerPrefix); a verification that would have to
// queue for argon2 is shed with Unavailable.
func (v *KeyVerifier) findLegacy(ctx context.Context, key, digest string) (*KeyRecord, error) {
	prefix := displayPrefix(key)
	candidates, err := v.store.ApiKeys().ListLegacyByPrefix(ctx, prefix)
	if err != nil {
		return nil, err
	}
	if len(candidates) == 0 {
		return nil, Errorf(KindNotFound, "no such key")
	}
	// Budgets are kept for prefixes of imported keys only, so that
	// guesses at prefixes nobody holds cannot crowd them out.
	if !v.legacy.begin(prefix, v.now()) {
		return nil, Errorf(KindNotFound, "no such key")
	}
	// An attempt that hashed and matched nothing counts against the
	// budget, even when a later candidate could not be hashed (shed):
	// else a guesser could buy a hash per guess by being shed.
	failed := false
	defer func() { v.legacy.end(prefix, failed) }()
	for _, k := range candidates {
		ok, err := v.argon2Matches(ctx, key, k.Hash)
		if err != nil {
			return nil, err
		}
		if !ok {
			failed = true
			continue
		}
		failed = false
		err = v.store.Atomically(ctx, func(r Repositories) error {
			return r.ApiKeys().Rehash(ctx, k.ID, k.Hash, storedHash(digest))
		})
		if err != nil {
			return nil, err
		}
		return v.store.ApiKeys().GetForVerification(ctx, storedHash(digest))
	}
	failed = true // also when no stored hash could be read: nothing here verifies
	return nil, Errorf(KindNotFound, "no such key")
}

func (v *KeyVerifier) argon2Matches(ctx context.Context, key, stored string) (bool, error) {
	h, err := parseArgon2Hash(stored)
	if err != nil {
		return false, nil // a stored hash we cannot read matches nothing
	}
	release, err := v.legacy.acquire(ctx)
	if err != nil {
		return false, err
	}
	defer release()
	v.legacy.hashes.Add(1)
	got := argon2.IDKey([]byte(key), h.salt, argon2Time, argon2Memory, argon2Threads, argon2KeyLen)
	return subtle.ConstantTimeCompare(got, h.key) == 1, nil
}

// LegacyStats reports what the slow path of keys of the previous format
// has done since start: hashes computed, verifications refused by their
// prefix's budget, and verifications shed because argon2 was busy.
func (v *KeyVerifier) LegacyStats() LegacyStats { return v.legacy.stats() }

// usageRecorder coalesces last-use times: at most one write per key per
// minute, batched by Flush.
type usageRecorder struct {
	mu      sync.Mutex
	pending map[string]time.Time // key id → last use not yet written
	written map[string]time.Time // key id → last use written
}

const usageResolution = time.Minute

func (u *usageRecorder) touch(id string, now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if last, ok := u.written[id]; ok && now.Sub(last) < usageResolution {
		return
	}
	u.pending[id], u.written[id] = now, now
}

// Flush writes the pending last-use times.
func (v *KeyVerifier) Flush(ctx context.Context) error {
	v.usage.mu.Lock()
	pending := v.usage.pending
	v.usage.pending = map[string]time.Time{}
	now := v.now()
	for id, t := range v.usage.written { // forget what can no longer suppress a write
		if now.Sub(t) >= usageResolution {
			delete(v.usage.written, id)
		}
	}
	v.usage.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	return v.store.Atomically(ctx, func(r Repositories) error { return r.ApiKeys().TouchLastUsed(ctx, pending) })
}

// Run flushes last-use times every interval until ctx ends, then once more.
func (v *KeyVerifier) Run(ctx context.Context, interval time.Duration, onError func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := v.Flush(context.WithoutCancel(ctx)); err != nil {
				onError(err)
			}
			return
		case <-t.C:
			if err := v.Flush(ctx); err != nil {
				onError(err)
			}
		}
	}
}
