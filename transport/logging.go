package transport

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"
)

// logInterceptor writes one line per RPC: procedure, protocol, code and
// duration; LogHandler adds the request id, the principal and the tenant,
// which callerInterceptor, running inside this one, records on the
// request's log context. It never logs request bodies or headers, which
// may hold secrets. Failures and hot-path successes are sampled (see
// logWindow): each kind is written in full up to its budget per window,
// and counted beyond it.
type logInterceptor struct {
	log     *slog.Logger
	samples *logSampler
}

func (i logInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		ctx = beginRPC(ctx, req.Spec().Procedure)
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
		ctx = beginRPC(ctx, conn.Spec().Procedure)
		err := next(ctx, conn)
		i.done(ctx, conn.Spec().Procedure, conn.Peer().Protocol, start, err)
		return err
	}
}

// beginRPC records the procedure on the request's log context, so that
// every line logged while serving it names the procedure.
func beginRPC(ctx context.Context, procedure string) context.Context {
	ri := requestInfoFrom(ctx)
	if ri == nil { // served without Server's HTTP middleware
		ri = &requestInfo{id: newRequestID()}
		ctx = withRequestInfo(ctx, ri)
	}
	ri.setProcedure(procedure)
	return ctx
}

func (i logInterceptor) done(ctx context.Context, procedure, protocol string, start time.Time, err error) {
	code := "ok"
	level := slog.LevelInfo
	now := time.Now()
	if err == nil {
		if !i.samples.allowSuccess(procedure, now) {
			return
		}
	} else {
		var ce *connect.Error // declared here: its address escapes, and a success needs none
		if errors.As(err, &ce) {
			code = ce.Code().String()
			if ce.Code() == connect.CodeInternal || ce.Code() == connect.CodeUnknown {
				level = slog.LevelError
			}
		} else {
			code = connect.CodeOf(err).String()
		}
		if !i.samples.allow(sampleKey{msg: "rpc", code: code}, failureLines, level) {
			return
		}
	}
	i.log.Log(ctx, level, "rpc", "procedure", procedure, "protocol", protocol, "code", code,
		"duration_ms", float64(now.Sub(start).Microseconds())/1000)
}
