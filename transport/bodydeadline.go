package transport

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"connectrpc.com/connect"
)

// bodyDeadline gives every request body timeout to arrive, whole, from the
// moment its handler starts. http.Server has no such deadline of its own
// (ReadTimeout would also cut long export streams on HTTP/1.1, and HTTP/2
// has only the per-stream deadline set here), and Connect reads a unary
// body before any interceptor that applies a deadline runs: without this,
// a client sending a byte a second holds a handler goroutine and its
// buffers for as long as it likes.
//
// The deadline is set through http.ResponseController, so it works on
// HTTP/1.1 (the connection's read deadline: when it passes, the server
// answers and closes the connection) and on HTTP/2 (the stream's: the
// server answers and resets the unfinished stream) alike. It bounds the
// request body only: once the body has been read to its end the deadline
// is lifted (net/http lifts the connection's itself on HTTP/1.1 when it
// starts watching for the client hanging up; the HTTP/2 stream's timer is
// stopped here), so a long export stream is never cut by it.
func bodyDeadline(timeout time.Duration, next http.Handler) http.Handler {
	if timeout <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			// Only a ResponseWriter that cannot reach the connection
			// refuses; serve the request without the deadline rather
			// than not at all.
			next.ServeHTTP(w, r)
			return
		}
		r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc, timeout: timeout}
		next.ServeHTTP(w, r)
	})
}

// deadlineBody reads a request body under its deadline.
type deadlineBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	done    bool // read to its end, deadline lifted
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		if !b.done {
			b.done = true
			_ = b.rc.SetReadDeadline(time.Time{})
		}
	case errors.Is(err, os.ErrDeadlineExceeded):
		// Connect hands a *connect.Error to the caller as it is: say
		// what ran out, rather than a bare i/o timeout.
		err = connect.NewError(connect.CodeDeadlineExceeded,
			fmt.Errorf("the request body did not arrive within %s", b.timeout))
	}
	return n, err
}
