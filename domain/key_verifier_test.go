package domain

import (
	"slices"
	"testing"
	"time"
)

// TestValidAnswerFollowsTime reuses a record's VALID answer while time
// alone cannot change it, and makes it again at its Until, and when the
// clock reads earlier than the answer was made.
func TestValidAnswerFollowsTime(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	trialEnd := t0.Add(14 * 24 * time.Hour)
	keyEnd := t0.Add(30 * 24 * time.Hour)
	rec := &KeyRecord{
		Key:    &ApiKey{ID: "key-1", TenantID: "t-1", Scopes: []string{"read"}, ExpireTime: keyEnd},
		Tenant: &Tenant{ID: "t-1", Slug: "acme", Status: TenantActive},
		Entitlements: []*Entitlement{
			{TenantID: "t-1", Product: "helpdesk", Status: EntitlementTrial, ExpireTime: trialEnd},
			{TenantID: "t-1", Product: "crm", Status: EntitlementActive},
		},
	}
	steps := []struct {
		name     string
		at       time.Time
		same     bool // the answer of the step before, reused
		products []string
		until    time.Time
	}{
		{"first", t0, false, []string{"crm", "helpdesk"}, trialEnd},
		{"later", t0.Add(time.Hour), true, []string{"crm", "helpdesk"}, trialEnd},
		{"just before the trial ends", trialEnd.Add(-time.Nanosecond), true, []string{"crm", "helpdesk"}, trialEnd},
		{"the trial ended", trialEnd, false, []string{"crm"}, keyEnd},
		{"later still", trialEnd.Add(time.Hour), true, []string{"crm"}, keyEnd},
		{"the clock went back", t0, false, []string{"crm", "helpdesk"}, trialEnd},
	}
	var last *Verification
	for _, s := range steps {
		a := rec.validAnswer(s.at)
		if (a == last) != s.same {
			t.Errorf("%s: reused = %v, want %v", s.name, a == last, s.same)
		}
		var counted []string
		for _, e := range a.Entitlements {
			counted = append(counted, e.Product+":"+string(e.Status))
		}
		if !slices.Equal(a.Products, s.products) || !a.Until.Equal(s.until) || len(counted) != len(s.products) {
			t.Errorf("%s: products %v, entitlements %v, until %v; want products %v, until %v", s.name, a.Products, counted, a.Until, s.products, s.until)
		}
		last = a
	}
}

// TestRenderedOnce renders an answer at its first call only.
func TestRenderedOnce(t *testing.T) {
	v := &Verification{Code: VerifyValid, KeyID: "key-1"}
	calls := 0
	render := func(v *Verification) any { calls++; return "rendered " + v.KeyID }
	for range 3 {
		if got := v.Rendered(render); got != "rendered key-1" {
			t.Fatalf("Rendered = %v", got)
		}
	}
	if calls != 1 {
		t.Fatalf("rendered %d times, want 1", calls)
	}
}

// TestCheckFollowsTime reuses a record's answer for a product while time
// alone cannot change it, and makes it again when the entitlement
// expires, and when the clock reads earlier than the answer was made.
func TestCheckFollowsTime(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	trialEnd := t0.Add(14 * 24 * time.Hour)
	trial := &Entitlement{TenantID: "t-1", Product: "helpdesk", Status: EntitlementTrial, ExpireTime: trialEnd}
	rec := &TenantRecord{Tenant: &Tenant{ID: "t-1", Status: TenantActive}, Entitlements: []*Entitlement{trial}}
	steps := []struct {
		name   string
		at     time.Time
		same   bool // the answer of the step before, reused
		reason CheckReason
	}{
		{"first", t0, false, CheckOK},
		{"later", t0.Add(time.Hour), true, CheckOK},
		{"just before the trial ends", trialEnd.Add(-time.Nanosecond), true, CheckOK},
		{"the trial ended", trialEnd, false, CheckExpired},
		{"later still", trialEnd.Add(time.Hour), true, CheckExpired},
		{"the clock went back", t0, false, CheckOK},
	}
	var last *Check
	for _, s := range steps {
		c := rec.check(trial, s.at)
		if (c == last) != s.same {
			t.Errorf("%s: reused = %v, want %v", s.name, c == last, s.same)
		}
		if c.Reason != s.reason || c.Entitled != (s.reason == CheckOK) || c.Entitlement.Status != trial.StatusAt(s.at) {
			t.Errorf("%s: %s, entitled %v, status %s; want %s", s.name, c.Reason, c.Entitled, c.Entitlement.Status, s.reason)
		}
		last = c
	}
}
