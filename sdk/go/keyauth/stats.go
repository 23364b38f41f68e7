package keyauth

import "sync/atomic"

// StreamState is the state of the change stream, as Run sees it.
type StreamState int32

// States of the change stream.
const (
	// StreamDown: not connected; Run is reconnecting (or not running).
	StreamDown StreamState = iota
	// StreamStale: connected, but the heartbeats do not vouch for the last
	// MaxStaleness (just after a reset, or while the registry itself hears
	// no changes): every request asks the registry.
	StreamStale
	// StreamLive: connected and current: the cache answers.
	StreamLive
)

func (s StreamState) String() string {
	switch s {
	case StreamStale:
		return "stale"
	case StreamLive:
		return "live"
	}
	return "down"
}

// Stats are a Verifier's counters since it was made, for metrics.
type Stats struct {
	Hits           uint64 // verifications answered from the cache
	Misses         uint64 // verifications that asked the registry
	RegistryErrors uint64 // of those, the ones the registry could not answer (503)
	Changes        uint64 // changes received on the change stream
	Resets         uint64 // resets received (each empties the cache)
	Connects       uint64 // change streams opened
	Entries        int    // answers cached now
	State          StreamState
}

type counters struct {
	hits, misses, registryErrors, changes, resets, connects atomic.Uint64
}

// Stats returns the Verifier's counters.
func (v *Verifier) Stats() Stats {
	return Stats{
		Hits: v.stats.hits.Load(), Misses: v.stats.misses.Load(), RegistryErrors: v.stats.registryErrors.Load(),
		Changes: v.stats.changes.Load(), Resets: v.stats.resets.Load(), Connects: v.stats.connects.Load(),
		Entries: v.cache.len(), State: StreamState(v.state.Load()),
	}
}
