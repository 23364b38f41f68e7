// Command product is the benchmark's product: GET /v1/whoami as
// examples/productauth serves it, behind the Go SDK's middleware on ADDR,
// and the same handler without authentication on NOAUTH_ADDR, its
// baseline. GET /readyz answers 200 once the SDK's change stream is live,
// so that a row measures the cached path; GET /stats gives the SDK's
// counters.
//
// Environment: REGISTRY_URL, PRODUCT, REQUIRED_SCOPES (comma list), ADDR,
// NOAUTH_ADDR.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tenant-registry/tenant-registry/sdk/go/keyauth"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "product:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var scopes []string
	if s := os.Getenv("REQUIRED_SCOPES"); s != "" {
		scopes = strings.Split(s, ",")
	}
	auth, err := keyauth.New(keyauth.Config{
		RegistryURL: os.Getenv("REGISTRY_URL"), Product: os.Getenv("PRODUCT"), RequiredScopes: scopes, Logger: log,
	})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { _ = auth.Run(ctx) })

	// Both ports serve the same mux; only the middleware differs.
	fixed := &keyauth.Identity{TenantID: "00000000-0000-0000-0000-000000000001", TenantSlug: "acme", KeyID: "none", Products: []string{"analytics"}}
	product := func(authenticate bool) http.Handler {
		var whoami http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, ok := keyauth.FromContext(r.Context())
			if !ok {
				id = fixed
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"tenantId": id.TenantID, "tenantSlug": id.TenantSlug, "keyId": id.KeyID, "products": id.Products})
		})
		if authenticate {
			whoami = auth.Middleware(whoami)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /v1/", whoami)
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
			if auth.Stats().State != keyauth.StreamLive {
				http.Error(w, "change stream not live", http.StatusServiceUnavailable)
			}
		})
		mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(auth.Stats())
		})
		return mux
	}
	withAuth, withoutAuth := product(true), product(false)

	errc := make(chan error, 2)
	for _, s := range []struct {
		env     string
		handler http.Handler
	}{{"ADDR", withAuth}, {"NOAUTH_ADDR", withoutAuth}} {
		ln, err := net.Listen("tcp", os.Getenv(s.env))
		if err != nil {
			return fmt.Errorf("%s: %w", s.env, err)
		}
		srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- srv.Serve(ln) }()
		defer func() {
			shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(shutdown)
		}()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}
