package transport

import (
	"context"
	"sync"
	"sync/atomic"
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
			lazy := &lazyDeadline{Context: ctx, deadline: time.Now().Add(i.timeout)}
			defer lazy.release()
			ctx = lazy
		}
		return next(ctx, req)
	}
}

// lazyDeadline is a context with a deadline whose timer starts only once
// something waits for it to end (Done, a derived context, AfterFunc). Most
// calls that pass through the deadline interceptor never wait on anything
// (a key verified from the cache): they need not pay for a timer, a
// context of their own and its registration with the request's. Until the
// timer starts, Err reads the deadline off the clock, so the context ends
// at the same instant either way.
type lazyDeadline struct {
	context.Context // the caller's
	deadline        time.Time

	once    sync.Once
	started atomic.Bool
	timed   context.Context // context.WithDeadline(Context, deadline), once started
	stop    context.CancelFunc
}

func (c *lazyDeadline) start() context.Context {
	c.once.Do(func() {
		c.timed, c.stop = context.WithDeadline(c.Context, c.deadline)
		c.started.Store(true)
	})
	return c.timed
}

// release stops the timer, if it started.
func (c *lazyDeadline) release() {
	if c.started.Load() {
		c.stop()
	}
}

func (c *lazyDeadline) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *lazyDeadline) Done() <-chan struct{} { return c.start().Done() }

func (c *lazyDeadline) Err() error {
	if c.started.Load() {
		return c.timed.Err()
	}
	if err := c.Context.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// Value asks the started context once there is one, so that a context
// derived after Done finds the timed one as its parent (and registers with
// it, instead of watching it from a goroutine).
func (c *lazyDeadline) Value(key any) any {
	if c.started.Load() {
		return c.timed.Value(key)
	}
	return c.Context.Value(key)
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
