package domain

import "sync"

// Budget counts what is held at once, per key (an audit log) and in all,
// against bounds given at each Take: the exports running, the bytes of
// answers not yet taken by their clients. The zero Budget holds nothing.
type Budget struct {
	mu    sync.Mutex
	total int
	byKey map[string]int
}

// Take claims n for key when neither key's share nor the whole would then
// pass its bound. When it does not, keyFull says whether key's own bound
// was the one in the way.
func (b *Budget) Take(key string, n, perKey, total int) (ok, keyFull bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.byKey[key]+n > perKey:
		return false, true
	case b.total+n > total:
		return false, false
	}
	b.add(key, n)
	return true, false
}

// Release gives back n that Take claimed for key.
func (b *Budget) Release(key string, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total -= n
	if b.byKey[key] -= n; b.byKey[key] <= 0 {
		delete(b.byKey, key)
	}
}

// Held is what is held in all, and for key.
func (b *Budget) Held(key string) (total, forKey int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total, b.byKey[key]
}

// Add claims n for key whatever the bounds: what is already spent (the
// answer of a change that was made) must be counted even past them.
func (b *Budget) Add(key string, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.add(key, n)
}

// add counts n for key; b.mu is held.
func (b *Budget) add(key string, n int) {
	if b.byKey == nil {
		b.byKey = map[string]int{}
	}
	b.byKey[key] += n
	b.total += n
}
