package testserver

import (
	"sync"
	"time"
)

// Clock is a clock that moves only when told to, so that tests can
// compare timestamps exactly.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock reading t, to the microsecond the database
// keeps.
func NewClock(t time.Time) *Clock { return &Clock{now: t.UTC().Truncate(time.Microsecond)} }

// Now reads the clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d and returns the new time.
func (c *Clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}
