package persistence

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tenant-registry/tenant-registry/domain"
)

// timeoutErr is a network timeout, as a socket deadline produces.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestDBErrorKinds(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want domain.Kind
	}{
		{"no rows", sql.ErrNoRows, domain.KindNotFound},
		{"connection refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, domain.KindUnavailable},
		{"connection reset", fmt.Errorf("read: %w", syscall.ECONNRESET), domain.KindUnavailable},
		{"socket deadline", timeoutErr{}, domain.KindUnavailable},
		{"end of file", io.EOF, domain.KindUnavailable},
		{"bad connection", driver.ErrBadConn, domain.KindUnavailable},
		{"connection done", sql.ErrConnDone, domain.KindUnavailable},
		// pgdriver's report of a connection the server ended mid-query.
		{"protocol desync", errors.New("pgdriver: Exec: unexpected message '\\x00'"), domain.KindUnavailable},
		{"anything else", errors.New("pgdriver: can't encode"), domain.KindInternal},
	}
	for _, tc := range tests {
		if got := domain.ErrorKind(dbError(tc.err)); got != tc.want {
			t.Errorf("%s: kind %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, err := range []error{context.Canceled, context.DeadlineExceeded} {
		if got := dbError(err); got != err {
			t.Errorf("dbError(%v) = %v, want it unchanged", err, got)
		}
	}
}

// The helpers for the statements that expect a missing row or a duplicate
// answer it with their message, and anything else as dbError does.
func TestExpectedAnswers(t *testing.T) {
	var missing *domain.Error
	if !errors.As(missingRowError(sql.ErrNoRows, domain.TenantNotFoundMessage), &missing) ||
		missing.Kind != domain.KindNotFound || missing.Message != domain.TenantNotFoundMessage {
		t.Errorf("missingRowError(no rows) = %v, want KindNotFound %q", missing, domain.TenantNotFoundMessage)
	}
	if got := domain.ErrorKind(missingRowError(driver.ErrBadConn, "x")); got != domain.KindUnavailable {
		t.Errorf("missingRowError(bad connection): kind %v, want Unavailable", got)
	}
	if got := domain.ErrorKind(duplicateError(io.EOF, "x")); got != domain.KindUnavailable {
		t.Errorf("duplicateError(EOF): kind %v, want Unavailable", got)
	}
	if got := duplicateError(context.Canceled, "x"); got != context.Canceled {
		t.Errorf("duplicateError(%v) = %v, want it unchanged", context.Canceled, got)
	}
}

// A mistyped DATABASE_URL must stop the start with an error that names the
// problem, not crash with a panic whose message holds the password.
func TestOpenRefusesBadPostgresURLs(t *testing.T) {
	tests := []struct{ url, want string }{
		{"postgres://registry:s3cret@db:notaport/registry", "invalid port"},
		{"postgres://registry:s3cret@db/registry?sslmode=sometimes", "sslmode"},
		{"postgres://registry:s3cret@db/registry?timeout=soon", "timeout"},
	}
	for _, tc := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		db, err := Open(ctx, tc.url)
		cancel()
		if err == nil {
			db.Close()
			t.Errorf("Open(%q) succeeded", tc.url)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Open(%q) = %q, want an error about %s without the password", tc.url, err, tc.want)
		}
	}
}

func TestWithStatementTimeout(t *testing.T) {
	tests := []struct{ dsn, want string }{
		{"postgres://u@db/r?sslmode=disable", "postgres://u@db/r?sslmode=disable&statement_timeout=31000"},
		{"postgres://u@db/r", "postgres://u@db/r?statement_timeout=31000"},
		{"postgres://u@db/r?statement_timeout=5000", "postgres://u@db/r?statement_timeout=5000"}, // the URL's own wins
	}
	for _, tc := range tests {
		if got := withStatementTimeout(tc.dsn, 31*time.Second); got != tc.want {
			t.Errorf("withStatementTimeout(%q) = %q, want %q", tc.dsn, got, tc.want)
		}
	}
}
