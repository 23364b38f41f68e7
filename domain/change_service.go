package domain

import (
	"context"
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
// ends with Unauthenticated when that key is revoked or rotated.
func (s *ChangeService) Watch(ctx context.Context, stop <-chan struct{}, w Watcher) error {
	if err := s.allow(ctx, PermChangesWatch, "", nil); err != nil {
		return err
	}
	self := CallerFrom(ctx).Principal
	q := &changeQueue{ch: make(chan Change, watchQueue)}
	unsubscribe := s.feed.SubscribeOrdered(q.offer)
	defer unsubscribe()
	// Subscribed first: a change committed from here on is told after the
	// reset; one committed before is covered by it.
	if err := w.Change(Change{Kind: ChangeReset}); err != nil {
		return err
	}
	beat := time.NewTicker(WatchHeartbeat)
	defer beat.Stop()
	if err := s.heartbeat(q, w, self); err != nil { // at once, so the watcher trusts at once
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-stop:
			return nil
		case c := <-q.ch:
			if err := s.tell(q, w, self, c); err != nil {
				return err
			}
		case <-beat.C:
			if err := s.heartbeat(q, w, self); err != nil {
				return err
			}
		}
	}
}

// heartbeat sends what is queued, then a heartbeat vouching for the feed's
// mark taken before: every change before the mark was queued (or made the
// queue overflow) by the time the mark was taken.
func (s *ChangeService) heartbeat(q *changeQueue, w Watcher, self Principal) error {
	mark := s.feed.Mark()
	for {
		select {
		case c := <-q.ch:
			if err := s.tell(q, w, self, c); err != nil {
				return err
			}
			continue
		default:
		}
		if q.overflow.Load() {
			if err := s.tell(q, w, self, Change{Kind: ChangeReset}); err != nil {
				return err
			}
		}
		staleness, known := mark.Staleness()
		return w.Heartbeat(Heartbeat{Staleness: staleness, Known: known})
	}
}

// tell sends c, or a reset when the queue overflowed before it.
func (s *ChangeService) tell(q *changeQueue, w Watcher, self Principal, c Change) error {
	if q.overflow.Swap(false) || c.Kind == ChangeUnknown {
		q.discard() // what is queued is older than the reset
		c = Change{Kind: ChangeReset}
	}
	if self.isKey() && c.KeyID == self.ID && (c.Kind == ChangeKeyRevoked || c.Kind == ChangeKeyRotated) {
		return Errorf(KindUnauthenticated, "the API key this watch was opened with was revoked or rotated")
	}
	return w.Change(c)
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
