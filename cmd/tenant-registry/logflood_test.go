package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
)

// withBearer sets the Authorization header of every unary call.
func withBearer(key string) connect.ClientOption {
	return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+key)
			return next(ctx, req)
		}
	}))
}

// rpcCount is the request count of procedure with code in a scrape.
func rpcCount(t *testing.T, scraped, procedure, code string) float64 {
	t.Helper()
	for _, line := range strings.Split(scraped, "\n") {
		if strings.HasPrefix(line, "rpc_server_call_duration_seconds_count{") &&
			strings.Contains(line, `rpc_method="`+strings.TrimPrefix(procedure, "/")+`"`) &&
			strings.Contains(line, `rpc_response_status_code="`+strings.ToUpper(code)+`"`) {
			f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// TestLogFloods sends floods of what a stranger (or a busy product) can
// send at will: refused tokens, unknown paths, unsupported compression,
// junk HTTP/2 frames, streams reset at once, and successful key checks.
// No kind of line is written more often than its budget; the rest of
// each flood is counted in a "log lines sampled" line; and the metrics
// count every call.
func TestLogFloods(t *testing.T) {
	const n = 60
	env, admin := keyedEnv(t, "sqlite:"+filepath.Join(t.TempDir(), "registry.db"))
	env["METRICS_ADDR"] = "127.0.0.1:0"
	env["LOG_LEVEL"] = "info"
	srv := serve(t, env)
	ctx := context.Background()
	client := testserver.HTTP1
	asAdmin := tenantregistryv1connect.NewApiKeyServiceClient(client, srv.baseURL, withBearer(admin))
	asStranger := tenantregistryv1connect.NewApiKeyServiceClient(client, srv.baseURL, withBearer("bp_"+strings.Repeat("x", 49)))
	plainRequest := func(method, path, contentEncoding string) {
		req, err := http.NewRequest(method, srv.baseURL+path, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if contentEncoding != "" {
			req.Header.Set("Content-Encoding", contentEncoding)
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}

	// Floods whose every request makes exactly one line of its kind.
	counted := []struct {
		name   string
		send   func()
		kind   func(line map[string]any) bool
		code   string // the kind's code in its summary
		budget int
	}{
		{"successful key checks", func() {
			if res, err := asAdmin.VerifyApiKey(ctx, &v1.VerifyApiKeyRequest{Key: admin}); err != nil || !res.GetValid() {
				t.Fatalf("VerifyApiKey: %v, %v", res, err)
			}
		}, func(l map[string]any) bool {
			return l["msg"] == "rpc" && l["code"] == "ok" && l["procedure"] == tenantregistryv1connect.ApiKeyServiceVerifyApiKeyProcedure
		}, "ok", 10},
		{"refused tokens", func() {
			if _, err := asStranger.VerifyApiKey(ctx, &v1.VerifyApiKeyRequest{Key: admin}); connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Fatalf("VerifyApiKey with a bad token: %v", err)
			}
		}, func(l map[string]any) bool { return l["msg"] == "rpc" && l["code"] == "unauthenticated" }, "unauthenticated", 20},
		{"unknown paths", func() { plainRequest(http.MethodGet, "/wp-login.php", "") },
			func(l map[string]any) bool { return l["msg"] == "http" && l["status"] == float64(404) }, "404", 20},
		{"unsupported compression", func() { plainRequest(http.MethodPost, createTenantPath, "br") },
			func(l map[string]any) bool { return l["msg"] == "http" && l["status"] == float64(501) }, "501", 20},
	}
	for _, f := range counted {
		for range n {
			f.send()
		}
	}
	scraped := scrape(t, srv.m.MetricsAddr())
	for code, want := range map[string]float64{"ok": n, "unauthenticated": n} {
		if got := rpcCount(t, scraped, tenantregistryv1connect.ApiKeyServiceVerifyApiKeyProcedure, code); got != want {
			t.Errorf("metrics count %v VerifyApiKey calls with code %s, want %v: sampling must not touch metrics", got, code, want)
		}
	}
	if got, want := metricValue(t, scraped, "tenant_registry_log_lines_suppressed_total"), float64(4*n-10-3*20); got != want {
		t.Errorf("tenant_registry_log_lines_suppressed_total = %v, want %v", got, want)
	}

	// Floods of HTTP/2 abuse: a frame on stream 0 (a connection error the
	// HTTP/2 server logs), and streams reset as soon as they are opened.
	addr := strings.TrimPrefix(srv.baseURL, "http://")
	for range n {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fr := http2.NewFramer(conn, conn)
		fr.AllowIllegalWrites = true
		_, _ = io.WriteString(conn, http2.ClientPreface)
		_ = fr.WriteSettings()
		_ = fr.WriteData(0, true, []byte("junk"))
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for { // until the server says goodbye
			f, err := fr.ReadFrame()
			if _, away := f.(*http2.GoAwayFrame); away || err != nil {
				break
			}
		}
		conn.Close()
	}
	c := dialH2(t, srv)
	for i := range uint32(n) {
		c.open(2*i + 1)
		c.ping() // the server has taken the stream, and started its handler
		if err := c.fr.WriteRSTStream(2*i+1, http2.ErrCodeCancel); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := asAdmin.GetApiKey(ctx, &v1.GetApiKeyRequest{Id: "00000000-0000-0000-0000-000000000000"}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("a call after the floods: %v", err) // the server still serves
	}

	if err := srv.stop(); err != nil { // writes the summaries of what was left out
		t.Fatal(err)
	}
	lines := logLines(t, srv.logs.String())
	perKind := map[string]int{}
	for _, l := range lines {
		if l["msg"] == "rpc" || l["msg"] == "http" {
			kind := strings.Join([]string{l["msg"].(string), str(l["code"]), str(l["status"]), str(l["grpc_status"])}, " ")
			if l["msg"] == "rpc" && l["code"] == "ok" {
				kind += " " + str(l["procedure"])
			}
			perKind[kind]++
		} else if strings.HasPrefix(str(l["msg"]), "http2:") {
			perKind["http server"]++
		}
	}
	for kind, got := range perKind {
		if got > 20 {
			t.Errorf("%d lines of kind %q, more than any budget", got, kind)
		}
	}
	if perKind["http server"] == 0 {
		t.Error("no line of the HTTP/2 server's complaints at all: the junk flood proves nothing")
	}
	summaries := map[string]map[string]any{}
	for _, l := range lines {
		if l["msg"] == "log lines sampled" {
			summaries[str(l["line"])+" "+str(l["code"])+" "+str(l["procedure"])] = l
		}
	}
	t.Logf("full lines per kind: %v", perKind)
	for _, f := range counted {
		full := 0
		for _, l := range lines {
			if f.kind(l) {
				full++
			}
		}
		line, procedure := "http", ""
		if f.name == "successful key checks" {
			line, procedure = "rpc", tenantregistryv1connect.ApiKeyServiceVerifyApiKeyProcedure
		} else if f.name == "refused tokens" {
			line = "rpc"
		}
		s := summaries[line+" "+f.code+" "+procedure]
		if full != f.budget || s == nil || s["suppressed"] != float64(n-f.budget) {
			t.Errorf("%s: %d full lines and summary %v; want %d lines and %d suppressed", f.name, full, s, f.budget, n-f.budget)
		}
	}
	if s := summaries["http server  "]; s == nil || s["suppressed"].(float64)+float64(perKind["http server"]) > n {
		t.Errorf("HTTP/2 junk: %d full lines and summary %v, want at most %d lines in all", perKind["http server"], s, n)
	}
	// A stream reset while its body is read is canceled (grpc-status 1).
	if s, full := summaries["http 200 grpc-status 1 "], perKind["http  200 1"]; s == nil || full+int(s["suppressed"].(float64)) != n {
		t.Errorf("reset streams: %d full lines and summary %v; want %d lines in all", full, s, n)
	}
}

func str(v any) string {
	if v == nil {
		return ""
	}
	if f, ok := v.(float64); ok {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return v.(string)
}
