package transport_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"connectrpc.com/connect"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
	"github.com/tenant-registry/tenant-registry/transport"
)

// stampErrors is an interceptor, of the kind telemetry installs, that
// writes each failed call's X-Call request header into its error's
// metadata, which goes back to the caller with the error.
var stampErrors = connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		if ce := new(connect.Error); errors.As(err, &ce) {
			ce.Meta().Add("X-Call", req.Header().Get("X-Call"))
		}
		return res, err
	}
})

// TestRefusedCredentialsGetErrorsOfTheirOwn refuses many calls at once,
// for a missing token, a token the server cannot verify and a malformed
// service key, over every protocol, behind an interceptor that writes to
// each error's metadata: every caller must get back its own call's stamp
// and no other. An error value shared by requests would carry the stamps
// of every call before it, and under -race the concurrent writes to its
// metadata are reported.
func TestRefusedCredentialsGetErrorsOfTheirOwn(t *testing.T) {
	const callsPerCredential = 8
	credentials := []struct{ name, header string }{
		{"missing token", ""},
		{"unverifiable token", "Bearer not-a-jwt"},
		{"malformed service key", "Bearer " + domain.KeyPrefix + "malformed"},
	}
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		srv := testserver.Start(t, db, func(cfg *transport.Config) {
			cfg.OIDC = &transport.OIDCConfig{} // no issuer: service keys only
			cfg.Interceptors = []connect.Interceptor{stampErrors}
		})
		var wg sync.WaitGroup
		for _, p := range testserver.Protocols {
			tenants := tenantregistryv1connect.NewTenantServiceClient(p.HTTP, srv.URL, p.Options...)
			for _, c := range credentials {
				for i := range callsPerCredential {
					stamp := fmt.Sprintf("%s/%s/%d", p.Name, c.name, i)
					wg.Go(func() {
						ctx, call := connect.NewClientContext(context.Background())
						call.RequestHeader().Set("X-Call", stamp)
						if c.header != "" {
							call.RequestHeader().Set("Authorization", c.header)
						}
						_, err := tenants.GetTenant(ctx, &v1.GetTenantRequest{Id: domain.PlatformTenantID})
						var ce *connect.Error
						if !errors.As(err, &ce) || ce.Code() != connect.CodeUnauthenticated {
							t.Errorf("%s: %v, want Unauthenticated", stamp, err)
							return
						}
						if got := ce.Meta().Values("X-Call"); !slices.Equal(got, []string{stamp}) {
							t.Errorf("%s: the error came back stamped %q, want its own stamp only", stamp, got)
						}
					})
				}
			}
		}
		wg.Wait()
	})
}
