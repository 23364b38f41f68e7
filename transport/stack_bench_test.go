package transport

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
)

// constantKeys answers every VerifyApiKey with the same response.
type constantKeys struct {
	tenantregistryv1connect.UnimplementedApiKeyServiceHandler
	res *v1.VerifyApiKeyResponse
}

func (h constantKeys) VerifyApiKey(context.Context, *v1.VerifyApiKeyRequest) (*v1.VerifyApiKeyResponse, error) {
	return h.res, nil
}

// discardWriter is a ResponseWriter that keeps nothing but the status.
type discardWriter struct {
	header http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.header }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }
func (w *discardWriter) Flush()                      {}

// BenchmarkStack serves one Connect JSON VerifyApiKey, answered with a
// constant, through a bare connect-go handler ("bare": default options,
// nothing of ours) and through the server's own stack ("own": its HTTP
// layers, codecs and interceptors), in process and without a network, so
// that the difference is what the stack's layers cost a call in CPU and
// allocations. `task bench` measures the same over real connections.
func BenchmarkStack(b *testing.B) {
	res := &v1.VerifyApiKeyResponse{Valid: true, Code: v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID,
		KeyId: "key_01JD7Q6R3T5V8X0Z2B4D6F8H0K", TenantId: "ten_01JD7Q6R3T5V8X0Z2B4D6F8H0M", TenantSlug: "acme",
		Scopes: []string{"audit:write", "tenants:read"}, Products: []string{"crm", "helpdesk"}, Metadata: map[string]string{"team": "billing"}}
	bare := http.NewServeMux()
	bare.Handle(tenantregistryv1connect.NewApiKeyServiceHandler(constantKeys{res: res}))
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg = cfg.prepared()
	own := http.NewServeMux()
	own.Handle(tenantregistryv1connect.NewApiKeyServiceHandler(constantKeys{res: res}, HandlerOptions(cfg)))
	for _, stack := range []struct {
		name    string
		handler http.Handler
	}{{"bare", bare}, {"own", NewHTTPServer(cfg, own).Handler}} {
		b.Run(stack.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest(http.MethodPost, tenantregistryv1connect.ApiKeyServiceVerifyApiKeyProcedure,
					strings.NewReader(`{"key":"trk_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV","product":"crm"}`))
				r.Header.Set("Content-Type", "application/json")
				w := &discardWriter{header: http.Header{}}
				stack.handler.ServeHTTP(w, r)
				if w.status != 0 && w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
			}
		})
	}
}
