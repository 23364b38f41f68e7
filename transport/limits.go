package transport

import (
	"context"
	"time"

	"connectrpc.com/connect"
)

// deadlineInterceptor gives every unary RPC a deadline of at most timeout,
// whatever the caller asked for (Connect has already applied the caller's
// own Connect-Timeout-Ms or grpc-timeout to the context). The context
// reaches the database driver, so a request that runs out of time stops
// waiting on the database too, and no call holds a pooled connection
// forever. Streams are left to the caller's deadline: an export of a long
// chain may rightly take longer than any single call.
type deadlineInterceptor struct{ timeout time.Duration }

func (i deadlineInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	if i.timeout <= 0 {
		return next
	}
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if deadline, ok := ctx.Deadline(); !ok || time.Until(deadline) > i.timeout {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, i.timeout)
			defer cancel()
		}
		return next(ctx, req)
	}
}

func (i deadlineInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i deadlineInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// expired reports why ctx ended, if it did: its error, or, when the
// deadline has passed but the context's timer has not fired yet (a socket
// deadline set from the same instant can fire first), DeadlineExceeded.
func expired(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if deadline, ok := ctx.Deadline(); ok && !time.Now().Before(deadline) {
		return context.DeadlineExceeded
	}
	return nil
}
