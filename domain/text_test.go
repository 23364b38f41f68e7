package domain

import (
	"fmt"
	"testing"
	"time"
)

// TestCheckName: names people read have one spelling (NFC, trimmed), and
// none may hide characters that make it look like another name or read in
// another order than stored.
func TestCheckName(t *testing.T) {
	cases := []struct {
		name, in, want string
		bad            bool
	}{
		{"plain", "Tenant B", "Tenant B", false},
		{"trimmed", "  Tenant B  ", "Tenant B", false},
		{"decomposed accent is composed", "Cafe\u0301", "Caf\u00e9", false},
		{"composed accent stays", "Caf\u00e9", "Caf\u00e9", false},
		{"zero-width space", "Tenant \u200bB", "", true},
		{"right-to-left override", "Tenant B\u202e", "", true},
		{"zero-width joiner", "Ten\u200dant", "", true},
		{"byte order mark", "\ufeffTenant", "", true},
		{"word joiner", "Tenant\u2060B", "", true},
		{"control character", "Tenant\x07B", "", true},
		{"blank", "   ", "", true},
		{"not UTF-8", "Tenant \xff", "", true},
		{"letters of other scripts", "Société Générale 株式会社", "Société Générale 株式会社", false},
		{"emoji and punctuation", "Acme (EU) – 🚀", "Acme (EU) – 🚀", false},
		{"Hangul filler", "Tenant\u3164A", "", true},
		{"Hangul choseong filler", "\u115fTenant", "", true},
		{"halfwidth Hangul filler", "Ten\uffa0ant", "", true},
		{"braille blank", "Tenant\u2800A", "", true},
		{"combining grapheme joiner", "Tena\u034fnt", "", true},
		{"variation selector", "Tenant\ufe0f", "", true},
		{"variation selector supplement", "Tenant\U000e0100", "", true},
		{"Khmer inherent vowel", "Tenant\u17b4", "", true},
		{"Mongolian free variation selector", "Tenant\u180b", "", true},
		{"unassigned", "Tenant\u2065", "", true},
		{"private use", "Tenant\ue000", "", true},
		{"no-break space", "Tenant\u00a0A", "", true},
		{"ideographic space", "Tenant\u3000A", "", true},
		{"line separator", "Tenant\u2028A", "", true},
		{"paragraph separator", "Tenant\u2029A", "", true},
		{"only marks", "\u0301\u0301", "", true},
		{"only punctuation", "---", "", true},
	}
	for _, tc := range cases {
		var v Violations
		got := checkName(&v, "display_name", tc.in, MaxDisplayNameLen)
		if bad := len(v) > 0; bad != tc.bad {
			t.Errorf("%s: violations %v, want bad=%v", tc.name, v, tc.bad)
			continue
		}
		if !tc.bad && got != tc.want {
			t.Errorf("%s: stored %q, want %q", tc.name, got, tc.want)
		}
		if tc.bad && v[0].Field != "display_name" {
			t.Errorf("%s: violation names %q", tc.name, v[0].Field)
		}
	}
}

// TestRefusalLimiter: once per actor and target a window, a few per actor
// and per tenant, separate budgets for refusals answered as not found, and
// a new window starts afresh.
func TestRefusalLimiter(t *testing.T) {
	l := &refusalLimiter{}
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	mallory := Principal{ID: "mallory", Type: PrincipalUser, TenantID: "tenant-a"}
	if !l.admit(mallory, "t1", false, t0) || l.admit(mallory, "t1", false, t0.Add(time.Second)) {
		t.Fatal("the same refusal twice in a window: want the first only")
	}
	admitted := func(p Principal, hidden bool, n int) int {
		got := 0
		for i := range n {
			if l.admit(p, fmt.Sprint("target-", i), hidden, t0.Add(2*time.Second)) {
				got++
			}
		}
		return got
	}
	if got := admitted(mallory, false, 100); got != refusalsPerActor-1 {
		t.Errorf("one actor, 100 targets: %d admitted, want %d", got, refusalsPerActor-1)
	}
	if got := admitted(mallory, true, 100); got != refusalsPerActor {
		t.Errorf("refusals answered as not found share the shown ones' budget: %d admitted, want %d", got, refusalsPerActor)
	}
	// Keys minted by one tenant are actors of their own, but its budget is shared.
	total := 0
	for k := range 20 {
		total += admitted(Principal{ID: fmt.Sprint("key-", k), Type: PrincipalTenantKey, TenantID: "tenant-a"}, false, 5)
	}
	if total != refusalsPerTenant-refusalsPerActor {
		t.Errorf("20 keys of one tenant: %d admitted, want the tenant's remaining %d", total, refusalsPerTenant-refusalsPerActor)
	}
	if !l.admit(Principal{ID: "trent", Type: PrincipalUser, TenantID: "tenant-b"}, "t1", false, t0.Add(3*time.Second)) {
		t.Error("another tenant's actor is bounded by the first tenant's budget")
	}
	if !l.admit(mallory, "t1", false, t0.Add(refusalWindow)) {
		t.Error("a new window does not start afresh")
	}
	if l.Dropped() == 0 {
		t.Error("nothing counted as dropped")
	}
}
