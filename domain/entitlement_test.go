package domain

import (
	"fmt"
	"testing"
	"time"
)

func TestStatusAt(t *testing.T) {
	now := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		stored EntitlementStatus
		expire time.Time
		want   EntitlementStatus
	}{
		{"trial running", EntitlementTrial, now.Add(time.Microsecond), EntitlementTrial},
		{"trial ends at its expire time", EntitlementTrial, now, EntitlementExpired},
		{"trial past its end", EntitlementTrial, now.Add(-time.Hour), EntitlementExpired},
		{"grant without end", EntitlementActive, time.Time{}, EntitlementActive},
		{"grant running", EntitlementActive, now.Add(24 * time.Hour), EntitlementActive},
		{"grant past its end", EntitlementActive, now.Add(-time.Microsecond), EntitlementExpired},
		{"revoked stays revoked", EntitlementRevoked, now.Add(time.Hour), EntitlementRevoked},
		{"revoked after its end stays revoked", EntitlementRevoked, now.Add(-time.Hour), EntitlementRevoked},
	}
	for _, tc := range tests {
		e := &Entitlement{Status: tc.stored, ExpireTime: tc.expire}
		if got := e.StatusAt(now); got != tc.want {
			t.Errorf("%s: StatusAt = %s, want %s", tc.name, got, tc.want)
		}
		if read := e.ReadAt(now); read.Status != tc.want || e.Status != tc.stored {
			t.Errorf("%s: ReadAt = %s (stored now %s), want %s (stored %s)", tc.name, read.Status, e.Status, tc.want, tc.stored)
		}
	}
}

func TestEntitledProductsUsesEntitled(t *testing.T) {
	now := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	ents := []*Entitlement{
		{Product: "helpdesk", Status: EntitlementTrial, ExpireTime: now.Add(time.Hour)},
		{Product: "analytics", Status: EntitlementActive},
		{Product: "billing", Status: EntitlementActive, ExpireTime: now},
		{Product: "crm", Status: EntitlementRevoked},
	}
	for _, status := range []TenantStatus{TenantTrial, TenantActive, TenantFrozen} {
		tenant := &Tenant{Status: status}
		var want []string
		for _, p := range []string{"analytics", "billing", "crm", "helpdesk"} {
			for _, e := range ents {
				if e.Product == p && Entitled(tenant, e, now) {
					want = append(want, p)
				}
			}
		}
		got := EntitledProducts(tenant, ents, now)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("tenant %s: EntitledProducts = %v, Entitled says %v", status, got, want)
		}
		wantCount := 2
		if status == TenantFrozen {
			wantCount = 0
		}
		if len(got) != wantCount {
			t.Errorf("tenant %s: %d products entitled, want %d: %v", status, len(got), wantCount, got)
		}
	}
	if Entitled(&Tenant{Status: TenantActive}, nil, now) {
		t.Error("no entitlement is entitled")
	}
}
