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
	// ShutdownGrace is how long in-flight requests may take after SIGTERM.
	ShutdownGrace time.Duration
	// Ready reports whether the server can serve: the database answers and
	// its schema is current.
	Ready  func(context.Context) error
	Logger *slog.Logger
}

// Services are the handlers of the five services of the contract.
type Services struct {
	Tenants      tenantregistryv1connect.TenantServiceHandler
	Catalog      tenantregistryv1connect.CatalogServiceHandler
	Entitlements tenantregistryv1connect.EntitlementServiceHandler
	ApiKeys      tenantregistryv1connect.ApiKeyServiceHandler
	Audit        tenantregistryv1connect.AuditServiceHandler
}

// NewServices returns the handlers of every service over the domain
// services persisting to store; keys verify through verifier.
func NewServices(store domain.Store, now domain.Clock, verifier *domain.KeyVerifier) Services {
	return Services{
		Tenants:      NewTenantServer(domain.NewTenantService(store, now)),
		Catalog:      NewCatalogServer(domain.NewCatalogService(store, now)),
		Entitlements: NewEntitlementServer(domain.NewEntitlementService(store, now)),
		ApiKeys:      NewApiKeyServer(domain.NewApiKeyService(store, now, verifier), now),
		Audit:        NewAuditServer(domain.NewAuditService(store, now)),
	}
}

// Server is the service's HTTP server: every protocol on one listener.
type Server struct {
	cfg      Config
	http     *http.Server
	draining atomic.Bool
}

// serviceNames are the services announced by health and reflection.
var serviceNames = []string{
	tenantregistryv1connect.TenantServiceName,
	tenantregistryv1connect.CatalogServiceName,
	tenantregistryv1connect.EntitlementServiceName,
	tenantregistryv1connect.ApiKeyServiceName,
	tenantregistryv1connect.AuditServiceName,
}

// NewServer assembles the server: the services behind their interceptors,
// gRPC health, reflection, /healthz and /readyz, all behind CORS.
func NewServer(cfg Config, svc Services) *Server {
	s := &Server{cfg: cfg}
	opts := connect.WithHandlerOptions(append(strictJSONCodecs,
		connect.WithInterceptors(logInterceptor{cfg.Logger}, errorInterceptor{cfg.Logger},
			callerInterceptor{auth: cfg.Auth, sources: sourceResolver{cfg.TrustedProxies}}),
		connect.WithReadMaxBytes(cfg.MaxMessageBytes),
		connect.WithRecover(s.recovered),
	)...)
	mux := http.NewServeMux()
	mux.Handle(tenantregistryv1connect.NewTenantServiceHandler(svc.Tenants, opts))
	mux.Handle(tenantregistryv1connect.NewCatalogServiceHandler(svc.Catalog, opts))
	mux.Handle(tenantregistryv1connect.NewEntitlementServiceHandler(svc.Entitlements, opts))
	mux.Handle(tenantregistryv1connect.NewApiKeyServiceHandler(svc.ApiKeys, opts))
	mux.Handle(tenantregistryv1connect.NewAuditServiceHandler(svc.Audit, opts))
	mux.Handle(grpchealth.NewHandler(healthChecker{s}))
	reflector := grpcreflect.NewStaticReflector(append([]string{grpchealth.HealthV1ServiceName}, serviceNames...)...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)

	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // gRPC without TLS, on the same port
	s.http = &http.Server{
		Handler:           s.cors().Handler(mux),
		Protocols:         protocols,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return s
}

// Handler returns the server's root handler.
func (s *Server) Handler() http.Handler { return s.http.Handler }

// cors allows the configured browser origins to call every protocol, with
// the header lists connect-es and gRPC-Web clients need, Authorization
// included for bearer tokens.
func (s *Server) cors() *cors.Cors {
	allowed := map[string]bool{}
	for _, o := range s.cfg.AllowedOrigins {
		allowed[o] = true
	}
	return cors.New(cors.Options{
		AllowOriginFunc: func(origin string) bool {
			return allowed[origin] || (s.cfg.AllowLocalhostOrigins && isLocalhostOrigin(origin))
		},
		AllowedMethods: connectcors.AllowedMethods(),
		AllowedHeaders: append(connectcors.AllowedHeaders(), "Authorization"),
		ExposedHeaders: connectcors.ExposedHeaders(),
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
		s.cfg.Logger.WarnContext(r.Context(), "not ready", "error", err)
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
func (s *Server) recovered(ctx context.Context, spec connect.Spec, _ http.Header, p any) error {
	s.cfg.Logger.ErrorContext(ctx, "panic in handler", "procedure", spec.Procedure, "panic", p)
	return connect.NewError(connect.CodeInternal, errors.New("internal error"))
}

// Serve serves on ln until ctx is done, then stops taking new work: /readyz
// and health turn not-ready, and in-flight requests get ShutdownGrace to
// finish. It returns nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.draining.Store(true)
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
