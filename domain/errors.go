package domain

import (
	"errors"
	"fmt"
	"strings"
)

// Kind classifies an error so that the transport can answer with the right
// status without knowing where the error came from.
type Kind int

// Error kinds, one per answer a caller can act on differently.
const (
	KindInternal           Kind = iota // anything unexpected; details stay in the log
	KindInvalid                        // the caller's input is wrong
	KindNotFound                       // the thing asked for does not exist
	KindAlreadyExists                  // a unique thing exists already
	KindFailedPrecondition             // the thing is in the wrong state for the request
	KindUnauthenticated                // no or bad credentials
	KindPermissionDenied               // credentials are good but not allowed to do this
	KindUnavailable                    // the database (or another dependency) cannot be reached
	KindResourceExhausted              // a size or rate bound was hit
	KindAborted                        // the thing changed since the caller read it (a stale etag)
)

// FieldViolation names one bad field of a request and why it is bad.
type FieldViolation struct {
	Field       string // proto field path, e.g. "metadata" or "slug"
	Description string
}

// Error is the error type of the domain: a kind, a message safe to show the
// caller, the bad fields for KindInvalid, and an optional wrapped cause that
// is logged but never shown.
type Error struct {
	Kind       Kind
	Message    string
	Violations []FieldViolation
	Cause      error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return e.Message + ": " + e.Cause.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Cause }

// Errorf returns an *Error of the given kind with a formatted message.
func Errorf(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error of the given kind whose message is msg and whose
// cause is err (kept for the log).
func Wrap(kind Kind, err error, msg string) *Error {
	return &Error{Kind: kind, Message: msg, Cause: err}
}

// ErrorKind returns the kind of err: the kind of the first *Error in its
// chain, or KindInternal.
func ErrorKind(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// Violations collects field violations and turns them into one
// KindInvalid error, so a caller learns about every bad field at once.
type Violations []FieldViolation

// Add records that field is bad because of the formatted description.
func (v *Violations) Add(field, format string, args ...any) {
	*v = append(*v, FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

// Err returns nil when nothing was recorded, and a KindInvalid *Error
// naming every bad field otherwise.
func (v Violations) Err() error {
	if len(v) == 0 {
		return nil
	}
	parts := make([]string, len(v))
	for i, f := range v {
		parts[i] = f.Field + ": " + f.Description
	}
	return &Error{Kind: KindInvalid, Message: "invalid request: " + strings.Join(parts, "; "), Violations: v}
}
