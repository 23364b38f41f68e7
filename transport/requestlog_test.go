package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/tenant-registry/tenant-registry/domain"
)

func TestValidRequestID(t *testing.T) {
	for id, want := range map[string]bool{
		"":                          false,
		"a":                         true,
		"0190b2c4-5f6e-7d8a.x_Y":    true,
		strings.Repeat("a", 64):     true,
		strings.Repeat("a", 65):     false,
		"has space":                 false,
		"line\nbreak":               false,
		`quote"`:                    false,
		"ünicode":                   false,
		"semi;colon":                false,
		"slash/path":                false,
		"ok-id.with_all-0123456789": true,
	} {
		if got := validRequestID(id); got != want {
			t.Errorf("validRequestID(%q) = %v, want %v", id, got, want)
		}
	}
}

// TestLogHandler checks that a request's attributes are added once, after
// the record's own, and that a record naming one keeps its value.
func TestLogHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil)))
	if LogHandler(log.Handler()) != log.Handler() {
		t.Error("LogHandler wraps a handler twice")
	}
	ri := &requestInfo{id: "req-1"}
	ctx := withRequestInfo(context.Background(), ri)
	ri.setProcedure("/svc/Method")
	ri.setPrincipal(domain.Principal{ID: "key-1", Type: domain.PrincipalTenantKey, TenantID: "t-1", Name: "secret name"})
	log.InfoContext(ctx, "one", "procedure", "/own/Value")
	log.Info("outside a request")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("logged %d lines, want 2:\n%s", len(lines), buf.String())
	}
	if n := strings.Count(lines[0], `"procedure"`); n != 1 {
		t.Errorf("procedure appears %d times: %s", n, lines[0])
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"request_id": "req-1", "procedure": "/own/Value", "tenant": "t-1",
		"principal": map[string]any{"id": "key-1", "type": "tenant_key"},
	}
	for k, v := range want {
		gotJSON, _ := json.Marshal(got[k])
		wantJSON, _ := json.Marshal(v)
		if string(gotJSON) != string(wantJSON) {
			t.Errorf("%s = %s, want %s", k, gotJSON, wantJSON)
		}
	}
	if strings.Contains(lines[0], "secret name") {
		t.Error("the principal's name is logged; only id and type belong in the log")
	}
	if strings.Contains(lines[1], "request_id") {
		t.Errorf("a line outside a request has a request id: %s", lines[1])
	}
}

// TestNewRequestIDs checks that fresh request ids are valid ones, do not
// repeat, and carry random bits in every position (the last of each half
// holds four, so 16 values).
func TestNewRequestIDs(t *testing.T) {
	const n = 10000
	seen := map[string]bool{}
	var values [26]map[byte]bool
	for i := range values {
		values[i] = map[byte]bool{}
	}
	for range n {
		id := newRequestID()
		if len(id) != 26 || !validRequestID(id) {
			t.Fatalf("newRequestID() = %q, want 26 characters a request id may have", id)
		}
		if seen[id] {
			t.Fatalf("newRequestID() repeated %q within %d ids", id, n)
		}
		seen[id] = true
		for i := range id {
			values[i][id[i]] = true
		}
	}
	for i, v := range values {
		if len(v) < 16 {
			t.Errorf("position %d took %d values over %d ids, want at least 16", i, len(v), n)
		}
	}
}
