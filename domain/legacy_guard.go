package domain

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds of the argon2 path that keys of the previous implementation take
// until their first good verification. Each argon2id hash costs about
// 60–100 ms of CPU and 64 MiB, and display prefixes are no secret (tenant
// admins see them in ListApiKeys): random suffixes under a known prefix
// would otherwise buy a hash each.
const (
	// LegacyFailuresPerPrefix is how many verifications under one display
	// prefix may fail on the slow path per LegacyFailureWindow; later ones
	// answer NOT_FOUND without hashing until the window ends. The genuine
	// key leaves the slow path at its first good verification, so the
	// budget only ever constrains guessers.
	LegacyFailuresPerPrefix = 3
	// LegacyFailureWindow is the window of LegacyFailuresPerPrefix.
	LegacyFailureWindow = time.Minute
	// LegacyMaxWait is the longest a verification waits for an argon2
	// slot; when every slot is busy and as many are already waiting, or
	// the wait runs out, it is shed (Unavailable, "try again") instead of
	// queueing behind a flood.
	LegacyMaxWait = 100 * time.Millisecond
)

// legacyGuardMaxPrefixes bounds the prefixes whose budgets are kept; only
// prefixes of imported keys that were tried and failed get one, so this is
// a safety net rather than a limit anyone should meet.
const legacyGuardMaxPrefixes = 10_000

// LegacyStats counts what the slow path did since start.
type LegacyStats struct {
	Hashes  uint64 // argon2id hashes computed
	Refused uint64 // verifications answered NOT_FOUND because their prefix's budget was spent
	Shed    uint64 // verifications answered Unavailable because every argon2 slot was busy
}

// legacyGuard bounds the slow path: a failure budget per display prefix,
// and argon2 slots (one per core, so that hashes cannot exhaust memory)
// with a short, bounded wait instead of a queue.
type legacyGuard struct {
	slots   chan struct{}
	maxWait time.Duration
	waiting atomic.Int64 // verifications waiting for a slot

	mu       sync.Mutex
	prefixes map[string]*prefixBudget

	hashes, refused, shed atomic.Uint64
}

// prefixBudget is one display prefix's use of the slow path in its
// current window: failures, and attempts still running (reserved, so that
// concurrent guesses cannot all pass the check before any has failed).
type prefixBudget struct {
	since    time.Time
	attempts int
}

func newLegacyGuard() *legacyGuard {
	return &legacyGuard{
		slots: make(chan struct{}, runtime.NumCPU()), maxWait: LegacyMaxWait, prefixes: map[string]*prefixBudget{},
	}
}

// begin reserves a slow-path attempt for prefix at now; false means the
// prefix's budget is spent and the caller must answer NOT_FOUND at once.
func (g *legacyGuard) begin(prefix string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.prefixes[prefix]
	if b == nil || now.Sub(b.since) >= LegacyFailureWindow {
		if b == nil && len(g.prefixes) >= legacyGuardMaxPrefixes {
			g.pruneLocked(now)
			if len(g.prefixes) >= legacyGuardMaxPrefixes {
				g.refused.Add(1)
				return false
			}
		}
		b = &prefixBudget{since: now}
		g.prefixes[prefix] = b
	}
	if b.attempts >= LegacyFailuresPerPrefix {
		g.refused.Add(1)
		return false
	}
	b.attempts++
	return true
}

// end settles an attempt begun for prefix: a failure (hashes that matched
// nothing) keeps counting against the budget; anything else (a match, or
// an attempt that hashed nothing because the database or the slots were
// busy) gives the attempt back.
func (g *legacyGuard) end(prefix string, failed bool) {
	if failed {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if b := g.prefixes[prefix]; b != nil && b.attempts > 0 {
		b.attempts--
	}
}

func (g *legacyGuard) pruneLocked(now time.Time) {
	for p, b := range g.prefixes {
		if now.Sub(b.since) >= LegacyFailureWindow {
			delete(g.prefixes, p)
		}
	}
}

// errLegacyBusy is the answer of a shed verification.
var errLegacyBusy = Errorf(KindUnavailable, "key verification is busy; try again")

// acquire takes an argon2 slot, waiting at most maxWait, and only
// when fewer verifications than there are slots wait already; release
// gives it back.
func (g *legacyGuard) acquire(ctx context.Context) (release func(), err error) {
	release = func() { <-g.slots }
	select {
	case g.slots <- struct{}{}:
		return release, nil
	default:
	}
	if g.waiting.Add(1) > int64(cap(g.slots)) {
		g.waiting.Add(-1)
		g.shed.Add(1)
		return nil, errLegacyBusy
	}
	defer g.waiting.Add(-1)
	timer := time.NewTimer(g.maxWait)
	defer timer.Stop()
	select {
	case g.slots <- struct{}{}:
		return release, nil
	case <-timer.C:
		g.shed.Add(1)
		return nil, errLegacyBusy
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (g *legacyGuard) stats() LegacyStats {
	return LegacyStats{Hashes: g.hashes.Load(), Refused: g.refused.Load(), Shed: g.shed.Load()}
}
