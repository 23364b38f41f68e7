package domain

import (
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

// TestRefusalLimiter: once per actor and target a window, a few per actor,
// and a new window starts afresh.
func TestRefusalLimiter(t *testing.T) {
	l := &refusalLimiter{}
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	if !l.admit("user|mallory", "t1", t0) || l.admit("user|mallory", "t1", t0.Add(time.Second)) {
		t.Fatal("the same refusal twice in a window: want the first only")
	}
	admitted := 1
	for i := range 100 {
		if l.admit("user|mallory", string(rune('a'+i%26))+string(rune('a'+i/26)), t0.Add(2*time.Second)) {
			admitted++
		}
	}
	if admitted != refusalsPerActor {
		t.Errorf("one actor, 101 targets: %d admitted, want %d", admitted, refusalsPerActor)
	}
	if !l.admit("user|trent", "t1", t0.Add(3*time.Second)) {
		t.Error("another actor is bounded by the first one's budget")
	}
	if !l.admit("user|mallory", "t1", t0.Add(refusalWindow)) {
		t.Error("a new window does not start afresh")
	}
	if l.Dropped() != 1+100-(refusalsPerActor-1) {
		t.Errorf("dropped %d", l.Dropped())
	}
}
