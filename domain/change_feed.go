package domain

import (
	"sync"
	"sync/atomic"
	"time"
)

// ChangeFeed is the one path by which committed changes reach everything
// in this process that caches answers about keys: the key cache, and the
// change streams products watch. It also says whether those caches may be
// trusted.
//
// A feed is current while its source vouches, recently, that every change
// committed up to a moment has been delivered. On an embedded database
// this process commits every change itself, so its feed is always
// current. A replica of a shared database hears the others' changes
// through a listener that proves itself with heartbeats; the feed is
// current only while a heartbeat sent less than maxSilence ago has come
// back through the listener. Currency is computed from the time at each
// question, not flipped by a goroutine: a listener hung in a call that
// never returns cannot keep the feed trusted.
type ChangeFeed struct {
	epoch      time.Time
	maxSilence time.Duration // 0: a local feed, always current
	// asOf is the moment, in nanoseconds since epoch, up to which every
	// committed change has been delivered; -1 while the source is down.
	asOf atomic.Int64

	mu   sync.Mutex // serialises changes to subs; delivery reads it lock-free
	subs atomic.Pointer[[]*subscription]
}

type subscription struct {
	fn      func(Change)
	ordered bool
}

// NewLocalChangeFeed returns the feed of a process that commits every
// change itself (one process on an embedded database): always current.
func NewLocalChangeFeed() *ChangeFeed {
	f := &ChangeFeed{epoch: time.Now()}
	f.subs.Store(&[]*subscription{})
	return f
}

// NewChangeFeed returns the feed of one replica of a shared database. It
// is not current until its source first calls CurrentAsOf, and stops
// being current maxSilence after the moment the source last vouched for.
func NewChangeFeed(maxSilence time.Duration) *ChangeFeed {
	f := NewLocalChangeFeed()
	f.maxSilence = max(maxSilence, time.Millisecond)
	f.asOf.Store(-1)
	return f
}

// Current reports whether every change committed more than maxSilence ago
// has been delivered: whether caches fed by f may answer.
func (f *ChangeFeed) Current() bool {
	if f.maxSilence == 0 {
		return true
	}
	s, ok := f.Mark().Staleness()
	return ok && s < f.maxSilence
}

// Mark is what a feed vouched for at one moment.
type Mark struct {
	f    *ChangeFeed
	asOf int64
}

// Mark returns what the feed vouches for now: every change committed
// before the mark's moment has been delivered to the subscribers by the
// time Mark returns (delivery happens before the source vouches).
func (f *ChangeFeed) Mark() Mark { return Mark{f: f, asOf: f.asOf.Load()} }

// Staleness returns how long before now the mark's moment is: zero for a
// local feed; ok is false when the feed vouched for nothing (its source
// was down, or never up).
func (m Mark) Staleness() (staleness time.Duration, ok bool) {
	if m.f.maxSilence == 0 {
		return 0, true
	}
	if m.asOf < 0 {
		return 0, false
	}
	return max(0, time.Since(m.f.epoch)-time.Duration(m.asOf)), true
}

// Subscribe delivers to fn every change this process commits, at once
// after its commit, and every change other replicas commit, when it is
// heard: what the key cache needs to answer a retry only once the change
// it repeats is felt here. fn runs on the committing or listening
// goroutine and must not block. The returned func unsubscribes.
func (f *ChangeFeed) Subscribe(fn func(Change)) (cancel func()) { return f.add(fn, false) }

// SubscribeOrdered delivers to fn every change once, in commit order,
// before the feed vouches for a moment after it: what a change stream
// needs so that a heartbeat sent after a Mark covers every change before
// it. Retries that changed nothing are not delivered. fn must not block.
func (f *ChangeFeed) SubscribeOrdered(fn func(Change)) (cancel func()) { return f.add(fn, true) }

func (f *ChangeFeed) add(fn func(Change), ordered bool) func() {
	s := &subscription{fn: fn, ordered: ordered}
	f.mu.Lock()
	defer f.mu.Unlock()
	subs := append(append([]*subscription(nil), *f.subs.Load()...), s)
	f.subs.Store(&subs)
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		var kept []*subscription
		for _, o := range *f.subs.Load() {
			if o != s {
				kept = append(kept, o)
			}
		}
		f.subs.Store(&kept)
	}
}

func (f *ChangeFeed) deliver(c Change, toCache, toOrdered bool) {
	for _, s := range *f.subs.Load() {
		if s.ordered && toOrdered || !s.ordered && toCache {
			s.fn(c)
		}
	}
}

// The source's side: the store after each commit, and on a shared
// database the listener.

// Committed delivers a change this process has just committed (or, for a
// retry, found committed). A local feed delivers it to every subscriber;
// a replica's feed to the cache only, as its ordered subscribers hear it
// from the database with everyone else's.
func (f *ChangeFeed) Committed(c Change) { f.deliver(c, true, f.maxSilence == 0) }

// Heard delivers a change heard from the database: committed by another
// replica, or by this one (own), whose cache has it already.
func (f *ChangeFeed) Heard(c Change, own bool) { f.deliver(c, !own, true) }

// CurrentAsOf is the source vouching that every change committed before t
// has been delivered.
func (f *ChangeFeed) CurrentAsOf(t time.Time) {
	at := int64(t.Sub(f.epoch))
	for {
		old := f.asOf.Load()
		if old >= at || f.asOf.CompareAndSwap(old, at) {
			return
		}
	}
}

// Lost says the source is down: the feed is not current until the source
// vouches again.
func (f *ChangeFeed) Lost() {
	if f.maxSilence > 0 {
		f.asOf.Store(-1)
	}
}

// Reset tells every subscriber to forget everything: the source is back
// but cannot say what it missed while it was away.
func (f *ChangeFeed) Reset() { f.deliver(Change{Kind: ChangeReset}, true, true) }
