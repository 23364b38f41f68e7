package domain

import (
	"context"
	"fmt"
	"testing"
)

func TestExportSlots(t *testing.T) {
	var s exportSlots
	take := func(log string, want bool) {
		t.Helper()
		err := s.take(log)
		if (err == nil) != want {
			total, ofLog := s.Held(log)
			t.Fatalf("take(%q) with %d running (%d of it): %v, want taken %v", log, total, ofLog, err, want)
		}
		if err != nil && ErrorKind(err) != KindResourceExhausted {
			t.Fatalf("take(%q): %v, want KindResourceExhausted", log, err)
		}
	}
	for range MaxExportsPerLog {
		take("a", true)
	}
	take("a", false)
	s.release("a")
	take("a", true)
	for i := MaxExportsPerLog; i < MaxExports; i++ {
		take(fmt.Sprint("log-", i/MaxExportsPerLog), true)
	}
	take("", false) // a log with none running: the server's bound
	s.release("log-1")
	take("", true)
	if s.total != MaxExports || len(s.byKey) != MaxExports/MaxExportsPerLog+1 {
		t.Fatalf("%d running in %d logs", s.total, len(s.byKey))
	}
	for log, n := range s.byKey {
		for range n {
			s.release(log)
		}
	}
	if s.total != 0 || len(s.byKey) != 0 {
		t.Fatalf("%d running in %d logs after every release", s.total, len(s.byKey))
	}
}

func TestNextExportLimit(t *testing.T) {
	tests := []struct {
		limit, n int
		cut      bool
		want     int
	}{
		{firstExportPage, firstExportPage, false, 2 * firstExportPage}, // full: twice as many
		{400, 400, false, exportPageSize},                              // never past exportPageSize
		{exportPageSize, exportPageSize, false, exportPageSize},
		{firstExportPage, 9, true, 18}, // cut at 9: ask for 18
		{exportPageSize, 1, true, 2},   // one event fills a page
		{2, 2, true, 4},                // cut at the limit itself
		{exportPageSize, 300, true, exportPageSize},
	}
	for _, tt := range tests {
		if got := nextExportLimit(tt.limit, tt.n, tt.cut); got != tt.want {
			t.Errorf("nextExportLimit(%d, %d, %v) = %d, want %d", tt.limit, tt.n, tt.cut, got, tt.want)
		}
	}
}

// TestReadBoundsAreTheReaders: the exports of a log that the platform's
// users run (or hold stalled) count against their own share of the log's
// bound, so the log's own tenant still exports it.
func TestReadBoundsAreTheReaders(t *testing.T) {
	var s exportSlots
	platform := WithCaller(context.Background(), Caller{Principal: Principal{ID: "admin", Type: PrincipalUser}})
	owner := WithCaller(context.Background(), Caller{Principal: Principal{ID: "k", Type: PrincipalTenantKey, TenantID: "b"}})
	for range MaxExportsPerLog {
		if err := s.take(ReaderLogKey(platform, "b")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.take(ReaderLogKey(platform, "b")); ErrorKind(err) != KindResourceExhausted {
		t.Fatalf("the platform's export past its share of the log: %v, want KindResourceExhausted", err)
	}
	if err := s.take(ReaderLogKey(owner, "b")); err != nil {
		t.Errorf("the log's own tenant's export while the platform holds its share: %v", err)
	}
}
