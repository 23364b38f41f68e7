package keyauth_test

import (
	"context"
	"encoding/json"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tenant-registry/tenant-registry/sdk/go/keyauth"
)

// A product's main: its API behind the key check, the change stream
// running beside the server.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	auth, err := keyauth.New(keyauth.Config{
		RegistryURL:    "http://tenant-registry:8090",
		ServiceKey:     os.Getenv("REGISTRY_SERVICE_KEY"), // a platform key with registry:verify
		Product:        "reports",                         // callers' tenants must be entitled to it
		RequiredScopes: []string{"reports:read"},
	})
	if err != nil {
		log.Fatal(err)
	}
	go auth.Run(ctx) // keeps the cache coherent; without it every request asks the registry

	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/reports", func(w http.ResponseWriter, r *http.Request) {
		id, _ := keyauth.FromContext(r.Context()) // always there behind the middleware
		_ = json.NewEncoder(w).Encode(map[string]string{"tenant": id.TenantSlug})
	})
	srv := &http.Server{Addr: ":8081", Handler: auth.Middleware(mux), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown(context.Background())
	}()
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
