package domain

import (
	"slices"
	"testing"
	"time"
)

// TestLocalFeedIsAlwaysCurrent: one process committing every change
// itself has nothing to wait for.
func TestLocalFeedIsAlwaysCurrent(t *testing.T) {
	f := NewLocalChangeFeed()
	if !f.Current() {
		t.Fatal("a local feed is not current")
	}
	if s, ok := f.Mark().Staleness(); !ok || s != 0 {
		t.Errorf("staleness of a local feed = %v, %v; want 0, true", s, ok)
	}
}

// TestFeedGoesStaleByItself: a replica's feed stops being current
// maxSilence after the moment its source last vouched for, with no call
// made and no goroutine running: a hung listener cannot keep it trusted.
func TestFeedGoesStaleByItself(t *testing.T) {
	f := NewChangeFeed(100 * time.Millisecond)
	if f.Current() {
		t.Fatal("a replica's feed is current before its source vouched for anything")
	}
	if _, ok := f.Mark().Staleness(); ok {
		t.Error("a feed nobody vouched for reports a staleness")
	}
	f.CurrentAsOf(time.Now())
	if !f.Current() {
		t.Fatal("not current right after its source vouched")
	}
	f.CurrentAsOf(time.Now().Add(-time.Hour)) // a late, older heartbeat moves nothing back
	if !f.Current() {
		t.Fatal("an older heartbeat made the feed stale")
	}
	deadline := time.Now().Add(2 * time.Second)
	for f.Current() {
		if time.Now().After(deadline) {
			t.Fatal("still current 2 s after its source last vouched, with a silence bound of 100 ms")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s, ok := f.Mark().Staleness(); !ok || s < 100*time.Millisecond {
		t.Errorf("staleness = %v, %v; want at least 100 ms", s, ok)
	}
	f.CurrentAsOf(time.Now())
	f.Lost()
	if f.Current() {
		t.Error("current after its source was lost")
	}
}

// TestFeedDelivery: the cache hears this process's commits at once and
// other replicas' when heard; ordered subscribers hear every change once,
// on a replica from the database only; resets reach both.
func TestFeedDelivery(t *testing.T) {
	type recorder struct{ cache, ordered []ChangeKind }
	subscribe := func(f *ChangeFeed) (*recorder, func()) {
		r := &recorder{}
		f.Subscribe(func(c Change) { r.cache = append(r.cache, c.Kind) })
		return r, f.SubscribeOrdered(func(c Change) { r.ordered = append(r.ordered, c.Kind) })
	}
	check := func(t *testing.T, r *recorder, cache, ordered []ChangeKind) {
		t.Helper()
		if !slices.Equal(r.cache, cache) || !slices.Equal(r.ordered, ordered) {
			t.Errorf("cache heard %v, ordered subscriber %v; want %v and %v", r.cache, r.ordered, cache, ordered)
		}
	}
	t.Run("replica", func(t *testing.T) {
		f := NewChangeFeed(time.Second)
		r, unsubscribe := subscribe(f)
		f.Committed(Change{Kind: ChangeKeyRevoked})         // made here: the cache at once
		f.Heard(Change{Kind: ChangeKeyRevoked}, true)       // the same, back from the database
		f.Heard(Change{Kind: ChangeTenantFrozen}, false)    // another replica's
		f.Committed(Change{Kind: ChangeEntitlementRevoked}) // a retry's: here only
		f.Reset()
		check(t, r, []ChangeKind{ChangeKeyRevoked, ChangeTenantFrozen, ChangeEntitlementRevoked, ChangeReset},
			[]ChangeKind{ChangeKeyRevoked, ChangeTenantFrozen, ChangeReset})
		unsubscribe()
		f.Heard(Change{Kind: ChangeKeyCreated}, false)
		if len(r.ordered) != 3 {
			t.Errorf("heard %v after unsubscribing", r.ordered)
		}
	})
	t.Run("local", func(t *testing.T) {
		f := NewLocalChangeFeed()
		r, _ := subscribe(f)
		f.Committed(Change{Kind: ChangeKeyRevoked})
		f.Reset()
		check(t, r, []ChangeKind{ChangeKeyRevoked, ChangeReset}, []ChangeKind{ChangeKeyRevoked, ChangeReset})
	})
}
