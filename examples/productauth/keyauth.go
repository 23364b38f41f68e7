package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	registryv1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
)

// Tenant is who an inbound API key belongs to, as the registry verified it.
type Tenant struct {
	ID       string
	Slug     string
	KeyID    string
	Scopes   []string
	Products []string // products the tenant is entitled to now
}

type tenantKey struct{}

// TenantFrom returns the tenant KeyAuth put in the request's context.
func TenantFrom(ctx context.Context) (Tenant, bool) {
	t, ok := ctx.Value(tenantKey{}).(Tenant)
	return t, ok
}

// KeyAuth is net/http middleware that lets a request through only with
// `Authorization: Bearer bp_…` holding a key the registry says is valid for
// this product and these scopes. Answers are cached for TTL, good and bad
// alike, so a busy product asks the registry about each key at most once per
// TTL; a revoked key therefore stops working here within TTL.
type KeyAuth struct {
	// Registry verifies keys; its client carries the product's own service
	// key (scope registry:verify).
	Registry tenantregistryv1connect.ApiKeyServiceClient
	// Product is this product's key in the registry's catalog: the key's
	// tenant must be entitled to it.
	Product string
	// RequiredScopes must all be on the key.
	RequiredScopes []string
	// TTL bounds how long an answer is reused (default 10 s): the longest a
	// revoked key keeps working here.
	TTL time.Duration
	// MaxEntries bounds the cache (default 10 000), so a flood of random keys
	// cannot grow it without limit.
	MaxEntries int
	// Now is the clock (default time.Now); tests move it.
	Now    func() time.Time
	Logger *slog.Logger

	mu    sync.Mutex
	cache map[[sha256.Size]byte]cached
}

type cached struct {
	answer  *registryv1.VerifyApiKeyResponse
	expires time.Time
}

// Wrap returns next behind the key check. Requests without a good key get
// 401 (403 when the key is good but lacks a scope or the product); when the
// registry cannot be asked, 503, so an outage is not mistaken for a bad key.
func (a *KeyAuth) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, ok := bearerKey(r.Header.Get("Authorization"))
		if !ok {
			deny(w, http.StatusUnauthorized, "missing API key: send Authorization: Bearer bp_…")
			return
		}
		answer, err := a.verify(r.Context(), key)
		if err != nil {
			a.logger().WarnContext(r.Context(), "verify API key", "error", err)
			deny(w, http.StatusServiceUnavailable, "cannot verify the API key now; retry later")
			return
		}
		switch answer.GetCode() {
		case registryv1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID:
		case registryv1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_INSUFFICIENT_SCOPE,
			registryv1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_NOT_ENTITLED:
			deny(w, http.StatusForbidden, "API key not allowed here: "+answer.GetCode().String())
			return
		default:
			deny(w, http.StatusUnauthorized, "invalid API key: "+answer.GetCode().String())
			return
		}
		ctx := context.WithValue(r.Context(), tenantKey{}, Tenant{
			ID: answer.GetTenantId(), Slug: answer.GetTenantSlug(), KeyID: answer.GetKeyId(),
			Scopes: answer.GetScopes(), Products: answer.GetProducts(),
		})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// verify answers from the cache or asks the registry. The cache is keyed
// by the key's hash, so no plaintext key stays in memory.
func (a *KeyAuth) verify(ctx context.Context, key string) (*registryv1.VerifyApiKeyResponse, error) {
	id := sha256.Sum256([]byte(key))
	now := a.now()
	a.mu.Lock()
	if c, ok := a.cache[id]; ok && now.Before(c.expires) {
		a.mu.Unlock()
		return c.answer, nil
	}
	a.mu.Unlock()

	answer, err := a.Registry.VerifyApiKey(ctx, &registryv1.VerifyApiKeyRequest{
		Key: key, Product: a.Product, RequiredScopes: a.RequiredScopes,
	})
	if err != nil {
		return nil, err // not cached: the next request asks again
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cache == nil {
		a.cache = map[[sha256.Size]byte]cached{}
	}
	if len(a.cache) >= a.maxEntries() {
		a.evict(now)
	}
	a.cache[id] = cached{answer: answer, expires: now.Add(a.ttl())}
	return answer, nil
}

// evict drops expired answers, and when that frees nothing, an arbitrary
// tenth of the cache: cheap, and a dropped answer only costs one more call.
func (a *KeyAuth) evict(now time.Time) {
	for id, c := range a.cache {
		if !now.Before(c.expires) {
			delete(a.cache, id)
		}
	}
	for id := range a.cache {
		if len(a.cache) < a.maxEntries()-a.maxEntries()/10 {
			break
		}
		delete(a.cache, id)
	}
}

func (a *KeyAuth) ttl() time.Duration {
	if a.TTL > 0 {
		return a.TTL
	}
	return 10 * time.Second
}

func (a *KeyAuth) maxEntries() int {
	if a.MaxEntries > 0 {
		return a.MaxEntries
	}
	return 10_000
}

func (a *KeyAuth) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *KeyAuth) logger() *slog.Logger {
	if a.Logger != nil {
		return a.Logger
	}
	return slog.Default()
}

// bearerKey extracts the key of `Authorization: Bearer bp_…`. Anything else
// is refused here, without asking the registry.
func bearerKey(header string) (string, bool) {
	scheme, key, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	key = strings.TrimSpace(key)
	return key, strings.HasPrefix(key, "bp_")
}

func deny(w http.ResponseWriter, status int, message string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": message})
}

// NewRegistryClient returns an ApiKeyService client of the registry at
// baseURL that authenticates with the product's own service key.
func NewRegistryClient(httpClient connect.HTTPClient, baseURL, serviceKey string) tenantregistryv1connect.ApiKeyServiceClient {
	return tenantregistryv1connect.NewApiKeyServiceClient(httpClient, baseURL,
		connect.WithInterceptors(bearerInterceptor(serviceKey)))
}

// bearerInterceptor sends the product's service key with every call.
type bearerInterceptor string

func (k bearerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if k != "" {
			req.Header().Set("Authorization", "Bearer "+string(k))
		}
		return next(ctx, req)
	}
}

func (k bearerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if k != "" {
			conn.RequestHeader().Set("Authorization", "Bearer "+string(k))
		}
		return conn
	}
}

func (k bearerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
