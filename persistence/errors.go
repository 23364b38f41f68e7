package persistence

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/uptrace/bun/driver/pgdriver"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/tenant-registry/tenant-registry/domain"
)

// dbError turns a database error into a domain error, for a statement
// that expects neither a missing row nor a duplicate (a list, an update, an
// upsert): a lost or refused connection becomes KindUnavailable, anything
// else KindInternal with the cause kept for the log. Domain errors and
// context errors pass through unchanged.
func dbError(err error) error { return translate(err, "not found", "already exists") }

// missingRowError is dbError for a read of one row: a missing row is
// KindNotFound, with notFound as its message.
func missingRowError(err error, notFound string) error {
	return translate(err, notFound, "already exists")
}

// duplicateError is dbError for a write a unique key may refuse: a
// violation is KindAlreadyExists, with exists as its message.
func duplicateError(err error, exists string) error {
	return translate(err, "not found", exists)
}

// translate is the mapping behind dbError, missingRowError and
// duplicateError, which name the answer their statement expects.
func translate(err error, notFound, exists string) error {
	var de *domain.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &de), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, sql.ErrNoRows):
		return domain.Wrap(domain.KindNotFound, err, notFound)
	case isUniqueViolation(err):
		return domain.Wrap(domain.KindAlreadyExists, err, exists)
	case isUnavailable(err):
		return domain.Wrap(domain.KindUnavailable, err, "the database is unavailable; try again")
	}
	return domain.Wrap(domain.KindInternal, err, "database error")
}

func isUniqueViolation(err error) bool {
	var pgErr pgdriver.Error
	if errors.As(err, &pgErr) {
		return pgErr.Field('C') == "23505"
	}
	var sqliteErr *sqlite.Error
	if errors.As(err, &sqliteErr) {
		code := sqliteErr.Code()
		return code == sqlite3.SQLITE_CONSTRAINT_UNIQUE || code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

func isUnavailable(err error) bool {
	var pgErr pgdriver.Error
	if errors.As(err, &pgErr) {
		code := pgErr.Field('C')
		// Class 08: connection exceptions; 57P0x: the server is shutting down
		// or starting; 53300: too many connections; 57014: the statement was
		// cancelled, by statement_timeout (see WithStatementTimeout) or by
		// an operator: the database did not answer in time.
		return strings.HasPrefix(code, "08") || strings.HasPrefix(code, "57P0") || code == "53300" || code == "57014"
	}
	var sqliteErr *sqlite.Error
	if errors.As(err, &sqliteErr) {
		code := sqliteErr.Code() & 0xff
		return code == sqlite3.SQLITE_BUSY || code == sqlite3.SQLITE_LOCKED
	}
	// pgdriver reports a connection the server ended while a query was on
	// its way (a restart, pg_terminate_backend) as a protocol error of its
	// own instead of the server's FATAL: the connection is gone either way.
	if msg := err.Error(); strings.Contains(msg, "pgdriver: ") && strings.Contains(msg, ": unexpected message ") {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, sql.ErrConnDone)
}
