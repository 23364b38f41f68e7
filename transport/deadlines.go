package transport

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
)

// exchangeDeadlines gives every request body time body to arrive, whole,
// from the moment its handler starts, and every answer time to be taken
// by its client: first from the start, then each from its last write
// (first is at least each).
//
// http.Server has no such deadlines of its own. ReadTimeout would also cut
// long export streams on HTTP/1.1, HTTP/2 has only per-stream deadlines,
// and Connect reads a unary body before any interceptor that applies a
// deadline runs: without the body's, a client sending a byte a second
// holds a handler goroutine and its buffers for as long as it likes.
// Without the answer's, a client that stops taking an answer (an HTTP/2
// stream window it never opens, a TCP window at zero) holds the handler,
// its buffers and its stream: Go's server waits for flow-control credit
// without end, and a request's deadline does not end that wait. A stream
// whose client keeps reading (an export, the change stream) is never cut.
//
// Deadlines reach the connection through http.ResponseController: on
// HTTP/1.1 the connection's (past one, the server closes the connection),
// on HTTP/2 the stream's (past one, the server resets the stream).
// Setting one costs HTTP/1.1 an update of the connection's timer, but
// HTTP/2 a message to the connection's serving goroutine and a timer
// there. So a timer of the exchange's own watches the deadlines, and a
// read or write deadline, one in the past, is set only when one passes:
// the body's always; the answer's on HTTP/2. An HTTP/1.1 answer gets a
// real write deadline when its handler starts, as it is cheap there, and
// an HTTP/2 answer gets one when its handler returns with bytes still
// buffered (a Connect unary answer, which net/http writes after the
// handler returned, out of the timer's reach).
func exchangeDeadlines(body, first, each time.Duration, next http.Handler) http.Handler {
	if body <= 0 && (first <= 0 || each <= 0) {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x := &exchange{w: w, start: time.Now(), body: body, each: each}
		x.reader.x, x.writer.x = x, x
		hasBody := body > 0 && r.Body != nil && r.Body != http.NoBody
		if hasBody {
			x.bodyDue = body
		}
		if first > 0 && each > 0 {
			if r.ProtoMajor == 2 {
				x.answerDue = first
			} else if x.setWriteDeadline(first) {
				x.real = true
			}
		}
		if hasBody {
			x.reader.ReadCloser = r.Body
			r.Body = &x.reader
		}
		if x.real || x.answerDue > 0 {
			x.writer.ResponseWriter = w
			w = &x.writer
		}
		if x.due() > 0 {
			x.mu.Lock() // expire, however soon it runs, finds the timer set
			x.timer = time.AfterFunc(x.due(), x.expire)
			x.mu.Unlock()
			defer x.finish()
		}
		next.ServeHTTP(w, r)
	})
}

// past is a deadline that has passed: how a ResponseController is told to
// end a read or a write now.
var past = time.Unix(1, 0)

// exchange is one request and its answer under their deadlines. Durations
// are since start; a due of zero is not (or no longer) watched.
type exchange struct {
	w     http.ResponseWriter
	start time.Time
	timer *time.Timer
	body  time.Duration // the body's bound, for its error message
	each  time.Duration

	// The request's body and the answer's writer under the deadlines,
	// made with the exchange.
	reader deadlineBody
	writer deadlineWriter

	// Kept by the handler's goroutine only.
	real    bool          // the answer has a real write deadline (HTTP/1.1)
	until   time.Duration // the real write deadline
	pending bool          // written since the last flush

	bodyRead  atomic.Bool  // the body was read to its end
	lastWrite atomic.Int64 // when the last write started

	mu        sync.Mutex // held by expire and finish: w is not touched once the handler returned
	done      bool
	bodyDue   time.Duration
	answerDue time.Duration
}

// setWriteDeadline sets a real write deadline d from now.
func (x *exchange) setWriteDeadline(d time.Duration) bool {
	now := time.Since(x.start)
	if http.NewResponseController(x.w).SetWriteDeadline(x.start.Add(now+d)) != nil {
		// Only a ResponseWriter that cannot reach the connection refuses:
		// serve the request without the deadline, rather than not at all.
		return false
	}
	x.until = now + d
	return true
}

// wrote is told when a write of the answer starts.
func (x *exchange) wrote() {
	now := time.Since(x.start)
	if x.real {
		// Moved once an eighth of each has passed since it was last
		// moved, so a write that starts has at least seven eighths of each
		// to finish; a unary answer, written at once, sets it once.
		if x.until-now < x.each-x.each/8 {
			x.setWriteDeadline(x.each)
		}
		return
	}
	x.lastWrite.Store(int64(now))
}

// due is how long from the start until the first deadline watched.
func (x *exchange) due() time.Duration {
	switch {
	case x.bodyDue == 0:
		return x.answerDue
	case x.answerDue == 0:
		return x.bodyDue
	}
	return min(x.bodyDue, x.answerDue)
}

// expire runs when the timer fires: it ends what is overdue and sets the
// timer for what is still watched.
func (x *exchange) expire() {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.done {
		return
	}
	now := time.Since(x.start)
	if x.bodyDue > 0 && now >= x.bodyDue {
		if !x.bodyRead.Load() {
			_ = http.NewResponseController(x.w).SetReadDeadline(past)
		}
		x.bodyDue = 0
	}
	if x.answerDue > 0 && now >= x.answerDue {
		if due := time.Duration(x.lastWrite.Load()) + x.each; due > now {
			x.answerDue = due // written since: each from that write
		} else {
			_ = http.NewResponseController(x.w).SetWriteDeadline(past)
			x.answerDue = 0
		}
	}
	if due := x.due(); due > 0 {
		x.timer.Reset(due - now)
	}
}

// finish ends the watch when the handler returns. What the handler left
// buffered, net/http writes after it: on HTTP/2 that gets a real write
// deadline here.
func (x *exchange) finish() {
	x.mu.Lock()
	x.done = true
	watched := x.answerDue > 0
	x.mu.Unlock()
	x.timer.Stop()
	if watched && x.pending {
		x.setWriteDeadline(x.each)
	}
}

// deadlineBody reads a request body under its deadline.
type deadlineBody struct {
	io.ReadCloser
	x *exchange
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		b.x.bodyRead.Store(true)
	case errors.Is(err, os.ErrDeadlineExceeded):
		// Connect hands a *connect.Error to the caller as it is: say
		// what ran out, rather than a bare i/o timeout.
		err = connect.NewError(connect.CodeDeadlineExceeded,
			fmt.Errorf("the request body did not arrive within %s", b.x.body))
	}
	return n, err
}

// deadlineWriter tells its exchange of each write of the answer.
type deadlineWriter struct {
	http.ResponseWriter
	x *exchange
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	w.x.wrote()
	w.x.pending = true
	return w.ResponseWriter.Write(b)
}

// Flush passes Flush on, which Connect's streaming needs.
func (w *deadlineWriter) Flush() {
	w.x.wrote()
	flush(w.ResponseWriter)
	w.x.pending = false
}

// Unwrap lets http.ResponseController reach the connection.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// flush flushes w, directly when it can (net/http's writers can) rather
// than through a ResponseController made for the purpose.
func flush(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
		return
	}
	_ = http.NewResponseController(w).Flush()
}
