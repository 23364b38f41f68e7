package keyauth

import (
	"context"
	"errors"
	"net/http"

	"connectrpc.com/connect"
)

// Interceptor returns a connect-go interceptor for handlers that does what
// Middleware does: a call goes on with a good key's Identity in its
// context; others fail with Unauthenticated, PermissionDenied or, when the
// registry cannot be asked, Unavailable. Clients' calls pass untouched.
func (v *Verifier) Interceptor() connect.Interceptor { return interceptor{v} }

type interceptor struct{ v *Verifier }

func (i interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		id, err := i.v.Authenticate(ctx, req.Header().Get("Authorization"))
		if err != nil {
			return nil, connectError(err)
		}
		return next(WithIdentity(ctx, id), req)
	}
}

func (i interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		id, err := i.v.Authenticate(ctx, conn.RequestHeader().Get("Authorization"))
		if err != nil {
			return connectError(err)
		}
		return next(WithIdentity(ctx, id), conn)
	}
}

// connectError is the Connect error of a refusal, made per call: connect
// errors carry metadata and must not be shared.
func connectError(err error) *connect.Error {
	var d *Denied
	switch {
	case errors.As(err, &d) && d == denyMissing:
		return connect.NewError(connect.CodeUnauthenticated, errors.New("missing API key: send Authorization: Bearer bp_…"))
	case errors.As(err, &d) && d.Status == http.StatusForbidden:
		return connect.NewError(connect.CodePermissionDenied, errors.New(d.Error()))
	case errors.As(err, &d):
		return connect.NewError(connect.CodeUnauthenticated, errors.New(d.Error()))
	}
	return connect.NewError(connect.CodeUnavailable, ErrUnavailable)
}
