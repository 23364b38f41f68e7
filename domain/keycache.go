package domain

import (
	"sync"
	"sync/atomic"
	"time"
)

// KeyRecord is everything a verification needs, as read together from
// storage: the key, its tenant and the tenant's entitlements. Expiry is
// evaluated at each verification, so a cached record never outlives it.
type KeyRecord struct {
	Key          *ApiKey
	Tenant       *Tenant
	Entitlements []*Entitlement

	valid atomic.Pointer[Verification] // the last VALID answer (see validAnswer)
}

type cachedRecord struct {
	rec     *KeyRecord
	expires time.Time
}

// TenantRecord is everything an entitlement check needs, as read together
// from storage: a tenant and its entitlements.
type TenantRecord struct {
	Tenant       *Tenant
	Entitlements []*Entitlement

	checks sync.Map // *Entitlement (one of Entitlements) → its last *Check (see check)
}

// entitlement returns the tenant's entitlement for product, or nil.
func (r *TenantRecord) entitlement(product string) *Entitlement {
	for _, e := range r.Entitlements {
		if e.Product == product {
			return e
		}
	}
	return nil
}

type cachedTenant struct {
	rec     *TenantRecord
	expires time.Time
}

// KeyCache keeps verified keys (and, briefly, unknown key hashes) and
// checked tenants in memory so repeated verifications and entitlement
// checks do not touch the database. It is subscribed to
// a change feed from birth: every committed change it hears drops the
// entries it concerns, and it answers only while its feed is current
// (every verification reads the database otherwise). There is no way to
// build one that misses invalidations and still answers.
type KeyCache struct {
	feed     *ChangeFeed
	mu       sync.RWMutex
	keys     map[string]cachedRecord // by key digest
	byTenant map[string]map[string]struct{}
	unknown  map[string]time.Time // digest → until when it is known unknown
	tenants  map[string]cachedTenant
	// products are the catalog's keys known to exist; products are never
	// deleted, so knowing one exists does not go stale.
	products map[string]struct{}
	// gen counts invalidations: a record read from the database before an
	// invalidation must not be cached after it.
	gen     uint64
	enabled bool

	ttl, unknownTTL     time.Duration
	maxKeys, maxUnknown int

	hits, misses atomic.Uint64
}

// KeyCacheConfig sizes a KeyCache.
type KeyCacheConfig struct {
	Disabled   bool          // every verification reads the database
	TTL        time.Duration // how long a verified key is kept at most
	UnknownTTL time.Duration // how long an unknown hash is remembered
	MaxKeys    int
	MaxUnknown int
}

// DefaultKeyCacheConfig suits a replica serving many products.
var DefaultKeyCacheConfig = KeyCacheConfig{TTL: time.Minute, UnknownTTL: 5 * time.Second, MaxKeys: 100_000, MaxUnknown: 10_000}

// NewKeyCache returns an empty cache kept coherent by feed, which it
// subscribes to for the rest of the process's life.
func NewKeyCache(feed *ChangeFeed, cfg KeyCacheConfig) *KeyCache {
	if feed == nil {
		panic("domain: a KeyCache needs the change feed that keeps it coherent")
	}
	c := &KeyCache{
		feed: feed,
		keys: map[string]cachedRecord{}, byTenant: map[string]map[string]struct{}{}, unknown: map[string]time.Time{},
		tenants: map[string]cachedTenant{}, products: map[string]struct{}{},
		enabled: !cfg.Disabled, ttl: cfg.TTL, unknownTTL: cfg.UnknownTTL, maxKeys: max(1, cfg.MaxKeys), maxUnknown: max(1, cfg.MaxUnknown),
	}
	feed.Subscribe(c.apply)
	return c
}

// Trusted reports whether the cache answers: it is enabled and its feed
// is current.
func (c *KeyCache) Trusted() bool { return c.enabled && c.feed.Current() }

// HitRatio returns hits / (hits + misses) so far, and the lookup count.
func (c *KeyCache) HitRatio() (float64, uint64) {
	h, m := c.hits.Load(), c.misses.Load()
	if h+m == 0 {
		return 0, 0
	}
	return float64(h) / float64(h+m), h + m
}

// lookup returns the cached record for digest, or unknown=true when the
// digest is known not to exist. gen is to be passed to a later put.
func (c *KeyCache) lookup(digest string, now time.Time) (rec *KeyRecord, unknown bool, gen uint64) {
	trusted := c.Trusted() // before the lock: it reads the clock
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !trusted {
		return nil, false, c.gen
	}
	if e, ok := c.keys[digest]; ok && now.Before(e.expires) {
		c.hits.Add(1)
		return e.rec, false, c.gen
	}
	if until, ok := c.unknown[digest]; ok && now.Before(until) {
		c.hits.Add(1)
		return nil, true, c.gen
	}
	c.misses.Add(1)
	return nil, false, c.gen
}

// storeIfCurrent runs store under the write lock, unless the cache is
// disabled or an invalidation happened since gen: what was read before a
// change must not be cached after it.
func (c *KeyCache) storeIfCurrent(gen uint64, store func()) {
	if !c.enabled {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen == c.gen {
		store()
	}
}

// put caches rec under digest unless an invalidation happened since gen.
func (c *KeyCache) put(digest string, rec *KeyRecord, gen uint64, now time.Time) {
	sealAll(rec.Entitlements)
	c.storeIfCurrent(gen, func() {
		if len(c.keys) >= c.maxKeys {
			c.evictLocked()
		}
		c.keys[digest] = cachedRecord{rec: rec, expires: now.Add(c.ttl)}
		tenant := rec.Key.TenantID
		if c.byTenant[tenant] == nil {
			c.byTenant[tenant] = map[string]struct{}{}
		}
		c.byTenant[tenant][digest] = struct{}{}
	})
}

// sealAll seals the entitlements of a record about to be cached: from
// here on they are shared by every answer from the cache, and never
// change.
func sealAll(ents []*Entitlement) {
	for _, e := range ents {
		e.seal()
	}
}

// putUnknown remembers briefly that digest matches no key.
func (c *KeyCache) putUnknown(digest string, gen uint64, now time.Time) {
	c.storeIfCurrent(gen, func() {
		if len(c.unknown) >= c.maxUnknown {
			for d := range c.unknown { // drop one, in map order: any will do
				delete(c.unknown, d)
				break
			}
		}
		c.unknown[digest] = now.Add(c.unknownTTL)
	})
}

// lookupTenant returns the cached record of tenant id, or nil. gen is to
// be passed to a later putTenant.
func (c *KeyCache) lookupTenant(id string, now time.Time) (rec *TenantRecord, gen uint64) {
	trusted := c.Trusted()
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !trusted {
		return nil, c.gen
	}
	if e, ok := c.tenants[id]; ok && now.Before(e.expires) {
		c.hits.Add(1)
		return e.rec, c.gen
	}
	c.misses.Add(1)
	return nil, c.gen
}

// putTenant caches rec unless an invalidation happened since gen.
func (c *KeyCache) putTenant(rec *TenantRecord, gen uint64, now time.Time) {
	sealAll(rec.Entitlements)
	c.storeIfCurrent(gen, func() {
		if len(c.tenants) >= c.maxKeys {
			n := max(1, c.maxKeys/10)
			for id := range c.tenants { // about a tenth, in map order: any will do
				delete(c.tenants, id)
				if n--; n == 0 {
					break
				}
			}
		}
		c.tenants[rec.Tenant.ID] = cachedTenant{rec: rec, expires: now.Add(c.ttl)}
	})
}

// productExists reports whether product is known to exist.
func (c *KeyCache) productExists(product string) bool {
	if !c.Trusted() {
		return false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.products[product]
	return ok
}

// putProduct remembers that product exists; the catalog is small.
func (c *KeyCache) putProduct(product string) {
	if !c.enabled {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.products) < c.maxUnknown {
		c.products[product] = struct{}{}
	}
}

// evictLocked drops about a tenth of the keys; map order makes it random.
func (c *KeyCache) evictLocked() {
	n := max(1, c.maxKeys/10)
	for d, e := range c.keys {
		c.dropLocked(d, e.rec.Key.TenantID)
		if n--; n == 0 {
			return
		}
	}
}

func (c *KeyCache) dropLocked(digest, tenant string) {
	delete(c.keys, digest)
	if set := c.byTenant[tenant]; set != nil {
		delete(set, digest)
		if len(set) == 0 {
			delete(c.byTenant, tenant)
		}
	}
}

// apply drops what a change concerns: one key (and its hash from the
// unknown ones), a tenant's keys and record, the unknown hashes for an
// imported key, or for a reset everything.
func (c *KeyCache) apply(ch Change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	switch {
	case ch.Kind != ChangeReset && ch.KeyHash != "":
		delete(c.unknown, ch.KeyHash)
		if e, ok := c.keys[ch.KeyHash]; ok {
			c.dropLocked(ch.KeyHash, e.rec.Key.TenantID)
		}
	case ch.Kind == ChangeKeyCreated:
		// An imported key, stored under a hash of the previous format: the
		// digest of its plaintext is not known, and may be remembered as
		// unknown.
		c.unknown = map[string]time.Time{}
	case ch.Kind != ChangeReset && ch.TenantID != "":
		for d := range c.byTenant[ch.TenantID] {
			delete(c.keys, d)
		}
		delete(c.byTenant, ch.TenantID)
		delete(c.tenants, ch.TenantID)
	default: // a reset, or a change naming nothing this cache can find
		c.keys, c.byTenant, c.unknown = map[string]cachedRecord{}, map[string]map[string]struct{}{}, map[string]time.Time{}
		c.tenants, c.products = map[string]cachedTenant{}, map[string]struct{}{}
	}
}
