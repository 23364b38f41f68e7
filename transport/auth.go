package transport

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/tenant-registry/tenant-registry/domain"
)

// OIDCConfig says which access tokens to accept.
type OIDCConfig struct {
	Issuer      string // KEYCLOAK_ISSUER
	Audience    string // OIDC_AUDIENCE
	TenantClaim string // OIDC_TENANT_CLAIM: the claim naming the user's tenant
	// FetchTimeout bounds each request to the issuer (discovery, keys);
	// zero: DefaultIssuerFetchTimeout. OIDC_FETCH_TIMEOUT.
	FetchTimeout time.Duration
	// KeyRefetchInterval is the least time between two fetches of the
	// issuer's keys prompted by tokens no known key verifies; zero:
	// DefaultKeyRefetchInterval.
	KeyRefetchInterval time.Duration
}

// Authenticator turns the bearer token of a request into a principal: an
// OIDC access token of the configured issuer, or an API key of this
// registry verified through the same cache as VerifyApiKey (but never by
// the legacy argon2 path, which only VerifyApiKey's callers may ask for).
type Authenticator struct {
	cfg    OIDCConfig
	keys   *domain.KeyVerifier
	issuer *issuer // nil without cfg.Issuer: no token is accepted
}

// NewAuthenticator returns an Authenticator for tokens of cfg.Issuer and
// service keys verified by keys. The issuer is asked on first use.
func NewAuthenticator(cfg OIDCConfig, keys *domain.KeyVerifier) *Authenticator {
	a := &Authenticator{cfg: cfg, keys: keys}
	if cfg.Issuer != "" {
		a.issuer = newIssuer(cfg)
	}
	return a
}

// Close stops the Authenticator's background work (retries of a failed
// discovery).
func (a *Authenticator) Close() {
	if a.issuer != nil {
		a.issuer.close()
	}
}

// errMissingToken and errInvalidToken are the refusals of a credential.
// Each call gets an error of its own: a *connect.Error carries metadata
// that interceptors may set on the way out, so one shared by concurrent
// requests would be written by all of them at once.
func errMissingToken() error {
	return connect.NewError(connect.CodeUnauthenticated, errors.New("missing bearer token"))
}

func errInvalidToken() error {
	return connect.NewError(connect.CodeUnauthenticated, errors.New("invalid token"))
}

// Authenticate returns the principal of an Authorization header. Every
// rejected credential gets the same "invalid token", so a caller learns
// nothing about which part failed.
func (a *Authenticator) Authenticate(ctx context.Context, header string) (domain.Principal, error) {
	token, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || strings.TrimSpace(token) == "" {
		if header == "" {
			return domain.Principal{}, errMissingToken()
		}
		return domain.Principal{}, errInvalidToken()
	}
	token = strings.TrimSpace(token)
	if strings.HasPrefix(token, domain.KeyPrefix) {
		return a.serviceKey(ctx, token)
	}
	return a.accessToken(ctx, token)
}

func (a *Authenticator) serviceKey(ctx context.Context, key string) (domain.Principal, error) {
	v, err := a.keys.Authenticate(ctx, key)
	if err != nil {
		return domain.Principal{}, err
	}
	if !v.Valid() {
		return domain.Principal{}, errInvalidToken()
	}
	return domain.KeyPrincipal(v), nil
}

// accessTokenClaims are the claims read from an access token, as Keycloak
// puts them.
type accessTokenClaims struct {
	Subject           string `json:"sub"`
	Name              string `json:"name"`
	PreferredUsername string `json:"preferred_username"`
	RealmAccess       struct {
		Roles []string `json:"roles"`
	} `json:"realm_access"`
}

func (a *Authenticator) accessToken(ctx context.Context, raw string) (domain.Principal, error) {
	if a.issuer == nil {
		return domain.Principal{}, errInvalidToken()
	}
	verifier, err := a.issuer.tokenVerifier(ctx)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return domain.Principal{}, cerr // the caller's deadline came first: DeadlineExceeded
		}
		return domain.Principal{}, domain.Wrap(domain.KindUnavailable, err, "the identity provider cannot be reached; try again")
	}
	tok, err := verifier.Verify(ctx, raw)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return domain.Principal{}, cerr // ran out of time waiting for the issuer's keys
		}
		return domain.Principal{}, errInvalidToken()
	}
	var claims accessTokenClaims
	var all map[string]any
	if tok.Claims(&claims) != nil || tok.Claims(&all) != nil || claims.Subject == "" {
		return domain.Principal{}, errInvalidToken()
	}
	tenant, _ := all[a.cfg.TenantClaim].(string)
	name := claims.Name
	if name == "" {
		name = claims.PreferredUsername
	}
	return domain.UserPrincipal(claims.Subject, name, tenant, claims.RealmAccess.Roles), nil
}

// callerInterceptor authenticates every RPC and puts the domain.Caller
// into its context: the principal and the source address. Without an
// Authenticator (dev mode, no issuer) every call acts as DevPrincipal.
type callerInterceptor struct {
	auth    *Authenticator
	sources sourceResolver
}

func (i callerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		ctx, err := i.with(ctx, req.Peer(), req.Header())
		if err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (i callerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i callerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, err := i.with(ctx, conn.Peer(), conn.RequestHeader())
		if err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

func (i callerInterceptor) with(ctx context.Context, peer connect.Peer, h http.Header) (context.Context, error) {
	p := DevPrincipal
	if i.auth != nil {
		var err error
		if p, err = i.auth.Authenticate(ctx, h.Get("Authorization")); err != nil {
			return ctx, err
		}
	}
	if ri := requestInfoFrom(ctx); ri != nil {
		ri.setPrincipal(p) // for the request's log lines, the per-RPC line included
	}
	return domain.WithCaller(ctx, domain.Caller{Principal: p, SourceIP: i.sources.sourceIP(peer.Addr, h)}), nil
}
