package domain

import (
	"fmt"
	"maps"
)

// Limits are what a plan allows: limit key (seats, projects, …) to a
// count. The registry keeps and tells them; products compare their own
// usage with them.
type Limits map[string]int64

// Bounds of limits, as those of metadata.
const (
	MaxLimitKeys   = MaxMetadataKeys
	MaxLimitKeyLen = MaxMetadataKeyLen
)

// checkLimits records a violation for every bound l breaks: at most
// MaxLimitKeys keys of 1 to MaxLimitKeyLen characters (as metadata keys),
// counts of at least 0.
func checkLimits(v *Violations, field string, l Limits) {
	if len(l) > MaxLimitKeys {
		v.Add(field, "must have at most %d keys, got %d", MaxLimitKeys, len(l))
		return
	}
	for k, n := range l {
		f := fmt.Sprintf("%s[%q]", field, k)
		if k == "" {
			v.Add(field, "keys must not be empty")
			continue
		}
		checkText(v, f, k, MaxLimitKeyLen, false)
		if n < 0 {
			v.Add(f, "must be at least 0, got %d", n)
		}
	}
}

// Over returns base with every key of l set to l's count: limits
// overriding others, key by key.
func (l Limits) Over(base Limits) Limits {
	out := maps.Clone(base)
	if out == nil {
		out = Limits{}
	}
	maps.Copy(out, l)
	return out
}
