package domain

import (
	"strings"
	"testing"
	"time"
)

func TestCheckProductKey(t *testing.T) {
	tests := []struct {
		key string
		ok  bool
	}{
		{"analytics", true},
		{"data-warehouse", true},
		{"a1b", true},
		{strings.Repeat("p", 63), true},
		{"admin", true}, // reserved tenant slugs are fine as keys
		{"api", true},
		{"", false},
		{"ab", false},
		{strings.Repeat("p", 64), false},
		{"-crm", false},
		{"crm-", false},
		{"CRM", false},
		{"c_rm", false},
		{"c rm", false},
		{"crmé", false},
		{"crm\x00", false},
		{"crm'; DROP TABLE products;--", false},
	}
	for _, tc := range tests {
		var v Violations
		checkProductKey(&v, "key", tc.key)
		if (len(v) == 0) != tc.ok {
			t.Errorf("checkProductKey(%q): violations %v, want ok=%v", tc.key, v, tc.ok)
		}
		if len(v) > 0 && v[0].Field != "key" {
			t.Errorf("checkProductKey(%q) names field %q", tc.key, v[0].Field)
		}
	}
}

func TestCheckTrialDays(t *testing.T) {
	for days, ok := range map[int]bool{-1: false, 0: true, 14: true, 90: true, 91: false, 1 << 31: false} {
		var v Violations
		checkTrialDays(&v, "trial_days", days)
		if (len(v) == 0) != ok {
			t.Errorf("checkTrialDays(%d): violations %v, want ok=%v", days, v, ok)
		}
	}
}

func TestTrialEnd(t *testing.T) {
	start := time.Date(2026, 3, 20, 12, 0, 0, 0, time.UTC)
	p := &Product{TrialDays: 14}
	if got, want := p.TrialEnd(start), start.Add(14*24*time.Hour); !got.Equal(want) {
		t.Errorf("TrialEnd = %v, want %v", got, want)
	}
}
