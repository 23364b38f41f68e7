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

// answerDeadline gives every answer a deadline to be taken by its client.
// A client that stops taking an answer (an HTTP/2 stream window it never
// opens, a TCP window at zero) would otherwise hold the handler, its
// buffers and its stream for as long as it likes: Go's server waits for
// flow-control credit without end, and a request's deadline does not end
// that wait. The first deadline is first after the handler starts (the
// handler's own time, then the answer); each write moves it to each from
// then, once half of each has gone by, so a stream whose client keeps
// reading (an export, the change stream) is never cut, and one whose
// client stops is, each after its last write. Past the deadline an
// HTTP/1.1 connection is closed and an HTTP/2 stream reset.
func answerDeadline(first, each time.Duration, next http.Handler) http.Handler {
	if first <= 0 || each <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		until := time.Now().Add(first)
		if err := rc.SetWriteDeadline(until); err != nil {
			next.ServeHTTP(w, r) // as for the body deadline: rather without it than not at all
			return
		}
		next.ServeHTTP(&deadlineWriter{ResponseWriter: w, rc: rc, each: each, until: until}, r)
	})
}

// deadlineWriter moves its answer's write deadline as it is written.
type deadlineWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	each  time.Duration
	until time.Time
}

// extend moves the deadline to each from now once half of each has
// passed since it was last moved: a unary answer sets it once.
func (w *deadlineWriter) extend() {
	if now := time.Now(); w.until.Sub(now) < w.each/2 {
		w.until = now.Add(w.each)
		_ = w.rc.SetWriteDeadline(w.until)
	}
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	w.extend()
	return w.ResponseWriter.Write(b)
}

// Flush passes Flush on, which Connect's streaming needs.
func (w *deadlineWriter) Flush() {
	w.extend()
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
