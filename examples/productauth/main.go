// Command productauth is an example product: a service of its own whose
// inbound requests carry its customers' API keys (`Authorization: Bearer
// bp_…`), checked against tenant-registry by the Go SDK's middleware
// (sdk/go/keyauth), whose cache the registry's change stream keeps
// coherent: a revoked key is refused here within a second.
//
//	REGISTRY_URL=http://localhost:8090 PRODUCT=analytics \
//	REGISTRY_SERVICE_KEY=bp_… ADDR=:8081 go run ./examples/productauth
//
// REGISTRY_SERVICE_KEY is the product's own key for the registry (a
// platform key with scope registry:verify); a dev registry does not check
// it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tenant-registry/tenant-registry/sdk/go/keyauth"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("productauth", "error", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	registryURL := getenv("REGISTRY_URL", "http://localhost:8090")
	product := getenv("PRODUCT", "analytics")
	addr := getenv("ADDR", ":8081")
	var scopes []string
	if s := os.Getenv("REQUIRED_SCOPES"); s != "" {
		scopes = strings.Split(s, ",")
	}
	auth, err := keyauth.New(keyauth.Config{
		RegistryURL:    registryURL,
		ServiceKey:     os.Getenv("REGISTRY_SERVICE_KEY"),
		Product:        product,
		RequiredScopes: scopes,
		Logger:         log,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { _ = auth.Run(ctx) }) // the change stream, until shutdown

	srv := &http.Server{Addr: addr, Handler: NewProductHandler(auth), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Info("product serving", "addr", addr, "registry", registryURL, "product", product)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		stop()
		return err
	}
	return nil
}

// WhoamiProcedure is the product's Connect procedure: the same answer as
// GET /v1/whoami, for Connect and gRPC callers.
const WhoamiProcedure = "/productauth.v1.WhoamiService/Whoami"

// NewProductHandler is the product's API, every route behind the key
// check: GET /v1/whoami behind the SDK's net/http middleware, and
// WhoamiProcedure behind its connect-go interceptor.
func NewProductHandler(auth *keyauth.Verifier) http.Handler {
	api := http.NewServeMux()
	api.HandleFunc("GET /v1/whoami", func(w http.ResponseWriter, r *http.Request) {
		id, _ := keyauth.FromContext(r.Context())
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(whoami(id))
	})
	root := http.NewServeMux()
	root.Handle("/v1/", auth.Middleware(api))
	root.Handle(WhoamiProcedure, connect.NewUnaryHandler(WhoamiProcedure,
		func(ctx context.Context, _ *connect.Request[emptypb.Empty]) (*connect.Response[structpb.Struct], error) {
			id, _ := keyauth.FromContext(ctx)
			answer, err := structpb.NewStruct(whoami(id))
			if err != nil {
				return nil, connect.NewError(connect.CodeInternal, err)
			}
			return connect.NewResponse(answer), nil
		},
		connect.WithInterceptors(auth.Interceptor()),
	))
	return root
}

// whoami is who called, as the registry verified it.
func whoami(id *keyauth.Identity) map[string]any {
	products := make([]any, len(id.Products))
	for i, p := range id.Products {
		products[i] = p
	}
	return map[string]any{"tenantId": id.TenantID, "tenantSlug": id.TenantSlug, "keyId": id.KeyID, "products": products}
}

func getenv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
