package domain

import "time"

// Clock tells the time. Services take one so that tests can move time
// instead of sleeping.
type Clock func() time.Time

// SystemClock is the real clock, in UTC.
func SystemClock() time.Time { return time.Now().UTC() }

// storedClock reads now in the form store keeps times in (see
// Store.StoredTime): the services store the times they read and compare
// them with stored ones.
func storedClock(store Store, now Clock) Clock {
	return func() time.Time { return store.StoredTime(now()) }
}
