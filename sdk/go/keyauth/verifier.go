package keyauth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	registryv1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
)

// Identity is who presented a good key, as the registry verified it. It is
// shared between the requests that present the same key: read it, do not
// change it.
type Identity struct {
	KeyID      string
	TenantID   string
	TenantSlug string
	Scopes     []string
	Products   []string // the products the tenant is entitled to now
	// Entitlements are those of Products, with the limits in force: what
	// the tenant's plan allows. The registry does not meter usage: compare
	// your own counts with them.
	Entitlements []Entitlement
	Metadata     map[string]string // the key's, as its tenant set it
}

// Entitlement is a tenant's right to a product, as verified.
type Entitlement struct {
	Product    string
	Status     string    // TRIAL or ACTIVE
	ExpireTime time.Time // zero: no end
	Limits     map[string]int64
}

// Limit returns the limit key of product (e.g. "seats"), and whether the
// tenant's entitlement to it sets one.
func (id *Identity) Limit(product, key string) (int64, bool) {
	for _, e := range id.Entitlements {
		if e.Product == product {
			n, ok := e.Limits[key]
			return n, ok
		}
	}
	return 0, false
}

// Denied is the refusal of a key: Status 401 when the key is no good
// (missing, MALFORMED, NOT_FOUND, REVOKED, EXPIRED, DISABLED, TENANT_FROZEN), 403
// when it is good but not here (INSUFFICIENT_SCOPE, NOT_ENTITLED).
type Denied struct {
	Code   string // the registry's verification code, e.g. REVOKED
	Status int
}

func (d *Denied) Error() string {
	if d.Status == http.StatusForbidden {
		return "API key not allowed here: " + d.Code
	}
	return "invalid API key: " + d.Code
}

// ErrUnavailable is wrapped by the error of a verification the registry
// could not answer: fail closed (503), do not let the request in.
var ErrUnavailable = errors.New("cannot verify the API key now; retry later")

// maxKeyLen bounds what is sent to the registry: keys are 25 (previous
// format) or 52 characters.
const maxKeyLen = 128

var denyMalformed = &Denied{Code: "MALFORMED", Status: http.StatusUnauthorized}

// unvouched is the stream vouching for nothing.
const unvouched = math.MinInt64

// Verifier verifies API keys through the registry, caching the answers
// coherently with the registry's change stream (see Run). It is safe for
// concurrent use.
type Verifier struct {
	cfg     Config
	keys    tenantregistryv1connect.ApiKeyServiceClient
	changes tenantregistryv1connect.ChangeServiceClient
	cache   *cache

	epoch time.Time
	// vouched is the moment, in nanoseconds since epoch, up to which the
	// change stream vouches that every change has been applied.
	vouched atomic.Int64
	state   atomic.Int32 // a StreamState
	running atomic.Bool
	stats   counters
	logged  atomic.Int64 // when a failed call was last logged, ns since epoch
}

// New returns a Verifier for cfg. Start its Run too: until the change
// stream is live every request asks the registry.
func New(cfg Config) (*Verifier, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	opts := append([]connect.ClientOption{connect.WithInterceptors(serviceKey(cfg.ServiceKey))}, cfg.ClientOptions...)
	v := &Verifier{
		cfg:     cfg,
		keys:    tenantregistryv1connect.NewApiKeyServiceClient(cfg.HTTPClient, cfg.RegistryURL, opts...),
		changes: tenantregistryv1connect.NewChangeServiceClient(cfg.HTTPClient, cfg.RegistryURL, opts...),
		cache:   newCache(cfg.MaxEntries),
		epoch:   time.Now(),
	}
	v.vouched.Store(unvouched)
	v.state.Store(int32(StreamDown))
	return v, nil
}

// Verify returns the identity behind key, or why it is refused: a *Denied,
// or an error wrapping ErrUnavailable when the registry cannot be asked.
func (v *Verifier) Verify(ctx context.Context, key string) (*Identity, error) {
	if !strings.HasPrefix(key, "bp_") || len(key) > maxKeyLen {
		return nil, denyMalformed
	}
	var buf [maxKeyLen]byte // hashed from the stack: no allocation per request
	d := digest(sha256.Sum256(buf[:copy(buf[:], key)]))
	now := time.Now()
	a, ok, gen := v.cache.get(d, now)
	if ok && v.trusted(now) {
		v.stats.hits.Add(1)
		return a.identity, a.err()
	}
	v.stats.misses.Add(1)
	ctx, cancel := context.WithTimeout(ctx, v.cfg.VerifyTimeout)
	defer cancel()
	res, err := v.keys.VerifyApiKey(ctx, &registryv1.VerifyApiKeyRequest{
		Key: key, Product: v.cfg.Product, RequiredScopes: v.cfg.RequiredScopes,
	})
	if err != nil {
		v.stats.registryErrors.Add(1)
		v.logFailure(err)
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	e := v.entryOf(res, now)
	v.cache.put(d, e, gen)
	return e.identity, e.err()
}

func (a answer) err() error {
	if a.denied != nil {
		return a.denied
	}
	return nil
}

// entryOf turns the registry's answer into what is cached, and until when.
func (v *Verifier) entryOf(res *registryv1.VerifyApiKeyResponse, now time.Time) *entry {
	e := &entry{expires: now.Add(v.cfg.TTL)}
	code := strings.TrimPrefix(res.GetCode().String(), "API_KEY_VERIFICATION_CODE_")
	switch res.GetCode() {
	case registryv1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID:
		e.identity = &Identity{
			KeyID: res.GetKeyId(), TenantID: res.GetTenantId(), TenantSlug: res.GetTenantSlug(),
			Scopes: res.GetScopes(), Products: res.GetProducts(), Metadata: res.GetMetadata(),
		}
		for _, ent := range res.GetEntitlements() {
			out := Entitlement{
				Product: ent.GetProduct(), Status: strings.TrimPrefix(ent.GetStatus().String(), "ENTITLEMENT_STATUS_"),
				Limits: ent.GetLimits(),
			}
			if ent.GetExpireTime() != nil {
				out.ExpireTime = ent.GetExpireTime().AsTime()
			}
			e.identity.Entitlements = append(e.identity.Entitlements, out)
		}
		e.keyID, e.tenantID = res.GetKeyId(), res.GetTenantId()
		if until := res.GetValidUntil(); until != nil && until.AsTime().Before(time.Now().Add(v.cfg.TTL)) {
			e.expires = now.Add(time.Until(until.AsTime())) // on the monotonic clock, like now
		}
	case registryv1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_INSUFFICIENT_SCOPE,
		registryv1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_NOT_ENTITLED:
		e.denied, e.undoes = &Denied{Code: code, Status: http.StatusForbidden}, true
	case registryv1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_TENANT_FROZEN,
		registryv1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_DISABLED:
		e.denied, e.undoes = &Denied{Code: code, Status: http.StatusUnauthorized}, true
	case registryv1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_NOT_FOUND:
		e.denied, e.notFound = &Denied{Code: code, Status: http.StatusUnauthorized}, true
	default: // MALFORMED, REVOKED, EXPIRED: for good
		e.denied = &Denied{Code: code, Status: http.StatusUnauthorized}
	}
	return e
}

// trusted reports whether the cache may answer at now: the change stream
// vouches for every change up to less than MaxStaleness ago.
func (v *Verifier) trusted(now time.Time) bool {
	vouched := v.vouched.Load()
	return vouched != unvouched && time.Duration(int64(now.Sub(v.epoch))-vouched) < v.cfg.MaxStaleness
}

// Trusted reports whether the cache answers now.
func (v *Verifier) Trusted() bool { return v.trusted(time.Now()) }

// logFailure logs a failed call to the registry, at most once a second.
func (v *Verifier) logFailure(err error) {
	now := int64(time.Since(v.epoch))
	last := v.logged.Load()
	if now-last < int64(time.Second) && last != 0 || !v.logged.CompareAndSwap(last, now) {
		return
	}
	v.cfg.Logger.Warn("keyauth: the registry cannot verify keys; refusing requests with 503", "error", err)
}

// serviceKey sends the product's own key with every call to the registry.
type serviceKey string

func (k serviceKey) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if k != "" {
			req.Header().Set("Authorization", "Bearer "+string(k))
		}
		return next(ctx, req)
	}
}

func (k serviceKey) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if k != "" {
			conn.RequestHeader().Set("Authorization", "Bearer "+string(k))
		}
		return conn
	}
}

func (k serviceKey) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
