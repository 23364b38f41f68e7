// Package transport serves the domain over Connect: handlers that convert
// between proto messages and domain types, interceptors, error mapping and
// the HTTP server that speaks Connect, gRPC and gRPC-Web on one port.
package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	connectcors "connectrpc.com/cors"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/rs/cors"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
)

// Config is how the server is set up.
type Config struct {
	// AllowedOrigins are the browser origins allowed by CORS, exactly.
	AllowedOrigins []string
	// AllowLocalhostOrigins also allows any http://localhost:PORT and
	// http://127.0.0.1:PORT origin (the dev default).
	AllowLocalhostOrigins bool
	// Auth authenticates callers; nil turns authentication off (dev mode
	// without an issuer): every call then acts as DevPrincipal.
	Auth *Authenticator
	// TrustedProxies are the proxies whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// MaxMessageBytes bounds a request message; larger ones get ResourceExhausted.
	MaxMessageBytes int
	// ReadHeaderTimeout bounds how long a client may take to send headers.
	ReadHeaderTimeout time.Duration
	// BodyReadTimeout bounds how long a client may take to send a request
	// body, from the moment its handler starts; zero: no bound.
	BodyReadTimeout time.Duration
	// MaxConcurrentStreams bounds the HTTP/2 streams a client may have
	// open on one connection; zero: Go's default (250).
	MaxConcurrentStreams int
	// ShutdownGrace is how long in-flight requests may take after SIGTERM.
	ShutdownGrace time.Duration
	// ShutdownDelay is how long the server keeps serving, not ready, after
	// SIGTERM before it closes its listener, so that load balancers see
	// /readyz fail and stop sending traffic before connections are refused.
	ShutdownDelay time.Duration
	// RequestTimeout is the deadline of a unary RPC whose caller set none
	// or a later one; zero leaves the caller's deadline alone.
	RequestTimeout time.Duration
	// Ready reports whether the server can serve: the database answers and
	// its schema is current.
	Ready  func(context.Context) error
	Logger *slog.Logger
	// Interceptors run around every RPC, outside the server's own (so
	// that OpenTelemetry's span covers them and their log lines carry its
	// trace id); empty when telemetry is off.
	Interceptors []connect.Interceptor

	samples *logSampler // set by prepared
}

// prepared returns cfg as the server's parts use it: its Logger adds each
// request's attributes (LogHandler), and it has a log sampler. NewServer
// prepares once, so that its handlers and its HTTP layer share one
// sampler; handlers and HTTP servers assembled on their own (the
// benchmark's baseline) get one each. Preparing again changes nothing.
func (cfg Config) prepared() Config {
	if cfg.samples == nil {
		cfg.Logger = slog.New(LogHandler(cfg.Logger.Handler()))
		cfg.samples = newLogSampler(cfg.Logger)
	}
	return cfg
}

// Services are the handlers of the six services of the contract.
type Services struct {
	Tenants      tenantregistryv1connect.TenantServiceHandler
	Catalog      tenantregistryv1connect.CatalogServiceHandler
	Entitlements tenantregistryv1connect.EntitlementServiceHandler
	ApiKeys      tenantregistryv1connect.ApiKeyServiceHandler
	Audit        *AuditServer
	// Changes is the change stream, which the server ends when it drains.
	Changes *ChangeServer
}

// NewServices returns the handlers of every service over the domain
// services persisting to store; keys verify through verifier; the change
// stream tells what feed delivers; the audit log is kept as audit says.
func NewServices(store domain.Store, now domain.Clock, verifier *domain.KeyVerifier, feed *domain.ChangeFeed, audit domain.AuditSettings) Services {
	d := domain.NewServices(store, now, verifier, feed, audit)
	return Services{
		Tenants:      NewTenantServer(d.Tenants),
		Catalog:      NewCatalogServer(d.Catalog),
		Entitlements: NewEntitlementServer(d.Entitlements),
		ApiKeys:      NewApiKeyServer(d.ApiKeys, now),
		Audit:        NewAuditServer(d.Audit),
		Changes:      NewChangeServer(d.Changes),
	}
}

// Server is the service's HTTP server: every protocol on one listener.
type Server struct {
	cfg      Config
	http     *http.Server
	changes  *ChangeServer
	draining atomic.Bool
}

// serviceNames are the services announced by health and reflection.
var serviceNames = []string{
	tenantregistryv1connect.TenantServiceName,
	tenantregistryv1connect.CatalogServiceName,
	tenantregistryv1connect.EntitlementServiceName,
	tenantregistryv1connect.ApiKeyServiceName,
	tenantregistryv1connect.AuditServiceName,
	tenantregistryv1connect.ChangeServiceName,
}

// NewServer assembles the server: the services behind their interceptors,
// gRPC health, reflection, /healthz and /readyz, all behind CORS.
func NewServer(cfg Config, svc Services) *Server {
	cfg = cfg.prepared()
	s := &Server{cfg: cfg, changes: svc.Changes}
	opts := HandlerOptions(cfg)
	mux := http.NewServeMux()
	mux.Handle(tenantregistryv1connect.NewTenantServiceHandler(svc.Tenants, opts))
	mux.Handle(tenantregistryv1connect.NewCatalogServiceHandler(svc.Catalog, opts))
	mux.Handle(tenantregistryv1connect.NewEntitlementServiceHandler(svc.Entitlements, opts))
	mux.Handle(tenantregistryv1connect.NewApiKeyServiceHandler(svc.ApiKeys, opts))
	mux.Handle(tenantregistryv1connect.NewAuditServiceHandler(svc.Audit, opts))
	mux.Handle(NewChangeServiceHandler(svc.Changes, opts))
	mux.Handle(grpchealth.NewHandler(healthChecker{s}))
	reflector := grpcreflect.NewStaticReflector(append([]string{grpchealth.HealthV1ServiceName}, serviceNames...)...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	caller := callerInterceptor{auth: cfg.Auth, sources: sourceResolver{cfg.TrustedProxies}}
	mux.Handle("GET /audit/export.csv", exportDownload{audit: svc.Audit.audit, caller: caller, log: cfg.Logger, csv: true})
	mux.Handle("GET /audit/export.ndjson", exportDownload{audit: svc.Audit.audit, caller: caller, log: cfg.Logger})
	text := auditText{audit: svc.Audit.audit, caller: caller, log: cfg.Logger}
	mux.HandleFunc("GET /audit/checkpoint", text.checkpoint)
	mux.HandleFunc("GET /audit/verifier-key", text.verifierKey)
	s.http = NewHTTPServer(cfg, mux)
	return s
}

// HandlerOptions are the Connect options of every handler of the server:
// codecs, interceptors, message limit, panic recovery. They are exported
// so that the benchmark's baseline handlers get exactly the same.
func HandlerOptions(cfg Config) connect.HandlerOption {
	cfg = cfg.prepared()
	samples := cfg.samples
	interceptors := append(slices.Clone(cfg.Interceptors), logInterceptor{cfg.Logger, samples},
		deadlineInterceptor{cfg.RequestTimeout}, // outside errorInterceptor, which must see the deadline
		errorInterceptor{samples.logger()}, callerInterceptor{auth: cfg.Auth, sources: sourceResolver{cfg.TrustedProxies}})
	return connect.WithHandlerOptions(append(strictJSONCodecs,
		connect.WithInterceptors(interceptors...),
		connect.WithReadMaxBytes(cfg.MaxMessageBytes),
		compression(cfg.MaxMessageBytes),
		connect.WithRecover(recovered(samples.logger())),
	)...)
}

// NewHTTPServer returns the http.Server that serves handler behind CORS,
// with the server's protocols, timeouts and limits. It is exported so that
// the benchmark's baseline server runs with exactly the same settings.
func NewHTTPServer(cfg Config, handler http.Handler) *http.Server {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // gRPC without TLS, on the same port
	cfg = cfg.prepared()
	samples := cfg.samples
	return &http.Server{
		Handler:           newCORS(cfg).Handler(requestIDs(cfg.Logger, samples, bodyDeadline(cfg.BodyReadTimeout, guardWire(handler)))),
		Protocols:         protocols,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// Go's HTTP/2 server runs a handler per open stream: the stream
		// bound is the bound on one connection's handlers.
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: cfg.MaxConcurrentStreams},
		// Its complaints (a junk preface, a protocol error) come at a
		// stranger's rate: sampled, as one kind.
		ErrorLog: slog.NewLogLogger(samples.kindLogger(cfg.Logger.Handler(), "http server").Handler(), slog.LevelWarn),
	}
}

// newCORS allows the configured browser origins to call every protocol,
// with the header lists connect-es and gRPC-Web clients need, Authorization
// included for bearer tokens.
func newCORS(cfg Config) *cors.Cors {
	allowed := map[string]bool{}
	for _, o := range cfg.AllowedOrigins {
		allowed[o] = true
	}
	return cors.New(cors.Options{
		AllowOriginFunc: func(origin string) bool {
			return allowed[origin] || (cfg.AllowLocalhostOrigins && isLocalhostOrigin(origin))
		},
		AllowedMethods: connectcors.AllowedMethods(),
		AllowedHeaders: append(connectcors.AllowedHeaders(), "Authorization"),
		ExposedHeaders: append(connectcors.ExposedHeaders(), RequestIDHeader, "Content-Disposition"),
		MaxAge:         7200,
	})
}

func isLocalhostOrigin(origin string) bool {
	for _, prefix := range []string{"http://localhost", "http://127.0.0.1", "http://[::1]"} {
		if rest, ok := strings.CutPrefix(origin, prefix); ok && (rest == "" || strings.HasPrefix(rest, ":")) {
			return true
		}
	}
	return false
}

// ready reports whether the server should get traffic: not while draining,
// and only while its database is ready.
func (s *Server) ready(ctx context.Context) error {
	if s.draining.Load() {
		return errors.New("shutting down")
	}
	return s.cfg.Ready(ctx)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.ready(r.Context()); err != nil {
		s.cfg.samples.logger().WarnContext(r.Context(), "not ready", "error", err)
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// healthChecker answers grpc.health.v1 from the same readiness as /readyz.
type healthChecker struct{ s *Server }

func (h healthChecker) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	if req.Service != "" && req.Service != grpchealth.HealthV1ServiceName && !slices.Contains(serviceNames, req.Service) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %q", req.Service))
	}
	if h.s.ready(ctx) != nil {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

// recovered turns a handler panic into Internal for the caller and a log line.
func recovered(log *slog.Logger) func(context.Context, connect.Spec, http.Header, any) error {
	return func(ctx context.Context, spec connect.Spec, _ http.Header, p any) error {
		log.ErrorContext(ctx, "panic in handler", "procedure", spec.Procedure, "panic", p)
		return connect.NewError(connect.CodeInternal, errors.New("internal error"))
	}
}

// Serve serves on ln until ctx is done, then stops taking new work: /readyz
// and health turn not-ready, change streams end (their watchers reconnect
// elsewhere), requests are still served for ShutdownDelay, then the
// listener closes and in-flight requests get ShutdownGrace to finish. It
// returns nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	defer s.cfg.samples.flush() // what sampling left out of the log, counted, before the process ends
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.draining.Store(true)
	s.changes.Close()
	if s.cfg.ShutdownDelay > 0 {
		// HTTP/1.1 answers now carry "Connection: close", so keep-alive
		// clients reconnect, through the load balancer, to another replica.
		s.http.SetKeepAlivesEnabled(false)
		s.cfg.Logger.Info("draining: not ready, closing the listener after the shutdown delay", "delay", s.cfg.ShutdownDelay)
		select {
		case <-time.After(s.cfg.ShutdownDelay):
		case err := <-errc:
			return err
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownGrace)
	defer cancel()
	if err := s.http.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// SuppressedLogLines returns how many log lines sampling has left out
// since start (each counted in a "log lines sampled" line).
func (s *Server) SuppressedLogLines() uint64 { return s.cfg.samples.suppressed() }
