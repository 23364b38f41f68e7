package domain

import (
	"fmt"
	"strconv"
	"testing"
	"time"
)

func testRecord(keyID, tenantID string) *KeyRecord {
	return &KeyRecord{Key: &ApiKey{ID: keyID, TenantID: tenantID}, Tenant: &Tenant{ID: tenantID}}
}

// TestKeyCacheAnswersOnlyWhileItsFeedIsCurrent: a cache on a replica's
// feed answers only while that feed is vouched for.
func TestKeyCacheAnswersOnlyWhileItsFeedIsCurrent(t *testing.T) {
	feed := NewChangeFeed(time.Hour)
	c := NewKeyCache(feed, DefaultKeyCacheConfig)
	now := time.Now()
	_, _, gen := c.lookup("d1", now)
	c.put("d1", testRecord("k1", "t1"), gen, now)
	if rec, _, _ := c.lookup("d1", now); rec != nil || c.Trusted() {
		t.Fatal("answered before its feed was current")
	}
	feed.CurrentAsOf(time.Now())
	if rec, _, _ := c.lookup("d1", now); rec == nil {
		t.Fatal("no answer with a current feed")
	}
	feed.Lost()
	if rec, _, _ := c.lookup("d1", now); rec != nil {
		t.Fatal("answered after its feed was lost")
	}
	if disabled := NewKeyCache(NewLocalChangeFeed(), KeyCacheConfig{Disabled: true}); disabled.Trusted() {
		t.Error("a disabled cache is trusted")
	}
}

// TestKeyCacheGenerationGuard: a record read from the database before a
// change was delivered is not cached after it, or the change is lost.
func TestKeyCacheGenerationGuard(t *testing.T) {
	feed := NewLocalChangeFeed()
	c := NewKeyCache(feed, DefaultKeyCacheConfig)
	now := time.Now()
	_, _, gen := c.lookup("d1", now) // a miss: the verifier goes to the database
	feed.Committed(Change{Kind: ChangeKeyRevoked, TenantID: "t1", KeyID: "k1", KeyHash: "d1"})
	c.put("d1", testRecord("k1", "t1"), gen, now) // what it read is older than the revocation
	if rec, _, _ := c.lookup("d1", now); rec != nil {
		t.Fatal("a record read before a change was cached after it")
	}
	_, _, gen = c.lookup("d2", now)
	feed.Committed(Change{Kind: ChangeTenantFrozen, TenantID: "t9"})
	c.putUnknown("d2", gen, now)
	if _, unknown, _ := c.lookup("d2", now); unknown {
		t.Fatal("an unknown hash read before a change was remembered after it")
	}
	_, _, gen = c.lookup("d1", now)
	c.put("d1", testRecord("k1", "t1"), gen, now)
	if rec, _, _ := c.lookup("d1", now); rec == nil {
		t.Fatal("with no change in between, the record was not cached")
	}
	_, gen = c.lookupTenant("t1", now)
	feed.Committed(Change{Kind: ChangeEntitlementRevoked, TenantID: "t1", Product: "p"})
	c.putTenant(&TenantRecord{Tenant: &Tenant{ID: "t1"}}, gen, now)
	if rec, _ := c.lookupTenant("t1", now); rec != nil {
		t.Fatal("a tenant record read before a change was cached after it")
	}
}

// TestKeyCacheDropsWhatChangesName: a key change drops that key, a tenant
// or entitlement change the tenant's keys and record, a product change or
// a reset everything.
func TestKeyCacheDropsWhatChangesName(t *testing.T) {
	feed := NewLocalChangeFeed()
	c := NewKeyCache(feed, DefaultKeyCacheConfig)
	now := time.Now()
	fill := func() {
		for i, d := range []string{"a1", "a2", "b1"} {
			_, _, gen := c.lookup(d, now)
			c.put(d, testRecord("k"+strconv.Itoa(i), d[:1]), gen, now)
		}
		_, _, gen := c.lookup("u1", now)
		c.putUnknown("u1", gen, now)
		for _, id := range []string{"a", "b"} {
			_, gen := c.lookupTenant(id, now)
			c.putTenant(&TenantRecord{Tenant: &Tenant{ID: id}}, gen, now)
		}
	}
	cached := func() (out []string) {
		for _, d := range []string{"a1", "a2", "b1", "u1"} {
			if rec, unknown, _ := c.lookup(d, now); rec != nil || unknown {
				out = append(out, d)
			}
		}
		for _, id := range []string{"a", "b"} {
			if rec, _ := c.lookupTenant(id, now); rec != nil {
				out = append(out, "tenant "+id)
			}
		}
		return out
	}
	for _, tc := range []struct {
		change Change
		left   string
	}{
		{Change{Kind: ChangeKeyRevoked, TenantID: "a", KeyID: "k0", KeyHash: "a1"}, "[a2 b1 u1 tenant a tenant b]"},
		{Change{Kind: ChangeKeyCreated, TenantID: "c", KeyHash: "u1"}, "[a1 a2 b1 tenant a tenant b]"},
		{Change{Kind: ChangeKeyCreated, TenantID: "c", KeyID: "imported"}, "[a1 a2 b1 tenant a tenant b]"},
		{Change{Kind: ChangeTenantFrozen, TenantID: "a"}, "[b1 u1 tenant b]"},
		{Change{Kind: ChangeEntitlementGranted, TenantID: "b", Product: "p"}, "[a1 a2 u1 tenant a]"},
		{Change{Kind: ChangeKeyRevoked, TenantID: "a", KeyID: "k0"}, "[b1 u1 tenant b]"}, // a key of the previous format: its tenant
		{Change{Kind: ChangeUnknown, KeyHash: "b1"}, "[a1 a2 u1 tenant a tenant b]"},
		{Change{Kind: ChangeProductChanged, Product: "p"}, "[]"},
		{Change{Kind: ChangeReset}, "[]"},
	} {
		fill()
		feed.Committed(tc.change)
		if got := fmt.Sprint(cached()); got != tc.left {
			t.Errorf("after %+v: %s cached, want %s", tc.change, got, tc.left)
		}
	}
}

// TestKeyCacheBounds: neither the keys, the unknown hashes, the tenants
// nor the products outgrow their bounds, whatever is put.
func TestKeyCacheBounds(t *testing.T) {
	c := NewKeyCache(NewLocalChangeFeed(), KeyCacheConfig{TTL: time.Minute, UnknownTTL: time.Minute, MaxKeys: 100, MaxUnknown: 50})
	now := time.Now()
	for i := range 1000 {
		d := strconv.Itoa(i)
		_, _, gen := c.lookup(d, now)
		c.put(d, testRecord(d, "t"+strconv.Itoa(i%7)), gen, now)
		c.putUnknown("u"+d, gen, now)
		_, gen = c.lookupTenant(d, now)
		c.putTenant(&TenantRecord{Tenant: &Tenant{ID: d}}, gen, now)
		c.putProduct(d)
	}
	if len(c.keys) > 100 || len(c.unknown) > 50 || len(c.tenants) > 100 || len(c.products) > 50 {
		t.Errorf("%d keys, %d unknown hashes, %d tenants and %d products cached, want at most 100, 50, 100 and 50",
			len(c.keys), len(c.unknown), len(c.tenants), len(c.products))
	}
	n := 0
	for _, set := range c.byTenant {
		n += len(set)
	}
	if n != len(c.keys) {
		t.Errorf("the tenant index holds %d keys, the cache %d", n, len(c.keys))
	}
}
