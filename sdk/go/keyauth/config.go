package keyauth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"connectrpc.com/connect"
)

// Config says which registry to ask and what a key must allow.
type Config struct {
	// RegistryURL is the registry's base URL, e.g. http://tenant-registry:8090.
	RegistryURL string
	// ServiceKey is the product's own key for the registry: a platform key
	// with scope registry:verify. It is sent with every call.
	ServiceKey string
	// Product is this product's key in the registry's catalog: a caller's
	// tenant must be entitled to it. Empty: no such check.
	Product string
	// RequiredScopes must all be on a caller's key.
	RequiredScopes []string

	// HTTPClient carries the calls to the registry; by default a client of
	// the Verifier's own. It must not time out whole requests (the change
	// stream is one long request): deadlines are set per call.
	HTTPClient connect.HTTPClient
	// ClientOptions are added to the registry clients' options, e.g.
	// connect.WithGRPC() with an HTTP/2 HTTPClient. By default the Connect
	// protocol, binary, over HTTP/1.1.
	ClientOptions []connect.ClientOption
	// VerifyTimeout bounds one VerifyApiKey call (default 2 s): the longest
	// a request waits before it is refused with 503.
	VerifyTimeout time.Duration

	// MaxStaleness is how old what the cache knows may be: it answers only
	// while the change stream's last heartbeat, its age and the staleness
	// it reported add up to less (default 750 ms; at most 1 s). It bounds
	// how long a revoked key can still be let in here.
	MaxStaleness time.Duration
	// TTL bounds how long an answer is cached at all (default 5 min), a
	// backstop beside the change stream. A valid answer also goes when the
	// registry says it changes with time (the key expires, an entitlement
	// ends).
	TTL time.Duration
	// MaxEntries bounds the cache (default 10 000), so a flood of random
	// keys cannot grow it without limit.
	MaxEntries int

	// Logger receives the change stream's state changes and failed calls
	// to the registry (at most one line a second); default slog.Default().
	Logger *slog.Logger
	// OnStreamState, when set, is called on every change of the change
	// stream's state, for metrics. It must not block.
	OnStreamState func(StreamState)
}

// Defaults of Config.
const (
	DefaultVerifyTimeout = 2 * time.Second
	DefaultMaxStaleness  = 750 * time.Millisecond
	MaxMaxStaleness      = time.Second
	DefaultTTL           = 5 * time.Minute
	DefaultMaxEntries    = 10_000
)

// withDefaults checks c and fills in what is unset.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if u, err := url.Parse(c.RegistryURL); c.RegistryURL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("RegistryURL: want http(s)://host[:port], got %q", c.RegistryURL))
	}
	if c.MaxStaleness < 0 || c.MaxStaleness > MaxMaxStaleness {
		errs = append(errs, fmt.Errorf("MaxStaleness: want at most %v, got %v", MaxMaxStaleness, c.MaxStaleness))
	}
	if c.VerifyTimeout < 0 || c.TTL < 0 || c.MaxEntries < 0 {
		errs = append(errs, errors.New("VerifyTimeout, TTL and MaxEntries must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("keyauth: %w", err)
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second,
		}}
	}
	if c.VerifyTimeout == 0 {
		c.VerifyTimeout = DefaultVerifyTimeout
	}
	if c.MaxStaleness == 0 {
		c.MaxStaleness = DefaultMaxStaleness
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.MaxEntries == 0 {
		c.MaxEntries = DefaultMaxEntries
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}
