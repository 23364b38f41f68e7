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
	KeyCache        bool // KEY_CACHE: cache verified keys (on) or read the database every time (off)
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
	if host, port, err := net.SplitHostPort(c.Addr); err != nil {
		bad("ADDR", "want host:port or :port, got %q", c.Addr)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 || strings.ContainsAny(host, "/ ") {
		bad("ADDR", "want host:port with a port from 0 to 65535, got %q", c.Addr)
	}
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
	c.MaxMessageBytes = 4 << 20
	if v := get("MAX_MESSAGE_BYTES", ""); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1024 || n > 64<<20 {
			bad("MAX_MESSAGE_BYTES", "want a number of bytes from 1024 to %d, got %q", 64<<20, v)
		}
		c.MaxMessageBytes = n
	}
	c.ShutdownGrace = 20 * time.Second
	if v := get("SHUTDOWN_GRACE", ""); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			bad("SHUTDOWN_GRACE", "want a duration like 20s, got %q", v)
		}
		c.ShutdownGrace = d
	}
	switch v := get("KEY_CACHE", "on"); v {
	case "on", "off":
		c.KeyCache = v == "on"
	default:
		bad("KEY_CACHE", "want on or off, got %q", v)
	}
	if c.Env != "dev" && c.Issuer == "" {
		bad("KEYCLOAK_ISSUER", "is required with APP_ENV=%s: only dev may run without authentication", c.Env)
	}
	if c.Issuer != "" && c.Audience == "" {
		bad("OIDC_AUDIENCE", "is required with KEYCLOAK_ISSUER: the audience access tokens must carry")
	}
	return c, errors.Join(errs...)
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
