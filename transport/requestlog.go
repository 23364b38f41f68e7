package transport

import (
	"cmp"
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/tenant-registry/tenant-registry/domain"
)

// RequestIDHeader carries a request's id. A caller may send one (a proxy
// or another service passing its own along); the server answers with the
// id it used, so a caller can quote it when asking about a request.
const RequestIDHeader = "X-Request-Id"

// maxRequestIDLen bounds a caller's request id: it lands on every log line
// of the request, so it must stay short and harmless.
const maxRequestIDLen = 64

// requestInfo is what every log line of one request says about it. The
// HTTP middleware creates it before any interceptor runs, and the
// interceptors fill it in as they learn more (the procedure, then who is
// calling). It is shared through the context by pointer so that lines
// logged by outer layers, above all the per-RPC line of logInterceptor,
// carry what the inner callerInterceptor established.
type requestInfo struct {
	id string

	mu        sync.Mutex
	procedure string
	caller    loggedCaller
	// cut says why a handler ended its answer part-way with
	// http.ErrAbortHandler (a download whose file had begun).
	cut string
	// answered are run once the answer was written, taken or cut.
	answered []func()
}

// loggedCaller is what the log lines say of who is calling: never a
// credential, nor the rest of the principal.
type loggedCaller struct {
	known              bool
	id, kind, tenantID string
}

type requestInfoKey struct{}

func withRequestInfo(ctx context.Context, ri *requestInfo) context.Context {
	return context.WithValue(ctx, requestInfoKey{}, ri)
}

func requestInfoFrom(ctx context.Context) *requestInfo {
	ri, _ := ctx.Value(requestInfoKey{}).(*requestInfo)
	return ri
}

func (ri *requestInfo) setProcedure(procedure string) {
	ri.mu.Lock()
	ri.procedure = procedure
	ri.mu.Unlock()
}

func (ri *requestInfo) setPrincipal(p domain.Principal) {
	ri.mu.Lock()
	ri.caller = loggedCaller{known: true, id: p.ID, kind: p.Type, tenantID: p.TenantID}
	ri.mu.Unlock()
}

// setCut records why the handler is about to abort its answer.
func (ri *requestInfo) setCut(cause string) {
	ri.mu.Lock()
	ri.cut = cause
	ri.mu.Unlock()
}

// afterAnswer has f run once the request's answer was written, taken by
// its client or cut: what a handler returns Connect writes after it.
func (ri *requestInfo) afterAnswer(f func()) {
	ri.mu.Lock()
	ri.answered = append(ri.answered, f)
	ri.mu.Unlock()
}

// answer runs what afterAnswer left.
func (ri *requestInfo) answer() {
	ri.mu.Lock()
	answered := ri.answered
	ri.answered = nil
	ri.mu.Unlock()
	for _, f := range answered {
		f()
	}
}

func (ri *requestInfo) snapshot() (procedure string, c loggedCaller) {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	return ri.procedure, ri.caller
}

// validRequestID accepts at most 64 characters of [A-Za-z0-9._-]: enough
// for UUIDs and the ids of common proxies, and nothing that could forge a
// log line or a header.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// newRequestID returns a fresh request id: 26 characters of the base32
// alphabet, like crypto/rand.Text's, carrying 128 random bits. A request
// id only names a request (a caller may send its own), so it need not be
// unpredictable: math/rand/v2's generator makes it for a few nanoseconds,
// where crypto/rand took about a microsecond of every request.
func newRequestID() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	var id [26]byte
	for half := 0; half < 2; half++ {
		bits := rand.Uint64()
		for i := range 13 {
			id[half*13+i] = alphabet[bits&31]
			bits >>= 5
		}
	}
	return string(id[:])
}

// isProbe reports whether path is a health or readiness probe: probes come
// every few seconds and would drown the log, so they get no "http" line.
func isProbe(path string) bool {
	return path == "/healthz" || path == "/readyz" || strings.HasPrefix(path, "/grpc.health.v1.Health/")
}

// requestIDs gives every request an id: the caller's X-Request-Id when it
// is sane, a new random one otherwise. The id is returned in the response
// header and put into the context, where the log handler picks it up for
// every line of the request. Requests that no RPC line describes (unknown
// paths, requests Connect refuses before any interceptor runs,
// reflection) get an "http" line of their own, probes excepted. Most such
// requests are refusals (a stranger's junk, bodies refused before any
// interceptor runs), so these lines are sampled by status, and by gRPC
// status when the answer has one (gRPC refusals are HTTP 200).
func requestIDs(log *slog.Logger, samples *logSampler, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			id = newRequestID()
		}
		// One allocation for what every request needs: its log context,
		// its status and its id's header value.
		x := &struct {
			ri     requestInfo
			sw     statusWriter
			header [1]string
		}{ri: requestInfo{id: id}, header: [1]string{id}}
		w.Header()[RequestIDHeader] = x.header[:] // the name is canonical
		ri := &x.ri
		r = r.WithContext(withRequestInfo(r.Context(), ri))
		if isProbe(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		defer ri.answer()
		start := time.Now()
		sw := &x.sw
		sw.ResponseWriter = w
		defer func() {
			// A handler that aborts its answer part-way still gets its
			// line, saying why; the abort then goes on to net/http.
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					ri.mu.Lock()
					cut := ri.cut
					ri.mu.Unlock()
					httpLine(log, samples, r, sw, start, cmp.Or(cut, "aborted"))
				}
				panic(v)
			}
		}()
		next.ServeHTTP(sw, r)
		if procedure, _ := ri.snapshot(); procedure != "" {
			return // logInterceptor wrote the RPC's line
		}
		httpLine(log, samples, r, sw, start, "")
	})
}

// httpLine logs the "http" line of a request no RPC line describes,
// sampled by its status; cut, when not empty, says why its answer was
// ended part-way.
func httpLine(log *slog.Logger, samples *logSampler, r *http.Request, sw *statusWriter, start time.Time, cut string) {
	status := sw.status
	if status == 0 {
		status = http.StatusOK
	}
	level := slog.LevelInfo
	if status >= 500 || cut != "" {
		level = slog.LevelWarn
	}
	kind := strconv.Itoa(status)
	attrs := []any{"method", r.Method, "path", r.URL.Path, "status", status}
	if gs := grpcStatus(sw.Header()); gs != "" {
		kind += " grpc-status " + gs
		attrs = append(attrs, "grpc_status", gs)
	}
	if cut != "" {
		kind += " cut"
		attrs = append(attrs, "cut", cut)
	}
	if !samples.allow(sampleKey{msg: "http", code: kind}, failureLines, level) {
		return
	}
	log.Log(r.Context(), level, "http", append(attrs, "duration_ms", float64(time.Since(start).Microseconds())/1000)...)
}

// grpcStatus is the gRPC status of an answer: in its headers (gRPC-Web
// trailers-only) or its trailers (gRPC), as Connect sets them.
func grpcStatus(h http.Header) string {
	if s := h.Get("Grpc-Status"); s != "" {
		return s
	}
	return h.Get(http.TrailerPrefix + "Grpc-Status")
}

// statusWriter remembers the status of a response. It passes Flush on,
// which Connect's streaming needs, and Unwrap, which
// http.ResponseController uses to reach the connection's other features.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	flush(w.ResponseWriter)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// LogHandler wraps h so that every record logged with a request's context
// carries the request's id and, once known, its procedure, the principal
// (id and type only: never a credential) and the principal's tenant, plus
// the trace and span ids when the request is traced, so that logs and
// traces can be joined. Attributes a record already has are not repeated.
// Wrapping twice is harmless.
func LogHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(contextHandler); ok {
		return h
	}
	return contextHandler{h}
}

type contextHandler struct{ next slog.Handler }

// contextKeys are the attributes contextHandler adds.
var contextKeys = [...]string{"request_id", "procedure", "principal", "tenant", "trace_id", "span_id"}

func (h contextHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h contextHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return contextHandler{h.next.WithAttrs(attrs)}
}

func (h contextHandler) WithGroup(name string) slog.Handler {
	return contextHandler{h.next.WithGroup(name)}
}

func (h contextHandler) Handle(ctx context.Context, r slog.Record) error {
	ri := requestInfoFrom(ctx)
	sc := trace.SpanContextFromContext(ctx)
	if ri == nil && !sc.IsValid() {
		return h.next.Handle(ctx, r)
	}
	// Only the few keys this handler adds are looked for; a record names
	// them itself when it knows better (or when logged without a request).
	var has [len(contextKeys)]bool
	r.Attrs(func(a slog.Attr) bool {
		for i, k := range contextKeys {
			if a.Key == k {
				has[i] = true
			}
		}
		return true
	})
	// Clone: the record may be shared with other handlers, and adding to a
	// shared record's attributes could overwrite theirs.
	r = r.Clone()
	add := func(a slog.Attr) {
		for i, k := range contextKeys {
			if a.Key == k && has[i] {
				return
			}
		}
		r.AddAttrs(a)
	}
	if ri != nil {
		add(slog.String("request_id", ri.id))
		procedure, c := ri.snapshot()
		if procedure != "" {
			add(slog.String("procedure", procedure))
		}
		if c.known {
			add(slog.Group("principal", "id", c.id, "type", c.kind))
			add(slog.String("tenant", c.tenantID))
		}
	}
	if sc.IsValid() {
		add(slog.String("trace_id", sc.TraceID().String()))
		add(slog.String("span_id", sc.SpanID().String()))
	}
	return h.next.Handle(ctx, r)
}
