package domain

import "time"

// Clock tells the time. Services take one so that tests can move time
// instead of sleeping.
type Clock func() time.Time

// SystemClock is the real clock, in UTC and truncated to microseconds so
// that what is stored (PostgreSQL keeps microseconds) equals what is returned.
func SystemClock() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
