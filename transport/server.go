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
	"sync"
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
	// Addr is where the server listens: host:port or :port; port 0 picks
	// a free port (Server.Addr tells which).
	Addr string
	// AllowedOrigins are the browser origins allowed by CORS, exactly.
	AllowedOrigins []string
	// AllowLocalhostOrigins also allows any http://localhost:PORT and
	// http://127.0.0.1:PORT origin (the dev default).
	AllowLocalhostOrigins bool
	// OIDC says which access tokens to accept beside service keys; nil
	// turns authentication off (dev mode without an issuer): every call
	// then acts as DevPrincipal.
	OIDC *OIDCConfig
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

// DefaultConfig returns the limits a replica runs with when its operator
// sets none: what keeps it alive under slow, greedy or hostile clients.
// Addr, Ready and Logger have no default.
func DefaultConfig() Config {
	return Config{
		MaxMessageBytes:      4 << 20,
		ReadHeaderTimeout:    10 * time.Second,
		BodyReadTimeout:      10 * time.Second,
		MaxConcurrentStreams: 100,
		RequestTimeout:       30 * time.Second,
		ShutdownGrace:        20 * time.Second,
	}
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

// Backend is what the server serves: the domain's store and clock, the
// verifier of API keys (for VerifyApiKey and for callers presenting service
// keys), the change feed and the audit log's settings.
type Backend struct {
	Store    domain.Store
	Clock    domain.Clock
	Verifier *domain.KeyVerifier
	Changes  *domain.ChangeFeed
	Audit    domain.AuditSettings
}

// services are the handlers of the six services of the contract.
type services struct {
	Tenants      tenantregistryv1connect.TenantServiceHandler
	Catalog      tenantregistryv1connect.CatalogServiceHandler
	Entitlements tenantregistryv1connect.EntitlementServiceHandler
	ApiKeys      tenantregistryv1connect.ApiKeyServiceHandler
	Audit        *AuditServer
	// Changes is the change stream, which the server ends when it drains.
	Changes *ChangeServer
}

// newServices returns the handlers of every service over the domain
// services of b.
func newServices(b Backend) services {
	d := domain.NewServices(b.Store, b.Clock, b.Verifier, b.Changes, b.Audit)
	return services{
		Tenants:      NewTenantServer(d.Tenants),
		Catalog:      NewCatalogServer(d.Catalog),
		Entitlements: NewEntitlementServer(d.Entitlements),
		ApiKeys:      NewApiKeyServer(d.ApiKeys, b.Clock),
		Audit:        NewAuditServer(d.Audit),
		Changes:      NewChangeServer(d.Changes),
	}
}

// Server is the service's HTTP server: every protocol on one listener.
type Server struct {
	cfg       Config
	auth      *Authenticator // nil: authentication off
	ln        net.Listener
	http      *http.Server
	changes   *ChangeServer
	draining  atomic.Bool
	closeOnce sync.Once
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

// NewServer assembles the server over b as cfg says: authentication, the
// services behind their interceptors, gRPC health, reflection, /healthz,
// /readyz and the audit downloads, all behind CORS, in NewHTTPServer's
// http.Server. It listens on cfg.Addr at once, so that a taken port stops
// a start before anything is served. The binary and the tests get their
// servers here alike. Serve serves; Close releases what Serve did not run.
func NewServer(cfg Config, b Backend) (*Server, error) {
	cfg = cfg.prepared()
	svc := newServices(b)
	s := &Server{cfg: cfg, changes: svc.Changes}
	if cfg.OIDC != nil {
		s.auth = NewAuthenticator(*cfg.OIDC, b.Verifier)
	}
	caller := callerInterceptor{auth: s.auth, sources: sourceResolver{cfg.TrustedProxies}}
	opts := handlerOptions(cfg, caller)
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
	mux.Handle("GET /audit/export.csv", exportDownload{audit: svc.Audit.audit, caller: caller, log: cfg.Logger, csv: true})
	mux.Handle("GET /audit/export.ndjson", exportDownload{audit: svc.Audit.audit, caller: caller, log: cfg.Logger})
	text := auditText{audit: svc.Audit.audit, caller: caller, log: cfg.Logger}
	mux.HandleFunc("GET /audit/checkpoint", text.checkpoint)
	mux.HandleFunc("GET /audit/verifier-key", text.verifierKey)
	s.http = NewHTTPServer(cfg, mux)
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	s.ln = slowReaderListener{ln}
	return s, nil
}

// Addr returns the address the server listens on, as host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close releases what the server holds: its listener, when Serve has not
// closed it, and the authenticator's background work. Call it after Serve
// returned, or instead of Serve; calls after the first do nothing.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		if s.ln != nil {
			_ = s.ln.Close() // an error only says that Serve closed it already
		}
		if s.auth != nil {
			s.auth.Close()
		}
	})
}

// HandlerOptions are the Connect options of every handler of the server
// with authentication off: codecs, interceptors, message limit, panic
// recovery. They are exported so that the benchmark's baseline handlers
// get exactly the same. Authentication needs the Authenticator only
// NewServer owns: cfg.OIDC must be nil.
func HandlerOptions(cfg Config) connect.HandlerOption {
	if cfg.OIDC != nil {
		panic("transport: HandlerOptions serves without authentication; use NewServer")
	}
	cfg = cfg.prepared()
	return handlerOptions(cfg, callerInterceptor{sources: sourceResolver{cfg.TrustedProxies}})
}

// handlerOptions are HandlerOptions for a prepared cfg, with caller
// authenticating.
func handlerOptions(cfg Config, caller callerInterceptor) connect.HandlerOption {
	samples := cfg.samples
	interceptors := append(slices.Clone(cfg.Interceptors), logInterceptor{cfg.Logger, samples},
		deadlineInterceptor{cfg.RequestTimeout}, // outside errorInterceptor, which must see the deadline
		errorInterceptor{samples.logger()}, caller, answerHold{&domain.Budget{}})
	return connect.WithHandlerOptions(append(codecs,
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
	// A request's bytes have BodyReadTimeout to arrive; its answer's have
	// RequestTimeout each to be taken by the client.
	handler = exchangeDeadlines(cfg.BodyReadTimeout, cfg.RequestTimeout+cfg.BodyReadTimeout, cfg.RequestTimeout,
		privateReads(guardWire(handler)))
	return &http.Server{
		Handler:           newCORS(cfg).Handler(requestIDs(cfg.Logger, samples, handler)),
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

// Serve serves on the server's listener until ctx is done, then stops taking new work: /readyz
// and health turn not-ready, change streams end (their watchers reconnect
// elsewhere), requests are still served for ShutdownDelay, then the
// listener closes and in-flight requests get ShutdownGrace to finish. It
// returns nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context) error {
	defer s.cfg.samples.flush() // what sampling left out of the log, counted, before the process ends
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(s.ln) }()
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
