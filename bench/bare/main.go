// Command bare is the benchmark's outside baseline: a plain connect-go
// server with nothing of tenant-registry's stack in it. Its handlers
// answer VerifyApiKey and CheckEntitlement with constant responses (the
// very messages the service answered for the benchmark's key and tenant,
// handed over by the harness), with connect-go's default codecs, no
// interceptors, no CORS, no request ids, no logging, on an http.Server
// that speaks HTTP/1.1 and cleartext HTTP/2. It imports only connect-go,
// protobuf and the contract's generated code: what any connect-go service
// of this contract would be before it did any work. The service's rows
// divided by its rows are what the project adds to the RPC itself.
//
// With DATABASE_URL, TenantService/GetTenant is one primary-key SELECT of
// the tenants table, written by hand and sent through database/sql with
// the PostgreSQL driver the service uses (pgdriver), on a pool of the
// service's size, then converted to the message: the floor under any
// handler that reads the database once.
//
// Environment: ADDR (default 127.0.0.1:8092), VERIFY_RESPONSE and
// CHECK_RESPONSE (base64 of the binary protobuf responses), DATABASE_URL.
package main

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/uptrace/bun/driver/pgdriver"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		os.Exit(1)
	}
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

func run(ctx context.Context) error {
	addr := os.Getenv("ADDR")
	if addr == "" {
		addr = "127.0.0.1:8092"
	}
	keys := verify{res: &v1.VerifyApiKeyResponse{}}
	if err := constantFrom("VERIFY_RESPONSE", keys.res); err != nil {
		return err
	}
	entitlements := check{res: &v1.CheckEntitlementResponse{}}
	if err := constantFrom("CHECK_RESPONSE", entitlements.res); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(tenantregistryv1connect.NewApiKeyServiceHandler(keys))
	mux.Handle(tenantregistryv1connect.NewEntitlementServiceHandler(entitlements))
	if url := os.Getenv("DATABASE_URL"); url != "" {
		db := sql.OpenDB(pgdriver.NewConnector(pgdriver.WithDSN(url)))
		defer db.Close()
		n := 4 * runtime.GOMAXPROCS(0) // the service's pool
		db.SetMaxOpenConns(n)
		db.SetMaxIdleConns(n)
		if err := db.PingContext(ctx); err != nil {
			return fmt.Errorf("DATABASE_URL: %w", err)
		}
		mux.Handle(tenantregistryv1connect.NewTenantServiceHandler(pkSelect{db: db}))
	}
	// For the harness, which waits for /readyz before it sends load.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ready") })

	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: mux, Protocols: protocols, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("ADDR: %w", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// verify answers every VerifyApiKey with the same response.
type verify struct {
	tenantregistryv1connect.UnimplementedApiKeyServiceHandler
	res *v1.VerifyApiKeyResponse
}

func (h verify) VerifyApiKey(context.Context, *v1.VerifyApiKeyRequest) (*v1.VerifyApiKeyResponse, error) {
	return h.res, nil
}

// check answers every CheckEntitlement with the same response.
type check struct {
	tenantregistryv1connect.UnimplementedEntitlementServiceHandler
	res *v1.CheckEntitlementResponse
}

func (h check) CheckEntitlement(context.Context, *v1.CheckEntitlementRequest) (*v1.CheckEntitlementResponse, error) {
	return h.res, nil
}

// pkSelect answers GetTenant with one SELECT by primary key.
type pkSelect struct {
	tenantregistryv1connect.UnimplementedTenantServiceHandler
	db *sql.DB
}

func (h pkSelect) GetTenant(ctx context.Context, req *v1.GetTenantRequest) (*v1.GetTenantResponse, error) {
	var t v1.Tenant
	var status string
	var metadata []byte
	var created, updated time.Time
	err := h.db.QueryRowContext(ctx, `SELECT id, slug, display_name, status, external_id, metadata, create_time, update_time
		FROM tenants WHERE id = $1`, req.GetId()).Scan(&t.Id, &t.Slug, &t.DisplayName, &status, &t.ExternalId, &metadata, &created, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("tenant not found"))
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	if err := json.Unmarshal(metadata, &t.Metadata); err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	t.Status = v1.TenantStatus(v1.TenantStatus_value["TENANT_STATUS_"+status])
	t.CreateTime, t.UpdateTime = timestamppb.New(created), timestamppb.New(updated)
	return &v1.GetTenantResponse{Tenant: &t}, nil
}
