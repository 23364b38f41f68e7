package transport_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// TestReadsStayOutOfSharedCaches: a read made with GET varies by
// Authorization, and one made with credentials may be stored by no cache.
func TestReadsStayOutOfSharedCaches(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		srv := testserver.Start(t, db)
		read := srv.URL + tenantregistryv1connect.TenantServiceGetTenantBySlugProcedure + "?" + url.Values{
			"encoding": {"json"}, "message": {`{"slug":"nobody-here"}`}, "connect": {"v1"},
		}.Encode()
		for _, tc := range []struct {
			name, url, authorization, cacheControl string
		}{
			{"a GET read with credentials", read, "Bearer bp_anything", "private, no-store"},
			{"a GET read without", read, "", ""},
			{"the health check", srv.URL + "/healthz", "", ""},
		} {
			req, err := http.NewRequest(http.MethodGet, tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.authorization != "" {
				req.Header.Set("Authorization", tc.authorization)
			}
			res, err := testserver.HTTP1.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if vary := strings.Join(res.Header.Values("Vary"), ","); !strings.Contains(vary, "Authorization") {
				t.Errorf("%s: Vary %q, want it to name Authorization", tc.name, vary)
			}
			if got := res.Header.Get("Cache-Control"); got != tc.cacheControl {
				t.Errorf("%s: Cache-Control %q, want %q", tc.name, got, tc.cacheControl)
			}
		}
	})
}
