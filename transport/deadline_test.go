package transport

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"
)

// TestLazyDeadline: the deadline interceptor's context ends as a timed
// context would, whether or not anything waited on it, and starts its
// timer only when something does.
func TestLazyDeadline(t *testing.T) {
	const timeout = 30 * time.Millisecond
	cases := []struct {
		name string
		// run uses ctx (a lazyDeadline over parent) and returns the error
		// it ended with; cancel cancels parent.
		run     func(ctx context.Context, cancel context.CancelFunc) error
		want    error
		started bool // whether the timer had to start
	}{
		{"unwatched, past its deadline", func(ctx context.Context, _ context.CancelFunc) error {
			time.Sleep(2 * timeout)
			_, _ = ctx.Deadline()
			_ = ctx.Value(requestInfoKey{})
			return ctx.Err()
		}, context.DeadlineExceeded, false},
		{"unwatched, its caller gone", func(ctx context.Context, cancel context.CancelFunc) error {
			cancel()
			return ctx.Err()
		}, context.Canceled, false},
		{"watched", func(ctx context.Context, _ context.CancelFunc) error {
			<-ctx.Done()
			return ctx.Err()
		}, context.DeadlineExceeded, true},
		{"watched, its caller gone", func(ctx context.Context, cancel context.CancelFunc) error {
			done := ctx.Done()
			cancel()
			<-done
			return ctx.Err()
		}, context.Canceled, true},
		{"a derived context", func(ctx context.Context, _ context.CancelFunc) error {
			child, stop := context.WithCancel(ctx)
			defer stop()
			<-child.Done()
			return child.Err()
		}, context.DeadlineExceeded, true},
		{"a derived context, its caller gone", func(ctx context.Context, cancel context.CancelFunc) error {
			child, stop := context.WithTimeout(ctx, time.Hour)
			defer stop()
			cancel()
			<-child.Done()
			return child.Err()
		}, context.Canceled, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			parent, cancel := context.WithCancel(context.Background())
			defer cancel()
			lazy := &lazyDeadline{Context: parent, deadline: time.Now().Add(timeout)}
			defer lazy.release()
			ended := make(chan error, 1)
			go func() { ended <- tc.run(lazy, cancel) }()
			select {
			case err := <-ended:
				if !errors.Is(err, tc.want) {
					t.Errorf("ended with %v, want %v", err, tc.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("did not end")
			}
			if got := lazy.started.Load(); got != tc.started {
				t.Errorf("timer started: %v, want %v", got, tc.started)
			}
		})
	}
}

// TestLazyDeadlineDerivesWithoutGoroutines: contexts derived from it
// register with its timed context, as with any context of the standard
// library, instead of each watching it from a goroutine of its own.
func TestLazyDeadlineDerivesWithoutGoroutines(t *testing.T) {
	lazy := &lazyDeadline{Context: context.Background(), deadline: time.Now().Add(time.Hour)}
	defer lazy.release()
	before := runtime.NumGoroutine()
	var stops []context.CancelFunc
	for range 200 {
		_, stop := context.WithCancel(lazy)
		stops = append(stops, stop)
	}
	if grew := runtime.NumGoroutine() - before; grew > 20 {
		t.Errorf("200 derived contexts started %d goroutines", grew)
	}
	for _, stop := range stops {
		stop()
	}
}
