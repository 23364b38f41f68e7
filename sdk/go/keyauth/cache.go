package keyauth

import (
	"crypto/sha256"
	"sync"
	"time"
)

// digest is what the cache keys an answer by: the SHA-256 of the key, so
// no plaintext key stays in memory.
type digest [sha256.Size]byte

// answer is what the registry said about one key: an identity, or a
// refusal.
type answer struct {
	identity *Identity
	denied   *Denied
}

type entry struct {
	answer
	expires          time.Time
	keyID, tenantID  string // set for a good key
	notFound, undoes bool   // refusals a creation, or a grant or an activation, can undo
}

// cache holds answers, indexed by what a change can name. An answer asked
// for before a change that concerns it must not be cached after it: gen
// counts the changes applied, and recent remembers the last of them, so
// that a change elsewhere does not keep an answer out.
type cache struct {
	mu       sync.RWMutex
	entries  map[digest]*entry
	byKey    map[string]digest
	byTenant map[string]map[digest]struct{}
	refused  map[digest]struct{} // the refusals that can be undone
	gen      uint64
	recent   [64]forgotten // the change numbered g is recent[g%64]
	max      int
}

// forgotten is what one change made the cache forget.
type forgotten struct {
	keyID, tenantID       string
	notFound, undone, all bool
}

// concerns reports whether the change would have dropped e.
func (f forgotten) concerns(e *entry) bool {
	return f.all || e.keyID != "" && (e.keyID == f.keyID || e.tenantID == f.tenantID) ||
		f.notFound && e.notFound || f.undone && e.undoes
}

func newCache(max int) *cache {
	c := &cache{max: max}
	c.clearLocked()
	return c
}

func (c *cache) clearLocked() {
	c.entries, c.byKey = map[digest]*entry{}, map[string]digest{}
	c.byTenant, c.refused = map[string]map[digest]struct{}{}, map[digest]struct{}{}
}

// get returns the answer for d, if one is cached and not expired, and the
// generation to pass to a later put.
func (c *cache) get(d digest, now time.Time) (answer, bool, uint64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if e, ok := c.entries[d]; ok && now.Before(e.expires) {
		return e.answer, true, c.gen
	}
	return answer{}, false, c.gen
}

// put caches e under d unless a change concerning it was applied since
// gen (or too many changes to tell).
func (c *cache) put(d digest, e *entry, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen-gen > uint64(len(c.recent)) {
		return
	}
	for g := gen; g < c.gen; g++ {
		if c.recent[g%uint64(len(c.recent))].concerns(e) {
			return
		}
	}
	c.dropLocked(d)
	if len(c.entries) >= c.max {
		c.evictLocked()
	}
	c.entries[d] = e
	if e.keyID != "" {
		c.byKey[e.keyID] = d
		if c.byTenant[e.tenantID] == nil {
			c.byTenant[e.tenantID] = map[digest]struct{}{}
		}
		c.byTenant[e.tenantID][d] = struct{}{}
	}
	if e.notFound || e.undoes {
		c.refused[d] = struct{}{}
	}
}

// evictLocked drops about a tenth of the entries; map order makes it
// random, and a dropped answer only costs one more call.
func (c *cache) evictLocked() {
	n := max(1, c.max/10)
	for d := range c.entries {
		c.dropLocked(d)
		if n--; n == 0 {
			return
		}
	}
}

func (c *cache) dropLocked(d digest) {
	e, ok := c.entries[d]
	if !ok {
		return
	}
	delete(c.entries, d)
	delete(c.refused, d)
	if e.keyID != "" {
		delete(c.byKey, e.keyID)
		if set := c.byTenant[e.tenantID]; set != nil {
			delete(set, d)
			if len(set) == 0 {
				delete(c.byTenant, e.tenantID)
			}
		}
	}
}

// forget drops what a change names: a key's answer, a tenant's keys'
// answers, and the refusals it may undo (NOT_FOUND for a new key; a frozen
// tenant's or a missing entitlement's for a grant or an activation).
func (c *cache) forget(keyID, tenantID string, notFound, undone bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.note(forgotten{keyID: keyID, tenantID: tenantID, notFound: notFound, undone: undone})
	if d, ok := c.byKey[keyID]; ok && keyID != "" {
		c.dropLocked(d)
	}
	for d := range c.byTenant[tenantID] {
		c.dropLocked(d)
	}
	if notFound || undone {
		for d := range c.refused {
			if e := c.entries[d]; e.notFound && notFound || e.undoes && undone {
				c.dropLocked(d)
			}
		}
	}
}

// reset drops everything.
func (c *cache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.note(forgotten{all: true})
	c.clearLocked()
}

// note numbers a change and remembers what it dropped.
func (c *cache) note(f forgotten) {
	c.recent[c.gen%uint64(len(c.recent))] = f
	c.gen++
}

func (c *cache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
