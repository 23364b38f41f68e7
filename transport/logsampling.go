package transport

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
)

// How log lines are sampled, so that log volume does not follow the
// request rate: neither a product's key checks nor a stranger's 401s,
// reset streams, refused bodies or junk write a line each. Within each
// window a kind of line is written in full up to its budget; the rest are
// counted, and one "log lines sampled" line per kind says how many were
// left out when the window ends. Metrics count every call either way.
const (
	// logWindow is the sampling window.
	logWindow = 10 * time.Second
	// failureLines is the budget of each kind of failure per window: an
	// RPC's code, a non-RPC request's HTTP status, the HTTP server's own
	// complaints, unavailable dependencies.
	failureLines = 20
	// hotPathLines is the budget of successful calls of each hot-path
	// procedure per window: products call these on every request they
	// serve, and a synchronous log write per call was a tenth of the
	// server's CPU.
	hotPathLines = 10
)

// hotPath are the procedures whose successes are sampled; every other
// successful RPC is logged in full. Products verify and check on every
// request they serve, and record their own events as they happen; each
// recorded event is in the audit log itself, with more than its log line
// would say.
var hotPath = map[string]bool{
	tenantregistryv1connect.ApiKeyServiceVerifyApiKeyProcedure:          true,
	tenantregistryv1connect.EntitlementServiceCheckEntitlementProcedure: true,
	tenantregistryv1connect.AuditServiceRecordAuditEventProcedure:       true,
}

// sampleKey names a kind of line: its message, and the code or status
// that sets it apart (and, for hot-path successes, the procedure).
type sampleKey struct {
	msg, procedure, code string
}

type sampleEntry struct {
	start      time.Time // of the current window
	logged     int       // lines written in full in it
	suppressed int       // lines left out since the last summary
	level      slog.Level
}

// logSampler decides which lines are written and writes the summaries.
type logSampler struct {
	log     *slog.Logger
	sampled *slog.Logger // log, its lines sampled by message

	// hot are the entries of the hot-path successes, by procedure, made
	// with the sampler: the hot path finds its entry without hashing a
	// sampleKey. Read-only; the entries are also in entries.
	hot map[string]*sampleEntry

	mu      sync.Mutex
	entries map[sampleKey]*sampleEntry
	timer   *time.Timer // armed while some line is left out

	suppressedTotal atomic.Uint64
}

func newLogSampler(log *slog.Logger) *logSampler {
	now := time.Now()
	s := &logSampler{log: log, entries: map[sampleKey]*sampleEntry{}, hot: map[string]*sampleEntry{}}
	for procedure := range hotPath {
		e := &sampleEntry{start: now}
		s.entries[sampleKey{msg: "rpc", procedure: procedure, code: "ok"}] = e
		s.hot[procedure] = e
	}
	s.sampled = slog.New(samplingHandler{Handler: log.Handler(), sampler: s})
	return s
}

// allow reports whether a line of kind k, at level, may be written now;
// when not, it is counted for the kind's summary.
func (s *logSampler) allow(k sampleKey, budget int, level slog.Level) bool {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[k]
	if e == nil {
		e = &sampleEntry{start: now}
		s.entries[k] = e
	}
	return s.allowLocked(e, budget, level, now)
}

// allowSuccess is allow for a successful call of procedure, at now:
// sampled on the hot path, always allowed elsewhere.
func (s *logSampler) allowSuccess(procedure string, now time.Time) bool {
	e := s.hot[procedure]
	if e == nil {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.allowLocked(e, hotPathLines, slog.LevelInfo, now)
}

func (s *logSampler) allowLocked(e *sampleEntry, budget int, level slog.Level, now time.Time) bool {
	if e.suppressed == 0 && now.Sub(e.start) >= logWindow {
		e.start, e.logged = now, 0
	}
	if e.logged < budget {
		e.logged++
		return true
	}
	e.suppressed++
	e.level = max(e.level, level)
	s.suppressedTotal.Add(1)
	if s.timer == nil {
		s.timer = time.AfterFunc(logWindow, s.flush)
	}
	return false
}

// flush writes a summary for every kind with lines left out, and gives
// those kinds a new window.
func (s *logSampler) flush() {
	type summary struct {
		k sampleKey
		e sampleEntry
	}
	var out []summary
	now := time.Now()
	s.mu.Lock()
	for k, e := range s.entries {
		if e.suppressed > 0 {
			out = append(out, summary{k, *e})
			e.start, e.logged, e.suppressed, e.level = now, 0, 0, 0
		}
	}
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.mu.Unlock()
	for _, o := range out {
		attrs := []slog.Attr{slog.String("line", o.k.msg)}
		if o.k.procedure != "" {
			attrs = append(attrs, slog.String("procedure", o.k.procedure))
		}
		if o.k.code != "" {
			attrs = append(attrs, slog.String("code", o.k.code))
		}
		attrs = append(attrs, slog.Int("logged", o.e.logged), slog.Int("suppressed", o.e.suppressed),
			slog.Float64("window_s", now.Sub(o.e.start).Seconds()))
		s.log.LogAttrs(context.Background(), o.e.level, "log lines sampled", attrs...)
	}
}

// suppressed returns how many lines were left out since start.
func (s *logSampler) suppressed() uint64 { return s.suppressedTotal.Load() }

// logger returns a logger whose lines are sampled as failures, each
// message a kind of its own (for lines of constant text: "dependency
// unavailable", "internal error", "not ready").
func (s *logSampler) logger() *slog.Logger { return s.sampled }

// kindLogger returns a logger whose lines are all sampled as one kind
// (for the HTTP server's own error log, whose lines name addresses).
func (s *logSampler) kindLogger(h slog.Handler, kind string) *slog.Logger {
	return slog.New(samplingHandler{Handler: h, sampler: s, kind: kind})
}

// samplingHandler passes records through a sampler: by message, or all
// as one kind.
type samplingHandler struct {
	slog.Handler
	sampler *logSampler
	kind    string // "": each message is a kind
}

func (h samplingHandler) Handle(ctx context.Context, r slog.Record) error {
	kind := h.kind
	if kind == "" {
		kind = r.Message
	}
	if !h.sampler.allow(sampleKey{msg: kind}, failureLines, r.Level) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h samplingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return samplingHandler{h.Handler.WithAttrs(attrs), h.sampler, h.kind}
}

func (h samplingHandler) WithGroup(name string) slog.Handler {
	return samplingHandler{h.Handler.WithGroup(name), h.sampler, h.kind}
}
