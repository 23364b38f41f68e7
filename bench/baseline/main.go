// Command baseline is the benchmark's "own stack" server: exactly the
// settings of tenant-registry's (the same http.Server, protocols, limits,
// codecs and interceptors, taken from package transport) but handlers that
// do (nearly) nothing, so that what the stack costs and what the handlers
// cost can be told apart. It is not an outside baseline (bench/bare is):
// it is the project's own stack, measured beside it.
//
//   - tenantregistry.v1.ApiKeyService/VerifyApiKey and
//     EntitlementService/CheckEntitlement answer constants (the service's
//     own answers for the benchmark's key and tenant, from VERIFY_RESPONSE
//     and CHECK_RESPONSE): the same procedures, so the access log samples
//     their successes exactly as the service's (hot-path procedures), and
//     the same response bytes.
//   - grpc.health.v1.Health/Check answers a constant too; every one of its
//     calls is logged, as the service logs calls off the hot path.
//   - tenantregistry.v1.TenantService/GetTenant (when DATABASE_URL is set)
//     does one primary-key SELECT through Bun and converts the row.
//
// Environment: ADDR (default 127.0.0.1:8091), DATABASE_URL, LOG_LEVEL,
// VERIFY_RESPONSE, CHECK_RESPONSE (base64 of binary protobuf).
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/persistence"
	"github.com/tenant-registry/tenant-registry/transport"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	level := slog.LevelInfo
	if v := os.Getenv("LOG_LEVEL"); v != "" {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			return fmt.Errorf("LOG_LEVEL: %w", err)
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	addr := os.Getenv("ADDR")
	if addr == "" {
		addr = "127.0.0.1:8091"
	}
	// The limits cmd/tenant-registry runs with by default (the same
	// deadlines, message bound and stream bound), so both servers are
	// configured alike; authentication is off in both (dev without issuer).
	cfg := transport.DefaultConfig()
	cfg.AllowLocalhostOrigins = true
	cfg.ShutdownGrace = 2 * time.Second
	cfg.Logger = log
	opts := transport.HandlerOptions(cfg)
	mux := http.NewServeMux()
	// The real server mounts health without options; here it gets the
	// service handlers' options, so the limit pays for the same codecs and
	// interceptors as every RPC it is compared with.
	mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker(), opts))
	services := []string{grpchealth.HealthV1ServiceName}
	if os.Getenv("VERIFY_RESPONSE") != "" {
		keys := constantVerify{res: &v1.VerifyApiKeyResponse{}}
		if err := constantFrom("VERIFY_RESPONSE", keys.res); err != nil {
			return err
		}
		entitlements := constantCheck{res: &v1.CheckEntitlementResponse{}}
		if err := constantFrom("CHECK_RESPONSE", entitlements.res); err != nil {
			return err
		}
		mux.Handle(tenantregistryv1connect.NewApiKeyServiceHandler(keys, opts))
		mux.Handle(tenantregistryv1connect.NewEntitlementServiceHandler(entitlements, opts))
		services = append(services, tenantregistryv1connect.ApiKeyServiceName, tenantregistryv1connect.EntitlementServiceName)
	}
	var db *persistence.DB
	if url := os.Getenv("DATABASE_URL"); url != "" {
		var err error
		// The pool cmd/tenant-registry opens with its default REQUEST_TIMEOUT.
		if db, err = persistence.Open(ctx, url, persistence.WithStatementTimeout(31*time.Second)); err != nil {
			return err
		}
		defer db.Close()
		mux.Handle(tenantregistryv1connect.NewTenantServiceHandler(pkSelect{tenants: db.Store().Tenants()}, opts))
		services = append(services, tenantregistryv1connect.TenantServiceName)
	}
	reflector := grpcreflect.NewStaticReflector(services...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if db != nil {
			if err := db.Ready(r.Context()); err != nil {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})

	srv := transport.NewHTTPServer(cfg, mux)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("ADDR: %w", err)
	}
	log.Info("baseline serving", "addr", ln.Addr().String(), "services", services)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// pkSelect is the bare database handler: GetTenant is one SELECT by
// primary key through the service's own Bun repository and pool, then a
// conversion; no validation, no authorisation, no cache.
type pkSelect struct {
	tenantregistryv1connect.UnimplementedTenantServiceHandler
	tenants domain.TenantReader
}

func (h pkSelect) GetTenant(ctx context.Context, req *v1.GetTenantRequest) (*v1.GetTenantResponse, error) {
	t, err := h.tenants.Get(ctx, req.GetId())
	if err != nil {
		if domain.ErrorKind(err) == domain.KindNotFound {
			return nil, connect.NewError(connect.CodeNotFound, errors.New("tenant not found"))
		}
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("database unavailable"))
	}
	return &v1.GetTenantResponse{Tenant: &v1.Tenant{
		Id: t.ID, Slug: t.Slug, DisplayName: t.DisplayName,
		Status:     v1.TenantStatus(v1.TenantStatus_value["TENANT_STATUS_"+string(t.Status)]),
		ExternalId: t.ExternalID, Metadata: t.Metadata,
		CreateTime: timestamppb.New(t.CreateTime), UpdateTime: timestamppb.New(t.UpdateTime),
	}}, nil
}

// constantFrom decodes the base64 binary protobuf in environment variable
// name into m.
func constantFrom(name string, m proto.Message) error {
	b, err := base64.StdEncoding.DecodeString(os.Getenv(name))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// constantVerify answers every VerifyApiKey with the same response.
type constantVerify struct {
	tenantregistryv1connect.UnimplementedApiKeyServiceHandler
	res *v1.VerifyApiKeyResponse
}

func (h constantVerify) VerifyApiKey(context.Context, *v1.VerifyApiKeyRequest) (*v1.VerifyApiKeyResponse, error) {
	return h.res, nil
}

// constantCheck answers every CheckEntitlement with the same response.
type constantCheck struct {
	tenantregistryv1connect.UnimplementedEntitlementServiceHandler
	res *v1.CheckEntitlementResponse
}

func (h constantCheck) CheckEntitlement(context.Context, *v1.CheckEntitlementRequest) (*v1.CheckEntitlementResponse, error) {
	return h.res, nil
}
