package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/transport"
)

// Config is the service's configuration, read from the environment.
type Config struct {
	Env             string // dev, stage or prod
	Addr            string
	DatabaseURL     string // empty: the embedded SQLite default
	Issuer          string // KEYCLOAK_ISSUER
	Audience        string // OIDC_AUDIENCE
	TenantClaim     string // OIDC_TENANT_CLAIM
	CORSOrigins     []string
	TrustedProxies  []netip.Prefix // proxies whose X-Forwarded-For is believed
	LogLevel        slog.Level
	LogFormat       string // text or json
	MaxMessageBytes int
	ShutdownGrace   time.Duration
	KeyCache        bool   // KEY_CACHE: cache verified keys (on) or read the database every time (off)
	PprofAddr       string // PPROF_ADDR: where net/http/pprof listens; empty: nowhere
	MetricsAddr     string // METRICS_ADDR: where Prometheus scrapes /metrics; empty: nowhere
	OTLPTraces      bool   // export spans over OTLP (OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT is set)
	OTLPMetrics     bool   // export metrics over OTLP (OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT is set)
	OTLPProtocol    string // OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf or grpc

	// Limits that keep a replica alive under bad clients and a bad database.
	ReadHeaderTimeout time.Duration // READ_HEADER_TIMEOUT
	BodyReadTimeout   time.Duration // BODY_READ_TIMEOUT: how long a request body may take to arrive
	MaxStreams        int           // HTTP2_MAX_CONCURRENT_STREAMS: open HTTP/2 streams per connection
	OIDCFetchTimeout  time.Duration // OIDC_FETCH_TIMEOUT: bound of each request to the issuer
	RequestTimeout    time.Duration // REQUEST_TIMEOUT: deadline of a unary call, down to the database
	DBMaxConns        int           // DB_MAX_CONNS: pool bound; 0: a few per core
	ShutdownDelay     time.Duration // SHUTDOWN_DELAY: serving while not ready after SIGTERM

	// The key audit checkpoints are signed with: AUDIT_SIGNING_KEY, or the
	// file AUDIT_SIGNING_KEY_FILE holds it in; and the verifier keys of the
	// keys it replaced, AUDIT_EARLIER_VERIFIER_KEYS.
	AuditSigningKey     string
	AuditSigningKeyFile string
	AuditEarlierKeys    []string
	AuditRetentionDays  int // AUDIT_RETENTION_DAYS: how long logs keep events unless set per log; 0: forever
}

// LoadConfig reads the configuration through getenv. Every bad value is
// reported, each naming its variable.
func LoadConfig(getenv func(string) string) (Config, error) {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
	}
	get := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	c := Config{
		Env:         get("APP_ENV", "dev"),
		Addr:        get("ADDR", ":8090"),
		DatabaseURL: get("DATABASE_URL", ""),
		Issuer:      get("KEYCLOAK_ISSUER", ""),
		Audience:    get("OIDC_AUDIENCE", ""),
		TenantClaim: get("OIDC_TENANT_CLAIM", "tenant_id"),
	}
	switch c.Env {
	case "dev", "stage", "prod":
	default:
		bad("APP_ENV", "want dev, stage or prod, got %q", c.Env)
	}
	checkAddr("ADDR", c.Addr, "host:port or :port", bad)
	if c.DatabaseURL != "" && !strings.HasPrefix(c.DatabaseURL, "postgres://") &&
		!strings.HasPrefix(c.DatabaseURL, "postgresql://") && !strings.HasPrefix(c.DatabaseURL, "sqlite:") {
		bad("DATABASE_URL", "want postgres://…, sqlite:PATH, or empty for the embedded default")
	}
	if c.Issuer != "" {
		if u, err := url.Parse(c.Issuer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("KEYCLOAK_ISSUER", "want the issuer URL, e.g. https://keycloak.example.com/realms/platform, got %q", c.Issuer)
		}
	}
	for _, o := range splitList(getenv("CORS_ALLOWED_ORIGINS")) {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			bad("CORS_ALLOWED_ORIGINS", "want a comma-separated list of origins like https://portal.example.com, got %q", o)
			continue
		}
		c.CORSOrigins = append(c.CORSOrigins, strings.TrimSuffix(o, "/"))
	}
	for _, p := range splitList(getenv("TRUSTED_PROXIES")) {
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			addr, aerr := netip.ParseAddr(p)
			if aerr != nil {
				bad("TRUSTED_PROXIES", "want a comma-separated list of addresses or CIDR prefixes like 10.0.0.0/8, got %q", p)
				continue
			}
			prefix = netip.PrefixFrom(addr, addr.BitLen())
		}
		c.TrustedProxies = append(c.TrustedProxies, prefix.Masked())
	}
	switch lvl := strings.ToLower(get("LOG_LEVEL", "info")); lvl {
	case "debug", "info", "warn", "error":
		_ = c.LogLevel.UnmarshalText([]byte(lvl))
	default:
		bad("LOG_LEVEL", "want debug, info, warn or error, got %q", lvl)
	}
	defaultFormat := "json"
	if c.Env == "dev" {
		defaultFormat = "text"
	}
	c.LogFormat = get("LOG_FORMAT", defaultFormat)
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("LOG_FORMAT", "want text or json, got %q", c.LogFormat)
	}
	// The server's limits default to transport's, which the tests' servers
	// run with too.
	limits := transport.DefaultConfig()
	c.MaxMessageBytes = limits.MaxMessageBytes
	if v := get("MAX_MESSAGE_BYTES", ""); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1024 || n > 64<<20 {
			bad("MAX_MESSAGE_BYTES", "want a number of bytes from 1024 to %d, got %q", 64<<20, v)
		}
		c.MaxMessageBytes = n
	}
	c.ShutdownGrace = limits.ShutdownGrace
	if v := get("SHUTDOWN_GRACE", ""); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			bad("SHUTDOWN_GRACE", "want a duration like 20s, got %q", v)
		}
		c.ShutdownGrace = d
	}
	duration := func(name string, def, min, max time.Duration) time.Duration {
		v := get(name, "")
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < min || d > max {
			bad(name, "want a duration from %s to %s, like %s, got %q", min, max, def, v)
			return def
		}
		return d
	}
	c.ReadHeaderTimeout = duration("READ_HEADER_TIMEOUT", limits.ReadHeaderTimeout, 100*time.Millisecond, 5*time.Minute)
	c.RequestTimeout = duration("REQUEST_TIMEOUT", limits.RequestTimeout, 100*time.Millisecond, time.Hour)
	c.BodyReadTimeout = duration("BODY_READ_TIMEOUT", limits.BodyReadTimeout, 100*time.Millisecond, time.Hour)
	c.OIDCFetchTimeout = duration("OIDC_FETCH_TIMEOUT", 3*time.Second, 100*time.Millisecond, time.Minute)
	c.MaxStreams = limits.MaxConcurrentStreams
	if v := get("HTTP2_MAX_CONCURRENT_STREAMS", ""); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			bad("HTTP2_MAX_CONCURRENT_STREAMS", "want a number of streams from 1 to 1000, got %q", v)
		} else {
			c.MaxStreams = n
		}
	}
	// Outside dev a load balancer decides where traffic goes: it needs a
	// few probes of a failing /readyz before the listener may close.
	defaultDelay := 5 * time.Second
	if c.Env == "dev" {
		defaultDelay = 0
	}
	c.ShutdownDelay = duration("SHUTDOWN_DELAY", defaultDelay, 0, 5*time.Minute)
	if v := get("DB_MAX_CONNS", ""); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			bad("DB_MAX_CONNS", "want a number of connections from 1 to 1000, got %q", v)
		}
		c.DBMaxConns = n
	}
	switch v := get("KEY_CACHE", "on"); v {
	case "on", "off":
		c.KeyCache = v == "on"
	default:
		bad("KEY_CACHE", "want on or off, got %q", v)
	}
	// Profiles reveal internals, so they get a listener of their own that
	// is off unless asked for, and never share the public port.
	if c.PprofAddr = get("PPROF_ADDR", ""); c.PprofAddr != "" {
		checkAddr("PPROF_ADDR", c.PprofAddr, "host:port, e.g. 127.0.0.1:6060", bad)
	}
	if c.MetricsAddr = get("METRICS_ADDR", ""); c.MetricsAddr != "" {
		checkAddr("METRICS_ADDR", c.MetricsAddr, "host:port or :port, e.g. :9090", bad)
	}
	loadOTLP(&c, get, bad)
	c.AuditSigningKey, c.AuditSigningKeyFile = get("AUDIT_SIGNING_KEY", ""), get("AUDIT_SIGNING_KEY_FILE", "")
	c.AuditEarlierKeys = splitList(getenv("AUDIT_EARLIER_VERIFIER_KEYS"))
	switch {
	case c.AuditSigningKey != "" && c.AuditSigningKeyFile != "":
		bad("AUDIT_SIGNING_KEY", "set it or AUDIT_SIGNING_KEY_FILE, not both")
	case c.AuditSigningKey != "":
		if _, err := domain.NewCheckpointSigner(c.AuditSigningKey, c.AuditEarlierKeys...); err != nil {
			bad("AUDIT_SIGNING_KEY", "%v", err)
		}
	}
	c.AuditRetentionDays = domain.DefaultAuditRetentionDays
	if v := get("AUDIT_RETENTION_DAYS", ""); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > domain.MaxAuditRetentionDays {
			bad("AUDIT_RETENTION_DAYS", "want a number of days from 0 (keep forever) to %d, got %q", domain.MaxAuditRetentionDays, v)
		}
		c.AuditRetentionDays = n
	}
	for _, k := range c.AuditEarlierKeys {
		if _, err := note.NewVerifier(k); err != nil {
			bad("AUDIT_EARLIER_VERIFIER_KEYS", "want comma-separated note verifier keys like name+1234abcd+AbC…, got %.40q", k)
		}
	}
	if c.Env != "dev" && c.Issuer == "" {
		bad("KEYCLOAK_ISSUER", "is required with APP_ENV=%s: only dev may run without authentication", c.Env)
	}
	if c.Issuer != "" && c.Audience == "" {
		bad("OIDC_AUDIENCE", "is required with KEYCLOAK_ISSUER: the audience access tokens must carry")
	}
	return c, errors.Join(errs...)
}

// loadOTLP decides which signals go to an OpenTelemetry collector. The
// OTLP exporters read the standard OTEL_* variables themselves (endpoint,
// headers, timeouts, TLS); here they are only checked, so that a mistyped
// endpoint stops the server instead of exporting nowhere, and a signal
// with no endpoint costs nothing.
func loadOTLP(c *Config, get func(name, def string) string, bad func(name, format string, args ...any)) {
	endpoint := func(name string) bool {
		v := get(name, "")
		if v == "" {
			return false
		}
		if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(name, "want the collector's URL, e.g. http://otel-collector:4318, got %q", v)
			return false
		}
		return true
	}
	exporter := func(name string) bool {
		switch v := get(name, "otlp"); v {
		case "otlp":
			return true
		case "none":
			return false
		default:
			bad(name, "want otlp or none, got %q", v)
			return false
		}
	}
	common := endpoint("OTEL_EXPORTER_OTLP_ENDPOINT")
	traces := endpoint("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	metrics := endpoint("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
	c.OTLPTraces = exporter("OTEL_TRACES_EXPORTER") && (common || traces)
	c.OTLPMetrics = exporter("OTEL_METRICS_EXPORTER") && (common || metrics)
	switch v := strings.ToLower(get("OTEL_SDK_DISABLED", "false")); v {
	case "true":
		c.OTLPTraces, c.OTLPMetrics = false, false
	case "false":
	default:
		bad("OTEL_SDK_DISABLED", "want true or false, got %q", v)
	}
	switch c.OTLPProtocol = get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"); c.OTLPProtocol {
	case "http/protobuf", "grpc":
	default:
		bad("OTEL_EXPORTER_OTLP_PROTOCOL", "want http/protobuf or grpc, got %q", c.OTLPProtocol)
	}
}

// checkAddr reports, through bad, a listen address of the variable name
// that is not host:port (as want describes it) with a port from 0 to
// 65535 and a host net.Listen could take.
func checkAddr(name, addr, want string, bad func(name, format string, args ...any)) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		bad(name, "want %s, got %q", want, addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 || strings.ContainsAny(host, "/ ") {
		bad(name, "want host:port with a port from 0 to 65535, got %q", addr)
	}
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
