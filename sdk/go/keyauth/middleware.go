package keyauth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
)

type identityKey struct{}

// WithIdentity returns a context carrying id.
func WithIdentity(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity Middleware or Interceptor put in a
// request's context.
func FromContext(ctx context.Context) (*Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(*Identity)
	return id, ok && id != nil
}

var denyMissing = &Denied{Code: "MISSING", Status: http.StatusUnauthorized}

// Authenticate verifies the key of an Authorization header ("Bearer
// bp_…"). Anything else is refused without asking the registry.
func (v *Verifier) Authenticate(ctx context.Context, authorization string) (*Identity, error) {
	scheme, key, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, denyMissing
	}
	return v.Verify(ctx, strings.TrimSpace(key))
}

// Middleware lets a request through to next only with a key the registry
// says is good for this product and these scopes, its Identity in the
// request's context. Others get a JSON error: 401 for a missing or bad key
// (with WWW-Authenticate), 403 for a key not allowed here, 503 (with
// Retry-After) when the registry cannot be asked, so that an outage is not
// mistaken for a bad key.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := v.Authenticate(r.Context(), r.Header.Get("Authorization"))
		if err != nil {
			deny(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), id)))
	})
}

func deny(w http.ResponseWriter, err error) {
	status, message := http.StatusServiceUnavailable, ErrUnavailable.Error()
	var d *Denied
	switch {
	case errors.As(err, &d) && d == denyMissing:
		status, message = d.Status, "missing API key: send Authorization: Bearer bp_…"
	case errors.As(err, &d):
		status, message = d.Status, d.Error()
	default:
		w.Header().Set("Retry-After", "1")
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": message})
}
