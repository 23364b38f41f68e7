package domain

import (
	"strings"
	"testing"
)

func TestCheckSlug(t *testing.T) {
	tests := []struct {
		slug string
		ok   bool
	}{
		{"acme", true},
		{"a1b", true},
		{"acme-corp-2", true},
		{strings.Repeat("a", 63), true},
		{"", false},
		{"ab", false},
		{strings.Repeat("a", 64), false},
		{"-acme", false},
		{"acme-", false},
		{"Acme", false},
		{"ac_me", false},
		{"ac me", false},
		{"acmé", false},
		{"acme\x00", false},
		{"acme'; DROP TABLE tenants;--", false},
		{"admin", false},
		{"api", false},
		{"www", false},
		{"platform", false},
		{"internal", false},
		{"app", false},
	}
	for _, tc := range tests {
		var v Violations
		checkSlug(&v, "slug", tc.slug)
		if (len(v) == 0) != tc.ok {
			t.Errorf("checkSlug(%q): violations %v, want ok=%v", tc.slug, v, tc.ok)
		}
		if len(v) > 0 && v[0].Field != "slug" {
			t.Errorf("checkSlug(%q) names field %q", tc.slug, v[0].Field)
		}
	}
}

func TestCheckMetadata(t *testing.T) {
	many := map[string]string{}
	for i := range 33 {
		many[strings.Repeat("k", i+1)] = "v"
	}
	tests := []struct {
		name string
		md   map[string]string
		ok   bool
	}{
		{"nil", nil, true},
		{"bounds", map[string]string{strings.Repeat("k", 40): strings.Repeat("v", 500)}, true},
		{"unicode counted in characters", map[string]string{"ключ": strings.Repeat("é", 500)}, true},
		{"33 keys", many, false},
		{"long key", map[string]string{strings.Repeat("k", 41): "v"}, false},
		{"long value", map[string]string{"k": strings.Repeat("v", 501)}, false},
		{"empty key", map[string]string{"": "v"}, false},
		{"NUL in value", map[string]string{"k": "a\x00b"}, false},
		{"invalid UTF-8 key", map[string]string{"\xff": "v"}, false},
	}
	for _, tc := range tests {
		var v Violations
		checkMetadata(&v, tc.md)
		if (len(v) == 0) != tc.ok {
			t.Errorf("%s: violations %v, want ok=%v", tc.name, v, tc.ok)
		}
	}
}

func TestTransition(t *testing.T) {
	tests := []struct {
		from, to TenantStatus
		ok       bool
	}{
		{TenantTrial, TenantActive, true},
		{TenantFrozen, TenantActive, true},
		{TenantActive, TenantActive, true},
		{TenantTrial, TenantFrozen, true},
		{TenantActive, TenantFrozen, true},
		{TenantFrozen, TenantFrozen, true},
		{TenantActive, TenantTrial, false},
		{TenantFrozen, TenantTrial, false},
	}
	for _, tc := range tests {
		tn := &Tenant{ID: "x", Status: tc.from}
		err := tn.transition(tc.to)
		if (err == nil) != tc.ok {
			t.Errorf("%s -> %s: err %v, want ok=%v", tc.from, tc.to, err, tc.ok)
		}
		if err != nil && ErrorKind(err) != KindFailedPrecondition {
			t.Errorf("%s -> %s: kind %v, want FailedPrecondition", tc.from, tc.to, ErrorKind(err))
		}
	}
}

func TestMergeMetadata(t *testing.T) {
	got := mergeMetadata(map[string]string{"a": "1", "b": "2"}, map[string]string{"b": "", "c": "3", "zz": ""})
	if len(got) != 2 || got["a"] != "1" || got["c"] != "3" {
		t.Fatalf("mergeMetadata = %v", got)
	}
}

func TestCursor(t *testing.T) {
	tok := encodeCursor("q1", "x", "y")
	var v Violations
	if got := decodeCursor(&v, tok, "q1", 2); len(v) != 0 || len(got) != 2 || got[0] != "x" || got[1] != "y" {
		t.Fatalf("round trip: %v %v", got, v)
	}
	bad := []struct {
		name, token, query string
		parts              int
	}{
		{"other query", tok, "q2", 2},
		{"wrong arity", tok, "q1", 1},
		{"not base64", "!!!", "q1", 2},
		{"too short", "YWJj", "q1", 2},
		{"edited", tok[:len(tok)-2] + "AA", "q1", 2},
		{"truncated", tok[:len(tok)-1], "q1", 2},
	}
	for _, tc := range bad {
		var v Violations
		decodeCursor(&v, tc.token, tc.query, tc.parts)
		if len(v) != 1 || v[0].Field != "page_token" {
			t.Errorf("%s: violations %v, want one on page_token", tc.name, v)
		}
	}
	if got := decodeCursor(&v, "", "q1", 2); got != nil {
		t.Fatalf("empty token decoded to %v", got)
	}
}

func TestPageSize(t *testing.T) {
	tests := []struct {
		size, want int
		ok         bool
	}{{0, 50, true}, {1, 1, true}, {500, 500, true}, {501, 50, false}, {-1, 50, false}, {1 << 30, 50, false}}
	for _, tc := range tests {
		var v Violations
		got := PageRequest{Size: tc.size}.pageSize(&v)
		if got != tc.want || (len(v) == 0) != tc.ok {
			t.Errorf("pageSize(%d) = %d, %v", tc.size, got, v)
		}
	}
}

func TestViolationsErr(t *testing.T) {
	var v Violations
	if v.Err() != nil {
		t.Fatal("empty violations made an error")
	}
	v.Add("slug", "is required")
	v.Add("display_name", "is required")
	err := v.Err()
	if ErrorKind(err) != KindInvalid || !strings.Contains(err.Error(), "slug: is required") || !strings.Contains(err.Error(), "display_name") {
		t.Fatalf("Err() = %v", err)
	}
}
