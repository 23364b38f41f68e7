package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
)

const seedTenantID = "00000000-0000-0000-0000-000000000001"

// envOf is a getenv over a map.
func envOf(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// running is a Main serving on a free loopback port.
type running struct {
	m       *Main
	logs    *testserver.Logs
	baseURL string
	stop    func() error // ends Serve's context and returns what Serve returned
}

// serve builds the configuration from env through LoadConfig (ADDR, unless
// env sets it, a free loopback port), opens a Main with it and serves
// (Main.Listen and Main.Serve, as the binary does) until stop is called or
// the test ends.
func serve(t *testing.T, env map[string]string) *running {
	t.Helper()
	return serveWith(t, env, nil)
}

// serveWith is serve with setup applied to the Main before it opens.
func serveWith(t *testing.T, env map[string]string, setup func(*Main)) *running {
	t.Helper()
	if _, ok := env["ADDR"]; !ok {
		env = maps.Clone(env)
		env["ADDR"] = "127.0.0.1:0"
	}
	cfg, err := LoadConfig(envOf(env))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	logs := &testserver.Logs{}
	m := &Main{Config: cfg, Logger: newLogger(cfg, logs)}
	if setup != nil {
		setup(m)
	}
	if err := m.Open(context.Background()); err != nil {
		m.Close()
		t.Fatalf("Open: %v", err)
	}
	if err := m.Listen(); err != nil {
		m.Close()
		t.Fatalf("Listen: %v", err)
	}
	// Registered before Serve's cleanup, so run after the server stopped.
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if strings.Contains(logs.String(), `"level":"ERROR"`) {
			t.Errorf("the server logged errors")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	stop := testserver.Serve(t, m.Serve)
	return &running{m: m, logs: logs, baseURL: "http://" + m.Server.Addr(), stop: stop}
}

// databases are the databases a test serves from, each a fresh one.
var databases = []struct {
	name string
	url  func(t *testing.T) string
}{
	{"sqlite", func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "registry.db") }},
	{"postgres", func(t *testing.T) string { return testdb.PostgresURL(t) }},
}

func devEnv(databaseURL string) map[string]string {
	return map[string]string{
		"APP_ENV":           "dev",
		"ADDR":              "127.0.0.1:0",
		"DATABASE_URL":      databaseURL,
		"LOG_LEVEL":         "debug",
		"LOG_FORMAT":        "json",
		"SHUTDOWN_GRACE":    "10s",
		"MAX_MESSAGE_BYTES": "1048576",
	}
}

// keyedEnv is devEnv with authentication on, and the plaintext of a
// platform admin key that `keys bootstrap` made in its database. The
// issuer it names is never asked: every caller presents a service key.
func keyedEnv(t *testing.T, databaseURL string) (env map[string]string, adminKey string) {
	t.Helper()
	env = devEnv(databaseURL)
	env["KEYCLOAK_ISSUER"] = "http://127.0.0.1:1/realms/none"
	env["OIDC_AUDIENCE"] = "tenant-registry"
	var out strings.Builder
	if err := run(context.Background(), []string{"keys", "bootstrap"}, envOf(env), &out, io.Discard); err != nil {
		t.Fatalf("keys bootstrap: %v", err)
	}
	return env, strings.TrimSpace(out.String())
}

func TestServeEndToEnd(t *testing.T) {
	for _, d := range databases {
		t.Run(d.name, func(t *testing.T) {
			srv := serve(t, devEnv(d.url(t)))
			t.Run("tenants", func(t *testing.T) { testTenantsOverEveryProtocol(t, srv) })
			t.Run("dev seed", func(t *testing.T) { testDevSeed(t, srv) })
			t.Run("health endpoints", func(t *testing.T) { testHealthEndpoints(t, srv) })
			t.Run("grpc health", func(t *testing.T) { testGRPCHealth(t, srv) })
			t.Run("reflection", func(t *testing.T) { testReflection(t, srv) })
			t.Run("cors", func(t *testing.T) { testCORS(t, srv) })
			t.Run("graceful shutdown", func(t *testing.T) {
				if err := srv.stop(); err != nil {
					t.Fatalf("Serve returned %v after its context ended, want nil", err)
				}
				if _, err := (&http.Client{Transport: &http.Transport{}}).Get(srv.baseURL + "/healthz"); err == nil {
					t.Error("the server still answers after shutdown")
				}
			})
		})
	}
}

func testTenantsOverEveryProtocol(t *testing.T, srv *running) {
	ctx := context.Background()
	for _, p := range testserver.Protocols {
		t.Run(p.Name, func(t *testing.T) {
			httpClient, rec := p.Recorded()
			c := tenantregistryv1connect.NewTenantServiceClient(httpClient, srv.baseURL, p.Options...)
			slug := "e2e-" + p.Name

			created, err := c.CreateTenant(ctx, &v1.CreateTenantRequest{
				Slug: slug, DisplayName: "End To End " + p.Name, Metadata: map[string]string{"via": p.Name},
			})
			if err != nil {
				t.Fatalf("CreateTenant: %v", err)
			}
			tn := created.GetTenant()
			if tn.GetStatus() != v1.TenantStatus_TENANT_STATUS_TRIAL || tn.GetMetadata()["via"] != p.Name {
				t.Fatalf("created %v", tn)
			}

			got, err := c.GetTenantBySlug(ctx, &v1.GetTenantBySlugRequest{Slug: slug})
			if err != nil || got.GetTenant().GetId() != tn.GetId() {
				t.Fatalf("GetTenantBySlug = %v, %v", got, err)
			}
			wantRead := http.MethodPost
			if p.GET {
				wantRead = http.MethodGet
			}
			if m := rec.Methods(tenantregistryv1connect.TenantServiceGetTenantBySlugProcedure); !slices.Equal(m, []string{wantRead}) {
				t.Errorf("GetTenantBySlug went as %v, want %s", m, wantRead)
			}

			list, err := c.ListTenants(ctx, &v1.ListTenantsRequest{Query: slug})
			if err != nil || len(list.GetTenants()) != 1 || list.GetTenants()[0].GetId() != tn.GetId() {
				t.Fatalf("ListTenants(query %q) = %v, %v", slug, list, err)
			}
			all, err := c.ListTenants(ctx, &v1.ListTenantsRequest{PageSize: 500})
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, x := range all.GetTenants() {
				ids = append(ids, x.GetId())
			}
			if !slices.Contains(ids, seedTenantID) || !slices.Contains(ids, tn.GetId()) {
				t.Errorf("ListTenants ids %v lack the seed tenant or %s", ids, tn.GetId())
			}

			act, err := c.ActivateTenant(ctx, &v1.ActivateTenantRequest{Id: tn.GetId()})
			if err != nil || act.GetTenant().GetStatus() != v1.TenantStatus_TENANT_STATUS_ACTIVE {
				t.Fatalf("ActivateTenant = %v, %v", act, err)
			}
			cancelled, err := c.CancelTenant(ctx, &v1.CancelTenantRequest{Id: tn.GetId()})
			if err != nil || cancelled.GetTenant().GetStatus() != v1.TenantStatus_TENANT_STATUS_FROZEN {
				t.Fatalf("CancelTenant = %v, %v", cancelled, err)
			}
			again, err := c.GetTenant(ctx, &v1.GetTenantRequest{Id: tn.GetId()})
			if err != nil || again.GetTenant().GetStatus() != v1.TenantStatus_TENANT_STATUS_FROZEN {
				t.Fatalf("GetTenant after cancel = %v, %v", again, err)
			}

			_, err = c.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: slug, DisplayName: "Again"})
			if connect.CodeOf(err) != connect.CodeAlreadyExists {
				t.Errorf("second CreateTenant: %v, want AlreadyExists", err)
			}
		})
	}
}

func testDevSeed(t *testing.T, srv *running) {
	c := tenantregistryv1connect.NewTenantServiceClient(testserver.HTTP1, srv.baseURL, connect.WithProtoJSON())
	byID, err := c.GetTenant(context.Background(), &v1.GetTenantRequest{Id: seedTenantID})
	if err != nil {
		t.Fatalf("GetTenant(seed): %v", err)
	}
	if tn := byID.GetTenant(); tn.GetSlug() != "acme" || tn.GetStatus() != v1.TenantStatus_TENANT_STATUS_ACTIVE {
		t.Errorf("seed tenant %v, want acme, ACTIVE", tn)
	}
	bySlug, err := c.GetTenantBySlug(context.Background(), &v1.GetTenantBySlugRequest{Slug: "acme"})
	if err != nil || bySlug.GetTenant().GetId() != seedTenantID {
		t.Errorf("GetTenantBySlug(acme) = %v, %v", bySlug, err)
	}
}

func testHealthEndpoints(t *testing.T, srv *running) {
	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/healthz", http.StatusOK},
		{http.MethodGet, "/readyz", http.StatusOK},
		{http.MethodPost, "/healthz", http.StatusMethodNotAllowed},
		{http.MethodGet, "/no-such-path", http.StatusNotFound},
	}
	client := testserver.HTTP1
	for _, tc := range tests {
		req, err := http.NewRequest(tc.method, srv.baseURL+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Errorf("%s %s: HTTP %d, want %d", tc.method, tc.path, res.StatusCode, tc.want)
		}
	}
}

// healthCheck calls grpc.health.v1.Health/Check over gRPC with dynamic
// messages. grpchealth registers the standard health messages under the
// package connectext.grpc.health.v1; the wire format is the same.
func healthCheck(t *testing.T, srv *running, service string) (grpchealth.Status, error) {
	t.Helper()
	d, err := protoregistry.GlobalFiles.FindDescriptorByName("connectext.grpc.health.v1.Health")
	if err != nil {
		t.Fatalf("health descriptors: %v", err)
	}
	method := d.(protoreflect.ServiceDescriptor).Methods().ByName("Check")
	client := connect.NewClient[dynamicpb.Message, dynamicpb.Message](
		testserver.H2C, srv.baseURL+"/grpc.health.v1.Health/Check",
		connect.WithGRPC(), connect.WithSchema(method),
		connect.WithResponseInitializer(func(spec connect.Spec, msg any) error {
			*msg.(*dynamicpb.Message) = *dynamicpb.NewMessage(method.Output())
			return nil
		}),
	)
	req := dynamicpb.NewMessage(method.Input())
	req.Set(method.Input().Fields().ByName("service"), protoreflect.ValueOfString(service))
	res, err := client.CallUnary(context.Background(), connect.NewRequest(req))
	if err != nil {
		return 0, err
	}
	return grpchealth.Status(res.Msg.Get(method.Output().Fields().ByName("status")).Enum()), nil
}

func testGRPCHealth(t *testing.T, srv *running) {
	tests := []struct {
		service string
		want    grpchealth.Status
		code    connect.Code
	}{
		{"", grpchealth.StatusServing, 0},
		{tenantregistryv1connect.TenantServiceName, grpchealth.StatusServing, 0},
		{tenantregistryv1connect.AuditServiceName, grpchealth.StatusServing, 0},
		{grpchealth.HealthV1ServiceName, grpchealth.StatusServing, 0},
		{"no.such.Service", 0, connect.CodeNotFound},
	}
	for _, tc := range tests {
		got, err := healthCheck(t, srv, tc.service)
		if tc.code != 0 {
			if connect.CodeOf(err) != tc.code {
				t.Errorf("Check(%q): %v, want code %v", tc.service, err, tc.code)
			}
			continue
		}
		if err != nil {
			t.Errorf("Check(%q): %v", tc.service, err)
		} else if got != tc.want {
			t.Errorf("Check(%q) = %s, want %s", tc.service, got, tc.want)
		}
	}
}

func testReflection(t *testing.T, srv *running) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := grpcreflect.NewClient(testserver.H2C, srv.baseURL, connect.WithGRPC())
	stream := client.NewStream(ctx)
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatalf("ListServices: %v", err)
	}
	for _, want := range []protoreflect.FullName{
		tenantregistryv1connect.TenantServiceName,
		tenantregistryv1connect.AuditServiceName,
		"grpc.health.v1.Health",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, without %s", names, want)
		}
	}
	// grpcurl describes a service, and calls its methods, through
	// FileContainingSymbol: every listed service must resolve.
	for _, name := range names {
		files, err := stream.FileContainingSymbol(name)
		if err != nil || len(files) == 0 || files[0].GetPackage() != string(name.Parent()) {
			t.Errorf("FileContainingSymbol(%s) = %d files, %v", name, len(files), err)
		}
		if grpcreflect.IsReflectionStreamBroken(err) {
			stream.Close()
			stream = client.NewStream(ctx)
		}
	}
}

func testCORS(t *testing.T, srv *running) {
	const path = "/" + tenantregistryv1connect.TenantServiceName + "/CreateTenant"
	const (
		connectHeaders = "authorization,connect-protocol-version,content-type"
		grpcWebHeaders = "authorization,content-type,x-grpc-web,x-user-agent"
	)
	tests := []struct {
		name    string
		origin  string
		headers string
		allowed bool
	}{
		{"portal dev server", "http://localhost:5173", connectHeaders, true},
		{"portal dev server, gRPC-Web", "http://localhost:5173", grpcWebHeaders, true},
		{"loopback address", "http://127.0.0.1:3000", connectHeaders, true},
		{"localhost without port", "http://localhost", connectHeaders, true},
		{"other site", "https://evil.example", connectHeaders, false},
		{"localhost as a subdomain", "http://localhost.evil.example", connectHeaders, false},
		{"localhost subdomain over https", "https://evil.localhost:5173", connectHeaders, false},
		{"null origin", "null", connectHeaders, false},
	}
	client := testserver.HTTP1
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodOptions, srv.baseURL+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Origin", tc.origin)
			req.Header.Set("Access-Control-Request-Method", http.MethodPost)
			// Browsers send these names lower-cased and sorted (Fetch
			// standard), which is the form rs/cors accepts.
			req.Header.Set("Access-Control-Request-Headers", tc.headers)
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode >= 300 {
				t.Errorf("preflight: HTTP %d", res.StatusCode)
			}
			acao := res.Header.Get("Access-Control-Allow-Origin")
			if !tc.allowed {
				if acao != "" {
					t.Errorf("origin %s allowed (Access-Control-Allow-Origin %q)", tc.origin, acao)
				}
				return
			}
			if acao != tc.origin {
				t.Errorf("Access-Control-Allow-Origin %q, want %q", acao, tc.origin)
			}
			methods := strings.ToUpper(res.Header.Get("Access-Control-Allow-Methods"))
			if !strings.Contains(methods, http.MethodPost) {
				t.Errorf("Access-Control-Allow-Methods %q lacks POST", methods)
			}
			headers := strings.ToLower(strings.Join(res.Header.Values("Access-Control-Allow-Headers"), ","))
			for _, h := range strings.Split(tc.headers, ",") {
				if !strings.Contains(headers, h) {
					t.Errorf("Access-Control-Allow-Headers %q lacks %s", headers, h)
				}
			}
		})
	}

	t.Run("actual request exposes headers", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodPost, srv.baseURL+"/"+tenantregistryv1connect.TenantServiceName+"/GetTenant",
			strings.NewReader(`{"id":"`+seedTenantID+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", "http://localhost:5173")
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || res.Header.Get("Access-Control-Allow-Origin") != "http://localhost:5173" {
			t.Errorf("HTTP %d, Access-Control-Allow-Origin %q", res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"))
		}
		if exposed := strings.ToLower(res.Header.Get("Access-Control-Expose-Headers")); !strings.Contains(exposed, "grpc-status") {
			t.Errorf("Access-Control-Expose-Headers %q lacks grpc-status", exposed)
		}
	})
}

func TestLoadConfigDefaults(t *testing.T) {
	c, err := LoadConfig(envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Env", c.Env, "dev"},
		{"Addr", c.Addr, ":8090"},
		{"DatabaseURL", c.DatabaseURL, ""},
		{"Issuer", c.Issuer, ""},
		{"TenantClaim", c.TenantClaim, "tenant_id"},
		{"CORSOrigins", len(c.CORSOrigins), 0},
		{"LogLevel", c.LogLevel, slog.LevelInfo},
		{"LogFormat", c.LogFormat, "text"},
		{"MaxMessageBytes", c.MaxMessageBytes, 4 << 20},
		{"ShutdownGrace", c.ShutdownGrace, 20 * time.Second},
		{"ShutdownDelay", c.ShutdownDelay, time.Duration(0)}, // dev: no load balancer to tell
		{"ReadHeaderTimeout", c.ReadHeaderTimeout, 10 * time.Second},
		{"RequestTimeout", c.RequestTimeout, 30 * time.Second},
		{"DBMaxConns", c.DBMaxConns, 0},
		{"BodyReadTimeout", c.BodyReadTimeout, 10 * time.Second},
		{"MaxStreams", c.MaxStreams, 100},
		{"OIDCFetchTimeout", c.OIDCFetchTimeout, 3 * time.Second},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestLoadConfigValid(t *testing.T) {
	tests := []struct {
		name  string
		env   map[string]string
		check func(c Config) bool
	}{
		{"values are trimmed", map[string]string{"APP_ENV": " dev ", "ADDR": " 127.0.0.1:9000 "},
			func(c Config) bool { return c.Env == "dev" && c.Addr == "127.0.0.1:9000" }},
		{"postgres URL", map[string]string{"DATABASE_URL": "postgres://u@db:5432/registry?sslmode=disable"},
			func(c Config) bool { return c.DatabaseURL == "postgres://u@db:5432/registry?sslmode=disable" }},
		{"postgresql URL", map[string]string{"DATABASE_URL": "postgresql://db/registry"},
			func(c Config) bool { return c.DatabaseURL == "postgresql://db/registry" }},
		{"sqlite URL", map[string]string{"DATABASE_URL": "sqlite::memory:"},
			func(c Config) bool { return c.DatabaseURL == "sqlite::memory:" }},
		{"CORS origins", map[string]string{"CORS_ALLOWED_ORIGINS": " https://portal.example.com/ , http://localhost:5173,"},
			func(c Config) bool {
				return slices.Equal(c.CORSOrigins, []string{"https://portal.example.com", "http://localhost:5173"})
			}},
		{"log level in capitals", map[string]string{"LOG_LEVEL": "DEBUG"}, func(c Config) bool { return c.LogLevel == slog.LevelDebug }},
		{"json logs", map[string]string{"LOG_FORMAT": "json"}, func(c Config) bool { return c.LogFormat == "json" }},
		{"smallest message bound", map[string]string{"MAX_MESSAGE_BYTES": "1024"}, func(c Config) bool { return c.MaxMessageBytes == 1024 }},
		{"no shutdown grace", map[string]string{"SHUTDOWN_GRACE": "0s"}, func(c Config) bool { return c.ShutdownGrace == 0 }},
		{"issuer and audience", map[string]string{"KEYCLOAK_ISSUER": "https://keycloak.example.com/realms/platform", "OIDC_AUDIENCE": "tenant-registry"},
			func(c Config) bool {
				return c.Issuer == "https://keycloak.example.com/realms/platform" && c.Audience == "tenant-registry"
			}},
		{"prod with an issuer", map[string]string{"APP_ENV": "prod", "KEYCLOAK_ISSUER": "https://keycloak.example.com/realms/platform", "OIDC_AUDIENCE": "tenant-registry"},
			func(c Config) bool { return c.Env == "prod" && c.LogFormat == "json" }},
		{"tenant claim", map[string]string{"OIDC_TENANT_CLAIM": "org"}, func(c Config) bool { return c.TenantClaim == "org" }},
		{"limits", map[string]string{"READ_HEADER_TIMEOUT": "2s", "REQUEST_TIMEOUT": "1m", "DB_MAX_CONNS": "16", "SHUTDOWN_DELAY": "0s"},
			func(c Config) bool {
				return c.ReadHeaderTimeout == 2*time.Second && c.RequestTimeout == time.Minute && c.DBMaxConns == 16 && c.ShutdownDelay == 0
			}},
		{"body deadline and streams", map[string]string{"BODY_READ_TIMEOUT": "2s", "HTTP2_MAX_CONCURRENT_STREAMS": "20"},
			func(c Config) bool { return c.BodyReadTimeout == 2*time.Second && c.MaxStreams == 20 }},
		{"issuer timeout", map[string]string{"OIDC_FETCH_TIMEOUT": "500ms"}, func(c Config) bool { return c.OIDCFetchTimeout == 500*time.Millisecond }},
		{"shutdown delay outside dev", map[string]string{"APP_ENV": "prod", "KEYCLOAK_ISSUER": "https://keycloak.example.com/realms/platform", "OIDC_AUDIENCE": "tenant-registry"},
			func(c Config) bool { return c.ShutdownDelay == 5*time.Second }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadConfig(envOf(tc.env))
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			if !tc.check(c) {
				t.Errorf("unexpected config %+v", c)
			}
		})
	}
}

func TestLoadConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string // variables the error must name
	}{
		{"unknown env", map[string]string{"APP_ENV": "qa"}, []string{"APP_ENV"}},
		{"address without port", map[string]string{"ADDR": "nope"}, []string{"ADDR"}},
		{"port out of range", map[string]string{"ADDR": ":99999"}, []string{"ADDR"}},
		{"port not a number", map[string]string{"ADDR": ":http-alt"}, []string{"ADDR"}},
		{"unsupported database", map[string]string{"DATABASE_URL": "mysql://x"}, []string{"DATABASE_URL"}},
		{"unknown log level", map[string]string{"LOG_LEVEL": "loud"}, []string{"LOG_LEVEL"}},
		{"unknown log format", map[string]string{"LOG_FORMAT": "xml"}, []string{"LOG_FORMAT"}},
		{"CORS origin not an origin", map[string]string{"CORS_ALLOWED_ORIGINS": "not-an-origin"}, []string{"CORS_ALLOWED_ORIGINS"}},
		{"CORS origin with a path", map[string]string{"CORS_ALLOWED_ORIGINS": "https://portal.example.com/app"}, []string{"CORS_ALLOWED_ORIGINS"}},
		{"message bound not a number", map[string]string{"MAX_MESSAGE_BYTES": "abc"}, []string{"MAX_MESSAGE_BYTES"}},
		{"message bound too small", map[string]string{"MAX_MESSAGE_BYTES": "10"}, []string{"MAX_MESSAGE_BYTES"}},
		{"negative shutdown grace", map[string]string{"SHUTDOWN_GRACE": "-1s"}, []string{"SHUTDOWN_GRACE"}},
		{"shutdown grace without unit", map[string]string{"SHUTDOWN_GRACE": "20"}, []string{"SHUTDOWN_GRACE"}},
		{"issuer not http", map[string]string{"KEYCLOAK_ISSUER": "ftp://x", "OIDC_AUDIENCE": "tenant-registry"}, []string{"KEYCLOAK_ISSUER"}},
		{"issuer without audience", map[string]string{"KEYCLOAK_ISSUER": "https://keycloak.example.com/realms/platform"}, []string{"OIDC_AUDIENCE"}},
		{"trusted proxy not an address", map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8,proxy.internal"}, []string{"TRUSTED_PROXIES"}},
		{"key cache neither on nor off", map[string]string{"KEY_CACHE": "maybe"}, []string{"KEY_CACHE"}},
		{"pprof address without a port", map[string]string{"PPROF_ADDR": "localhost"}, []string{"PPROF_ADDR"}},
		{"pprof host with a space", map[string]string{"PPROF_ADDR": "local host:6060"}, []string{"PPROF_ADDR"}},
		{"metrics port out of range", map[string]string{"METRICS_ADDR": ":70000"}, []string{"METRICS_ADDR"}},
		{"read header timeout without unit", map[string]string{"READ_HEADER_TIMEOUT": "10"}, []string{"READ_HEADER_TIMEOUT"}},
		{"request timeout zero", map[string]string{"REQUEST_TIMEOUT": "0s"}, []string{"REQUEST_TIMEOUT"}},
		{"request timeout over an hour", map[string]string{"REQUEST_TIMEOUT": "2h"}, []string{"REQUEST_TIMEOUT"}},
		{"pool of zero connections", map[string]string{"DB_MAX_CONNS": "0"}, []string{"DB_MAX_CONNS"}},
		{"pool size not a number", map[string]string{"DB_MAX_CONNS": "many"}, []string{"DB_MAX_CONNS"}},
		{"body timeout without unit", map[string]string{"BODY_READ_TIMEOUT": "10"}, []string{"BODY_READ_TIMEOUT"}},
		{"body timeout zero", map[string]string{"BODY_READ_TIMEOUT": "0s"}, []string{"BODY_READ_TIMEOUT"}},
		{"streams not a number", map[string]string{"HTTP2_MAX_CONCURRENT_STREAMS": "lots"}, []string{"HTTP2_MAX_CONCURRENT_STREAMS"}},
		{"zero streams", map[string]string{"HTTP2_MAX_CONCURRENT_STREAMS": "0"}, []string{"HTTP2_MAX_CONCURRENT_STREAMS"}},
		{"issuer timeout over a minute", map[string]string{"OIDC_FETCH_TIMEOUT": "5m"}, []string{"OIDC_FETCH_TIMEOUT"}},
		{"negative shutdown delay", map[string]string{"SHUTDOWN_DELAY": "-1s"}, []string{"SHUTDOWN_DELAY"}},
		{"prod without issuer", map[string]string{"APP_ENV": "prod"}, []string{"KEYCLOAK_ISSUER"}},
		{"stage without issuer", map[string]string{"APP_ENV": "stage"}, []string{"KEYCLOAK_ISSUER"}},
		{"several at once", map[string]string{"ADDR": "nope", "LOG_LEVEL": "loud", "LOG_FORMAT": "xml"},
			[]string{"ADDR", "LOG_LEVEL", "LOG_FORMAT"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadConfig(envOf(tc.env))
			if err == nil {
				t.Fatalf("LoadConfig(%v) succeeded", tc.env)
			}
			for _, name := range tc.want {
				if !strings.Contains(err.Error(), name) {
					t.Errorf("error %q does not name %s", err, name)
				}
			}
		})
	}
}

func TestSchemaCurrent(t *testing.T) {
	for _, d := range databases {
		t.Run(d.name, func(t *testing.T) {
			ctx := context.Background()
			db, err := persistence.Open(ctx, d.url(t))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			migrator, err := db.Migrator()
			if err != nil {
				t.Fatal(err)
			}
			err = schemaCurrent(ctx, migrator)
			if err == nil || !strings.Contains(err.Error(), "tenant-registry migrate up") {
				t.Fatalf("schemaCurrent on an unmigrated database = %v, want an error naming `tenant-registry migrate up`", err)
			}
			if _, err := migrator.Up(ctx); err != nil {
				t.Fatal(err)
			}
			if err := schemaCurrent(ctx, migrator); err != nil {
				t.Fatalf("schemaCurrent after migrate up = %v", err)
			}
		})
	}
}

// TestOpenMigrationPolicy checks what Main.Open does with an unmigrated
// PostgreSQL database: dev migrates it; elsewhere it refuses to start,
// names the command to run, and leaves the schema alone.
func TestOpenMigrationPolicy(t *testing.T) {
	tests := []struct {
		env       string
		wantErr   string
		wantTable bool
	}{
		{"dev", "", true},
		{"prod", "tenant-registry migrate up", false},
		{"stage", "tenant-registry migrate up", false},
	}
	for _, tc := range tests {
		t.Run(tc.env, func(t *testing.T) {
			ctx := context.Background()
			url := testdb.PostgresURL(t)
			env := map[string]string{"APP_ENV": tc.env, "DATABASE_URL": url, "SHUTDOWN_GRACE": "1s"}
			if tc.env != "dev" {
				// Never contacted: Open stops at the schema check.
				env["KEYCLOAK_ISSUER"] = "https://keycloak.invalid/realms/platform"
				env["OIDC_AUDIENCE"] = "tenant-registry"
			}
			cfg, err := LoadConfig(envOf(env))
			if err != nil {
				t.Fatal(err)
			}
			m := &Main{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
			err = m.Open(ctx)
			defer m.Close()
			if tc.wantErr == "" && err != nil {
				t.Fatalf("Open: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Open = %v, want an error containing %q", err, tc.wantErr)
			}
			db, err := persistence.Open(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var exists bool
			if err := db.Bun().NewRaw("SELECT to_regclass('public.tenants') IS NOT NULL").Scan(ctx, &exists); err != nil {
				t.Fatal(err)
			}
			if exists != tc.wantTable {
				t.Errorf("tenants table exists = %v, want %v", exists, tc.wantTable)
			}
		})
	}
}

func TestRunMigrate(t *testing.T) {
	dbURL := "sqlite:" + filepath.Join(t.TempDir(), "cli.db")
	env := envOf(map[string]string{"DATABASE_URL": dbURL})
	// lines runs the command and returns its output lines; every step
	// depends on the previous one, so they share one database.
	lines := func(t *testing.T, args ...string) []string {
		t.Helper()
		var out, errOut bytes.Buffer
		if err := run(context.Background(), args, env, &out, &errOut); err != nil {
			t.Fatalf("run %v: %v (stderr %q)", args, err, errOut.String())
		}
		return strings.Split(strings.TrimSpace(out.String()), "\n")
	}
	states := func(t *testing.T) map[string]string {
		t.Helper()
		got := map[string]string{}
		for _, l := range lines(t, "migrate", "status") {
			state, name, ok := strings.Cut(l, " ")
			if !ok {
				t.Fatalf("status line %q", l)
			}
			got[strings.TrimSpace(name)] = state
		}
		return got
	}
	before := states(t)
	if len(before) < 2 {
		t.Fatalf("status lists %v, want every migration", before)
	}
	for name, state := range before {
		if state != "pending" {
			t.Errorf("fresh database: %s is %s, want pending", name, state)
		}
	}
	applied := lines(t, "migrate", "up")
	if len(applied) != len(before) {
		t.Errorf("migrate up printed %q, want one line per migration (%d)", applied, len(before))
	}
	for _, l := range applied {
		name, ok := strings.CutPrefix(l, "applied ")
		if !ok || before[name] != "pending" {
			t.Errorf("migrate up printed %q", l)
		}
	}
	for name, state := range states(t) {
		if state != "applied" {
			t.Errorf("after migrate up: %s is %s", name, state)
		}
	}
	if got := lines(t, "migrate", "up"); !slices.Equal(got, []string{"nothing to do"}) {
		t.Errorf("second migrate up printed %q", got)
	}
	// The migrated database serves: readiness via schemaCurrent.
	db, err := persistence.Open(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	migrator, err := db.Migrator()
	if err != nil {
		t.Fatal(err)
	}
	if err := schemaCurrent(context.Background(), migrator); err != nil {
		t.Errorf("schemaCurrent after `migrate up`: %v", err)
	}
	db.Close()
	rolledBack := lines(t, "migrate", "down")
	if len(rolledBack) == 0 || !strings.HasPrefix(rolledBack[0], "rolled back ") {
		t.Errorf("migrate down printed %q", rolledBack)
	}
}

func TestRunErrors(t *testing.T) {
	dbURL := "sqlite:" + filepath.Join(t.TempDir(), "cli.db")
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string // "" for success
		wantOut string
	}{
		{"help", []string{"help"}, nil, "", "migrate up"},
		{"unknown command", []string{"frobnicate"}, nil, `unknown command "frobnicate"`, ""},
		{"migrate without a step", []string{"migrate"}, map[string]string{"DATABASE_URL": dbURL}, "migrate needs", ""},
		{"unknown migrate step", []string{"migrate", "sideways"}, map[string]string{"DATABASE_URL": dbURL}, `unknown migrate command "sideways"`, ""},
		{"migrate step with arguments", []string{"migrate", "up", "now"}, map[string]string{"DATABASE_URL": dbURL}, "takes no arguments", ""},
		{"serve with arguments", []string{"serve", "extra"}, map[string]string{"DATABASE_URL": dbURL}, "serve takes no arguments", ""},
		{"bad configuration", []string{"migrate", "status"}, map[string]string{"APP_ENV": "qa", "LOG_FORMAT": "xml"}, "APP_ENV", ""},
		{"bad database URL", []string{"migrate", "status"}, map[string]string{"DATABASE_URL": "mysql://x"}, "DATABASE_URL", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), tc.args, envOf(tc.env), &out, &errOut)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("run %v: %v", tc.args, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("run %v = %v, want an error containing %q", tc.args, err, tc.wantErr)
			}
			if !strings.Contains(out.String(), tc.wantOut) {
				t.Errorf("stdout %q lacks %q", out.String(), tc.wantOut)
			}
		})
	}
}

func TestRunMigrateCreate(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, d := range []string{"postgres", "sqlite"} {
		if err := os.MkdirAll(filepath.Join("migrations", d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		args    []string
		wantErr bool
		files   int
	}{
		{"good name", []string{"migrate", "create", "add_widgets"}, false, 4},
		{"bad name", []string{"migrate", "create", "Add Widgets"}, true, 0},
		{"no name", []string{"migrate", "create"}, true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := filepath.Glob(filepath.Join("migrations", "*", "*.sql"))
			var out bytes.Buffer
			err := run(context.Background(), tc.args, envOf(nil), &out, io.Discard)
			if (err != nil) != tc.wantErr {
				t.Fatalf("run %v: %v, want error %v", tc.args, err, tc.wantErr)
			}
			after, _ := filepath.Glob(filepath.Join("migrations", "*", "*.sql"))
			if len(after)-len(before) != tc.files {
				t.Errorf("%d files created, want %d: %v", len(after)-len(before), tc.files, after)
			}
		})
	}
}

// Serve must also return the listener's error when it cannot serve at all.
func TestServeClosedListener(t *testing.T) {
	cfg, err := LoadConfig(envOf(devEnv("sqlite:" + filepath.Join(t.TempDir(), "closed.db"))))
	if err != nil {
		t.Fatal(err)
	}
	m := &Main{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	defer m.Close()
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := m.Listen(); err != nil {
		t.Fatal(err)
	}
	m.Server.Close() // closes the listener Serve would serve on
	if err := m.Serve(context.Background()); err == nil || errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve on a closed listener = %v, want the accept error", err)
	}
}
