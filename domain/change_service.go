package domain

import (
	"context"
	"strings"
	"sync/atomic"
	"time"
)

// WatchHeartbeat is how often a watch proves it is alive. A watcher stops
// trusting its cache when heartbeats stop, so it bounds how fast a dead
// stream is noticed.
const WatchHeartbeat = 200 * time.Millisecond

// watchQueue bounds the changes waiting to be sent to one watcher; one
// that falls further behind gets a reset instead of the changes it missed.
const watchQueue = 1024

// Heartbeat is a watch's proof of life, and what it vouches for: every
// change committed more than Staleness before it was sent has been told
// before it. Known is false while the registry itself hears no changes
// (its database listener is down): the watcher must then not trust what it
// caches.
type Heartbeat struct {
	Staleness time.Duration
	Known     bool
}

// Watcher receives a watch's messages, in order.
type Watcher interface {
	// Change tells one change, or with Kind ChangeReset that the watcher
	// must forget everything it caches.
	Change(Change) error
	Heartbeat(Heartbeat) error
}

// ChangeService tells products what they must forget: the change stream.
type ChangeService struct {
	guard
	feed *ChangeFeed
}

// NewChangeService returns the change stream over the feed of this
// process.
func NewChangeService(store Store, now Clock, feed *ChangeFeed) *ChangeService {
	return &ChangeService{guard: newGuard(store, now), feed: feed}
}

// Watch tells w every change from now on, until ctx ends (nil error) or
// stop is closed (nil: a clean end, the watcher reconnects elsewhere). It
// starts with a reset, tells each change in commit order, and sends a
// heartbeat every WatchHeartbeat. A watcher that falls behind is sent a
// reset instead of what it missed, and so is a change from a replica of an
// earlier version, which names no key id. A watch opened with an API key
// ends with Unauthenticated when that key is revoked, rotated, disabled or
// updated in what verification answers (its scopes may no longer allow
// watching; the watcher reconnects with what the key is now), when it
// expires, and at a reset that finds it no longer valid.
func (s *ChangeService) Watch(ctx context.Context, stop <-chan struct{}, w Watcher) error {
	if err := s.allow(ctx, PermChangesWatch, "", nil); err != nil {
		return err
	}
	self := CallerFrom(ctx).Principal
	q := &changeQueue{ch: make(chan Change, watchQueue)}
	unsubscribe := s.feed.SubscribeOrdered(q.offer)
	defer unsubscribe()
	// Subscribed first: a change committed from here on is told after the
	// reset; one committed before is covered by it, and its key is read
	// again, for a change between its authentication and the subscription.
	if err := s.tell(ctx, q, w, self, Change{Kind: ChangeReset}); err != nil {
		return err
	}
	beat := time.NewTicker(WatchHeartbeat)
	defer beat.Stop()
	var expired <-chan time.Time
	if self.isKey() && !self.ExpireTime.IsZero() {
		t := time.NewTimer(self.ExpireTime.Sub(s.now()))
		defer t.Stop()
		expired = t.C
	}
	if err := s.heartbeat(ctx, q, w, self); err != nil { // at once, so the watcher trusts at once
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-stop:
			return nil
		case <-expired:
			return Errorf(KindUnauthenticated, "the API key this watch was opened with expired")
		case c := <-q.ch:
			if err := s.tell(ctx, q, w, self, c); err != nil {
				return err
			}
		case <-beat.C:
			if err := s.heartbeat(ctx, q, w, self); err != nil {
				return err
			}
		}
	}
}

// heartbeat sends what is queued, then a heartbeat vouching for the feed's
// mark taken before: every change before the mark was queued (or made the
// queue overflow) by the time the mark was taken.
func (s *ChangeService) heartbeat(ctx context.Context, q *changeQueue, w Watcher, self Principal) error {
	mark := s.feed.Mark()
	for {
		select {
		case c := <-q.ch:
			if err := s.tell(ctx, q, w, self, c); err != nil {
				return err
			}
			continue
		default:
		}
		if q.overflow.Load() {
			if err := s.tell(ctx, q, w, self, Change{Kind: ChangeReset}); err != nil {
				return err
			}
		}
		staleness, known := mark.Staleness()
		return w.Heartbeat(Heartbeat{Staleness: staleness, Known: known})
	}
}

// tell sends c, or a reset when the queue overflowed before it, unless
// it ends the watch.
func (s *ChangeService) tell(ctx context.Context, q *changeQueue, w Watcher, self Principal, c Change) error {
	if q.overflow.Swap(false) || c.Kind == ChangeUnknown {
		q.discard() // what is queued is older than the reset
		c = Change{Kind: ChangeReset}
	}
	if err := s.endsWatch(ctx, self, c); err != nil {
		return err
	}
	return w.Change(c)
}

// endsWatch is the error that ends a watch opened by self when c makes
// its key no longer what authenticated it. A reset may hide such a change
// (a revocation of more keys than are told one by one, a change missed):
// the key is then read again.
func (s *ChangeService) endsWatch(ctx context.Context, self Principal, c Change) error {
	if !self.isKey() {
		return nil
	}
	switch {
	case c.KeyID == self.ID && c.Kind != ChangeKeyCreated && c.Kind != ChangeKeyEnabled:
		return Errorf(KindUnauthenticated, "the API key this watch was opened with was %s; reconnect with a valid key", strings.TrimPrefix(string(c.Kind), "api_key."))
	case c.Kind == ChangeReset:
		k, err := s.store.ApiKeys().Get(ctx, self.ID)
		if err != nil {
			return err
		}
		if st := k.StatusAt(s.now()); st != ApiKeyActive {
			return Errorf(KindUnauthenticated, "the API key this watch was opened with is %s", st)
		}
	}
	return nil
}

// changeQueue holds the changes delivered to one watch until they are sent.
type changeQueue struct {
	ch       chan Change
	overflow atomic.Bool // a change did not fit: the watcher needs a reset
}

// offer queues c without blocking: the feed delivers on the committing or
// listening goroutine, which a slow watcher must not hold up.
func (q *changeQueue) offer(c Change) {
	select {
	case q.ch <- c:
	default:
		q.overflow.Store(true)
	}
}

func (q *changeQueue) discard() {
	for {
		select {
		case <-q.ch:
		default:
			return
		}
	}
}
