package transport

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"
)

// logInterceptor writes one line per RPC: procedure, protocol, code and
// duration. It never logs request bodies, which may hold secrets.
type logInterceptor struct{ log *slog.Logger }

func (i logInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		res, err := next(ctx, req)
		i.done(ctx, req.Spec().Procedure, req.Peer().Protocol, start, err)
		return res, err
	}
}

func (i logInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i logInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		err := next(ctx, conn)
		i.done(ctx, conn.Spec().Procedure, conn.Peer().Protocol, start, err)
		return err
	}
}

func (i logInterceptor) done(ctx context.Context, procedure, protocol string, start time.Time, err error) {
	code := "ok"
	level := slog.LevelInfo
	var ce *connect.Error
	if errors.As(err, &ce) {
		code = ce.Code().String()
		if ce.Code() == connect.CodeInternal || ce.Code() == connect.CodeUnknown {
			level = slog.LevelError
		}
	} else if err != nil {
		code = connect.CodeOf(err).String()
	}
	i.log.Log(ctx, level, "rpc", "procedure", procedure, "protocol", protocol, "code", code,
		"duration_ms", float64(time.Since(start).Microseconds())/1000)
}
