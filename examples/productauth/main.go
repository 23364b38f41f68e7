// Command productauth is an example product: a service of its own whose
// inbound requests carry its customers' API keys (`Authorization: Bearer
// bp_…`), checked against tenant-registry with the generated connect-go
// client by the KeyAuth middleware.
//
//	REGISTRY_URL=http://localhost:8090 PRODUCT=analytics \
//	REGISTRY_SERVICE_KEY=bp_… ADDR=:8081 go run ./examples/productauth
//
// REGISTRY_SERVICE_KEY is the product's own key for the registry (scope
// registry:verify); a dev registry does not check it.
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
	"syscall"
	"time"
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
	auth := &KeyAuth{
		Registry:       NewRegistryClient(&http.Client{Timeout: 5 * time.Second}, registryURL, os.Getenv("REGISTRY_SERVICE_KEY")),
		Product:        product,
		RequiredScopes: scopes,
		Logger:         log,
	}
	srv := &http.Server{Addr: addr, Handler: NewProductHandler(auth), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Info("product serving", "addr", addr, "registry", registryURL, "product", product)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// NewProductHandler is the product's API: every route behind KeyAuth.
func NewProductHandler(auth *KeyAuth) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/whoami", func(w http.ResponseWriter, r *http.Request) {
		tenant, _ := TenantFrom(r.Context())
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"tenantId": tenant.ID, "tenantSlug": tenant.Slug, "keyId": tenant.KeyID, "products": tenant.Products,
		})
	})
	return auth.Wrap(mux)
}

func getenv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
