package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/transport"
)

// observed is a Main serving on a free loopback port, with its log.
type observed struct {
	m    *Main
	url  string
	logs *testserver.Logs
}

// serveObserved opens and serves a Main as the binary does, from env
// through LoadConfig and newLogger, with spans going to spans (when set).
func serveObserved(t *testing.T, env map[string]string, spans sdktrace.SpanExporter) *observed {
	t.Helper()
	r := serveWith(t, env, func(m *Main) { m.SpanExporter = spans })
	return &observed{m: r.m, url: r.baseURL, logs: r.logs}
}

// TestTelemetry runs the real wiring with an in-memory span exporter and
// METRICS_ADDR: every RPC gets one server span named after its procedure,
// the queries it makes are its child spans, and /metrics has the RPC
// metrics and the service's own.
func TestTelemetry(t *testing.T) {
	for _, d := range databases {
		t.Run(d.name, func(t *testing.T) { checkTelemetry(t, d.url(t), d.name == "sqlite") })
	}
}

// checkTelemetry is TestTelemetry on the database at databaseURL; the
// metrics are checked with withMetrics only: on PostgreSQL the key cache
// is trusted only once the change feed's listener is current, which the
// test does not wait for, so its counts there depend on timing.
func checkTelemetry(t *testing.T, databaseURL string, withMetrics bool) {
	spans := tracetest.NewInMemoryExporter()
	env := devEnv(databaseURL)
	env["METRICS_ADDR"] = "127.0.0.1:0"
	srv := serveObserved(t, env, spans)
	if srv.m.MetricsAddr() == "" {
		t.Fatal("METRICS_ADDR is set, but no metrics listener")
	}
	before := scrape(t, srv.m.MetricsAddr())

	ctx := context.Background()
	tenants := tenantregistryv1connect.NewTenantServiceClient(http.DefaultClient, srv.url)
	keys := tenantregistryv1connect.NewApiKeyServiceClient(http.DefaultClient, srv.url)
	audit := tenantregistryv1connect.NewAuditServiceClient(http.DefaultClient, srv.url)
	tn, err := tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: "initech", DisplayName: "Initech"})
	if err != nil {
		t.Fatalf("CreateTenant: %v", err)
	}
	if _, err := tenants.GetTenant(ctx, &v1.GetTenantRequest{Id: tn.GetTenant().GetId()}); err != nil {
		t.Fatalf("GetTenant: %v", err)
	}
	key, err := keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: tn.GetTenant().GetId(), Name: "robot", Scopes: []string{"reports:read"}})
	if err != nil {
		t.Fatalf("CreateApiKey: %v", err)
	}
	for range 3 { // the first reads the database, the others the cache
		res, err := keys.VerifyApiKey(ctx, &v1.VerifyApiKeyRequest{Key: key.GetPlaintextKey()})
		if err != nil || !res.GetValid() {
			t.Fatalf("VerifyApiKey: %v, %v", res, err)
		}
	}
	event := &v1.AuditEvent{
		TenantId: tn.GetTenant().GetId(), Product: "reports", Action: "report.viewed", Crud: "r",
		Actor: &v1.AuditActor{Id: "user-1"}, ExternalId: "view-1",
	}
	for range 2 { // the repeat is idempotent: one event appended
		if _, err := audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{Event: event}); err != nil {
			t.Fatalf("RecordAuditEvent: %v", err)
		}
	}

	t.Run("spans", func(t *testing.T) {
		want := map[string]int{
			"tenantregistry.v1.TenantService/CreateTenant":    1,
			"tenantregistry.v1.TenantService/GetTenant":       1,
			"tenantregistry.v1.ApiKeyService/CreateApiKey":    1,
			"tenantregistry.v1.ApiKeyService/VerifyApiKey":    3,
			"tenantregistry.v1.AuditService/RecordAuditEvent": 2,
		}
		var got []tracetest.SpanStub
		deadline := time.Now().Add(5 * time.Second)
		for {
			got = spans.GetSpans()
			n := 0
			for _, s := range got {
				if s.SpanKind == trace.SpanKindServer {
					n++
				}
			}
			if n >= 9 || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		servers := map[string][]tracetest.SpanStub{}
		byParent := map[trace.SpanID][]tracetest.SpanStub{}
		for _, s := range got {
			if s.SpanKind == trace.SpanKindServer {
				servers[s.Name] = append(servers[s.Name], s)
			}
			if s.Parent.IsValid() {
				byParent[s.Parent.SpanID()] = append(byParent[s.Parent.SpanID()], s)
			}
			if hasAttr(s.Attributes, "db.system") && !s.Parent.IsValid() {
				t.Errorf("database span %q has no parent: queries outside a request must not start traces", s.Name)
			}
		}
		for name, n := range want {
			if len(servers[name]) != n {
				t.Errorf("%d server spans named %s, want %d (one per RPC)", len(servers[name]), name, n)
			}
		}
		for _, name := range []string{
			"tenantregistry.v1.TenantService/CreateTenant", "tenantregistry.v1.TenantService/GetTenant",
			"tenantregistry.v1.ApiKeyService/CreateApiKey", "tenantregistry.v1.AuditService/RecordAuditEvent",
		} {
			for _, server := range servers[name] {
				var queries int
				for _, child := range byParent[server.SpanContext.SpanID()] {
					if child.SpanContext.TraceID() != server.SpanContext.TraceID() {
						t.Errorf("%s: child span %q is in another trace", name, child.Name)
					}
					if hasAttr(child.Attributes, "db.system") && hasAttr(child.Attributes, "db.statement") {
						queries++
						if stmt := attrValue(child.Attributes, "db.statement"); strings.Contains(stmt, "initech") || strings.Contains(stmt, "user-1") {
							t.Errorf("%s: a query span shows a value: %s", name, stmt)
						}
					}
				}
				if queries == 0 {
					t.Errorf("%s: no database child spans", name)
				}
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		if !withMetrics {
			t.Skip("metrics are checked on SQLite")
		}
		after := scrape(t, srv.m.MetricsAddr())
		for _, line := range []string{
			`rpc_server_call_duration_seconds_count{`,
			`tenantregistry.v1.TenantService/CreateTenant`,
			`target_info{`,
			`service_name="tenant-registry"`,
			`go_goroutines `,
			`go_sql_connections_open`,
		} {
			if !strings.Contains(after, line) {
				t.Errorf("/metrics lacks %s", line)
			}
		}
		ratio := metricValue(t, after, "tenant_registry_key_cache_hit_ratio")
		if lookups := metricValue(t, after, "tenant_registry_key_cache_lookups_total"); lookups < 3 {
			t.Errorf("key cache lookups = %v, want at least 3", lookups)
		}
		if ratio <= 0 || ratio >= 1 {
			t.Errorf("key cache hit ratio = %v, want between 0 and 1 after a miss and hits", ratio)
		}
		if current := metricValue(t, after, "tenant_registry_change_feed_current"); current != 1 {
			t.Errorf("change feed current = %v, want 1", current)
		}
		appended := metricValue(t, after, "tenant_registry_audit_events_appended_total") -
			metricValue(t, before, "tenant_registry_audit_events_appended_total")
		// CreateTenant, CreateApiKey and one RecordAuditEvent; its repeat
		// returned the stored event.
		if appended != 3 {
			t.Errorf("audit events appended during the test = %v, want 3", appended)
		}
	})
}

// TestOTLPExport runs the real OTLP exporters against an in-process
// receiver: with OTEL_EXPORTER_OTLP_ENDPOINT set, the spans of an RPC and
// the metrics reach the collector, named as the service, by the time Close
// has flushed them.
func TestOTLPExport(t *testing.T) {
	var mu sync.Mutex
	var traces []*coltracepb.ExportTraceServiceRequest
	var metricPosts int
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch r.URL.Path {
		case "/v1/traces":
			req := &coltracepb.ExportTraceServiceRequest{}
			if err := proto.Unmarshal(body, req); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			traces = append(traces, req)
		case "/v1/metrics":
			metricPosts++
		default:
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer receiver.Close()
	// The exporters read the standard variables from the process'
	// environment, as they do in production.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.URL)
	env := devEnv("sqlite:" + filepath.Join(t.TempDir(), "registry.db"))
	env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.URL
	cfg, err := LoadConfig(envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	m := &Main{Config: cfg, Logger: newLogger(cfg, io.Discard)}
	ctx, cancel := context.WithCancel(context.Background())
	if err := m.Open(ctx); err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := m.Listen(); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- m.Serve(ctx) }()
	tenants := tenantregistryv1connect.NewTenantServiceClient(http.DefaultClient, "http://"+m.Server.Addr())
	if _, err := tenants.GetTenantBySlug(ctx, &v1.GetTenantBySlugRequest{Slug: "acme"}); err != nil {
		t.Fatalf("GetTenantBySlug: %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if err := m.Close(); err != nil { // flushes the batch of spans and the metrics
		t.Fatalf("Close: %v", err)
	}

	mu.Lock()
	defer mu.Unlock()
	var server, queries int
	for _, req := range traces {
		for _, rs := range req.GetResourceSpans() {
			name := ""
			for _, a := range rs.GetResource().GetAttributes() {
				if a.GetKey() == "service.name" {
					name = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, span := range ss.GetSpans() {
					if name != "tenant-registry" {
						t.Errorf("span %q of service %q, want tenant-registry", span.GetName(), name)
					}
					switch {
					case span.GetName() == "tenantregistry.v1.TenantService/GetTenantBySlug":
						server++
					case len(span.GetParentSpanId()) > 0:
						queries++
					}
				}
			}
		}
	}
	if server != 1 || queries == 0 {
		t.Errorf("the collector got %d server spans and %d child spans, want 1 and some", server, queries)
	}
	if metricPosts == 0 {
		t.Error("the collector got no metrics")
	}
}

// TestNoTelemetryByDefault checks that without OTEL_* or METRICS_ADDR no
// provider exists: no interceptor, no query hook, no listener.
func TestNoTelemetryByDefault(t *testing.T) {
	srv := serveObserved(t, devEnv("sqlite:"+filepath.Join(t.TempDir(), "registry.db")), nil)
	tel := srv.m.telemetry
	if tel.tracer != nil || tel.meter != nil || tel.metrics != nil || srv.m.MetricsAddr() != "" {
		t.Errorf("telemetry without configuration: %+v, metrics on %q", tel, srv.m.MetricsAddr())
	}
	if i, err := tel.interceptors(); err != nil || len(i) != 0 {
		t.Errorf("interceptors without configuration: %v, %v", i, err)
	}
}

// TestLoadConfigTelemetry checks how the OTEL_* variables and METRICS_ADDR
// turn signals on, and that bad values name their variable.
func TestLoadConfigTelemetry(t *testing.T) {
	tests := []struct {
		env              map[string]string
		traces, metrics  bool
		protocol, errVar string
	}{
		{env: map[string]string{}, protocol: "http/protobuf"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, traces: true, metrics: true, protocol: "http/protobuf"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://collector/v1/traces", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, traces: true, protocol: "grpc"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_METRICS_EXPORTER": "none"}, traces: true, protocol: "http/protobuf"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, protocol: "http/protobuf"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, errVar: "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, errVar: "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, errVar: "OTEL_TRACES_EXPORTER"},
		{env: map[string]string{"METRICS_ADDR": "9090"}, errVar: "METRICS_ADDR"},
	}
	for _, tc := range tests {
		cfg, err := LoadConfig(envOf(tc.env))
		if tc.errVar != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errVar+":") {
				t.Errorf("%v: error %v, want one naming %s", tc.env, err, tc.errVar)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.env, err)
			continue
		}
		if cfg.OTLPTraces != tc.traces || cfg.OTLPMetrics != tc.metrics || cfg.OTLPProtocol != tc.protocol {
			t.Errorf("%v: traces %v, metrics %v, protocol %q; want %v, %v, %q",
				tc.env, cfg.OTLPTraces, cfg.OTLPMetrics, cfg.OTLPProtocol, tc.traces, tc.metrics, tc.protocol)
		}
	}
}

// TestRequestLog checks the per-RPC log line in JSON: it names the
// procedure, protocol, code, duration, principal, tenant and request id;
// the request id is the caller's when sane and comes back in a header; and
// no key, whether sent as a bearer token or in a body, reaches the log.
func TestRequestLog(t *testing.T) {
	env, admin := keyedEnv(t, "sqlite:"+filepath.Join(t.TempDir(), "registry.db"))
	srv := serveObserved(t, env, nil)

	ctx := context.Background()
	bearer := func(key string) connect.Interceptor {
		return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set("Authorization", "Bearer "+key)
				return next(ctx, req)
			}
		})
	}
	asAdmin := tenantregistryv1connect.NewApiKeyServiceClient(http.DefaultClient, srv.url, connect.WithInterceptors(bearer(admin)))
	created, err := asAdmin.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: domain.PlatformTenantID, Name: "verifier", Scopes: []string{"registry:verify"}})
	if err != nil {
		t.Fatalf("CreateApiKey: %v", err)
	}
	product := created.GetPlaintextKey()
	bogus := "bp_" + strings.Repeat("x", 49)

	asProduct := tenantregistryv1connect.NewApiKeyServiceClient(http.DefaultClient, srv.url, connect.WithInterceptors(bearer(product)))
	callCtx, call := connect.NewClientContext(ctx)
	call.RequestHeader().Set(transport.RequestIDHeader, "req-4711.a_b")
	res, err := asProduct.VerifyApiKey(callCtx, &v1.VerifyApiKeyRequest{Key: admin})
	if err != nil || !res.GetValid() {
		t.Fatalf("VerifyApiKey: %v, %v", res, err)
	}
	if got := call.ResponseHeader().Get(transport.RequestIDHeader); got != "req-4711.a_b" {
		t.Errorf("response %s = %q, want the caller's req-4711.a_b", transport.RequestIDHeader, got)
	}

	// A bad key as bearer token, and an id that is not sane: refused, and
	// the server makes up an id of its own.
	callCtx, call = connect.NewClientContext(ctx)
	call.RequestHeader().Set(transport.RequestIDHeader, "no spaces allowed")
	asBogus := tenantregistryv1connect.NewApiKeyServiceClient(http.DefaultClient, srv.url, connect.WithInterceptors(bearer(bogus)))
	_, err = asBogus.VerifyApiKey(callCtx, &v1.VerifyApiKeyRequest{Key: bogus})
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("VerifyApiKey with a bad bearer key: %v, want unauthenticated", err)
	}
	var ce *connect.Error
	generated := ""
	if errors.As(err, &ce) {
		generated = ce.Meta().Get(transport.RequestIDHeader)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`).MatchString(generated) || generated == "no spaces allowed" {
		t.Errorf("request id for an insane one = %q, want a new sane one", generated)
	}

	// A path no RPC serves still gets a line with the request id.
	httpReq, _ := http.NewRequest(http.MethodGet, srv.url+"/nowhere", nil)
	httpReq.Header.Set(transport.RequestIDHeader, "lost-1")
	httpRes, err := http.DefaultClient.Do(httpReq)
	if err != nil {
		t.Fatal(err)
	}
	httpRes.Body.Close()

	lines := logLines(t, srv.logs.String())
	ok := findLine(lines, "rpc", "req-4711.a_b")
	if ok == nil {
		t.Fatalf("no rpc line with request_id req-4711.a_b")
	}
	for field, want := range map[string]any{
		"procedure": tenantregistryv1connect.ApiKeyServiceVerifyApiKeyProcedure, "protocol": "connect",
		"code": "ok", "tenant": domain.PlatformTenantID,
		"principal": map[string]any{"id": created.GetApiKey().GetId(), "type": "platform_key"},
	} {
		if got, _ := json.Marshal(ok[field]); string(got) != mustJSON(t, want) {
			t.Errorf("rpc line %s = %s, want %s", field, got, mustJSON(t, want))
		}
	}
	if d, isNum := ok["duration_ms"].(float64); !isNum || d < 0 {
		t.Errorf("rpc line duration_ms = %v, want a number of milliseconds", ok["duration_ms"])
	}
	refused := findLine(lines, "rpc", generated)
	if refused == nil || refused["code"] != "unauthenticated" || refused["principal"] != nil {
		t.Errorf("line of the refused call = %v, want code unauthenticated and no principal", refused)
	}
	if lost := findLine(lines, "http", "lost-1"); lost == nil || lost["status"] != float64(404) || lost["path"] != "/nowhere" {
		t.Errorf("line of the unknown path = %v, want status 404 with its request id", lost)
	}
	for name, key := range map[string]string{"admin key": admin, "product key": product, "bad key": bogus} {
		if strings.Contains(srv.logs.String(), key) {
			t.Errorf("the %s appears in the log", name)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// logLines parses a JSON log, one object per line.
func logLines(t *testing.T, log string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line is not JSON: %s", sc.Text())
		}
		out = append(out, line)
	}
	return out
}

func findLine(lines []map[string]any, msg, requestID string) map[string]any {
	for _, l := range lines {
		if l["msg"] == msg && l["request_id"] == requestID {
			return l
		}
	}
	return nil
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("scrape /metrics: %d %v\n%s", res.StatusCode, err, b)
	}
	return string(b)
}

// metricValue returns the value of the one sample of name in a scrape.
func metricValue(t *testing.T, scraped, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(scraped, "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "{")) {
			f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return f
		}
	}
	t.Errorf("/metrics lacks %s", name)
	return 0
}

func hasAttr(attrs []attribute.KeyValue, key string) bool {
	for _, a := range attrs {
		if string(a.Key) == key {
			return true
		}
	}
	return false
}

func attrValue(attrs []attribute.KeyValue, key string) string {
	for _, a := range attrs {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}
