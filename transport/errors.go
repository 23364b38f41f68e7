package transport

import (
	"context"
	"errors"
	"log/slog"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/tenant-registry/tenant-registry/domain"
)

// codes maps each domain error kind to the Connect code a caller sees.
var codes = map[domain.Kind]connect.Code{
	domain.KindInvalid:            connect.CodeInvalidArgument,
	domain.KindNotFound:           connect.CodeNotFound,
	domain.KindAlreadyExists:      connect.CodeAlreadyExists,
	domain.KindFailedPrecondition: connect.CodeFailedPrecondition,
	domain.KindUnauthenticated:    connect.CodeUnauthenticated,
	domain.KindPermissionDenied:   connect.CodePermissionDenied,
	domain.KindUnavailable:        connect.CodeUnavailable,
	domain.KindResourceExhausted:  connect.CodeResourceExhausted,
	domain.KindAborted:            connect.CodeAborted,
}

// connectError turns an error from a handler into the error the caller
// sees. Domain errors keep their message and, for invalid input, get a
// google.rpc.BadRequest detail naming each bad field. Anything else is
// logged and answered with a generic Internal error, so no detail of the
// server leaks to the caller.
func connectError(ctx context.Context, log *slog.Logger, procedure string, err error) error {
	var ce *connect.Error
	var de *domain.Error
	if kind := domain.ErrorKind(err); (kind == domain.KindInternal || kind == domain.KindUnavailable) && !errors.As(err, &ce) {
		// A request that ran out of time fails in whatever way the driver
		// noticed first (a socket timeout, an interrupted statement, a
		// cancelled query): it is the deadline, not a fault of the server
		// or of the database, and the caller should hear so.
		if cerr := expired(ctx); cerr != nil {
			err = cerr
		}
	}
	switch {
	case errors.As(err, &ce):
		return err // already meant for the caller (e.g. from Connect itself)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, errors.New("the request was canceled"))
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("the request's deadline passed"))
	case errors.As(err, &de) && de.Kind != domain.KindInternal:
		out := connect.NewError(codes[de.Kind], errors.New(shortened(de.Message, maxErrorMessage)))
		if de.Kind == domain.KindUnavailable {
			log.WarnContext(ctx, "dependency unavailable", "procedure", procedure, "error", err)
		}
		if len(de.Violations) > 0 {
			br := &errdetails.BadRequest{}
			for _, v := range de.Violations {
				br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
					Field: shortened(v.Field, maxErrorField), Description: shortened(v.Description, maxErrorField),
				})
			}
			if detail, derr := connect.NewErrorDetail(br); derr == nil {
				out.AddDetail(detail)
			}
		}
		return out
	}
	log.ErrorContext(ctx, "internal error", "procedure", procedure, "error", err)
	return connect.NewError(connect.CodeInternal, errors.New("internal error"))
}

// An error's message, and each field and description of its violations,
// is cut to these bytes: a message may quote what the caller sent (a
// stale etag), and a 4 MB request must not buy an 8 MB answer.
const (
	maxErrorMessage = 1 << 10
	maxErrorField   = 256
)

// shortened is s cut to at most max bytes, at a character boundary, and
// marked as cut.
func shortened(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const mark = "…"
	cut := max - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// errorInterceptor applies connectError to every handler's error, so
// handlers return domain errors and never build Connect errors themselves.
type errorInterceptor struct{ log *slog.Logger }

func (i errorInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		if err != nil {
			return nil, connectError(ctx, i.log, req.Spec().Procedure, err)
		}
		return res, nil
	}
}

func (i errorInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i errorInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := next(ctx, conn); err != nil {
			return connectError(ctx, i.log, conn.Spec().Procedure, err)
		}
		return nil
	}
}
