package transport

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// Defaults of OIDCConfig's bounds on the issuer.
const (
	DefaultIssuerFetchTimeout = 3 * time.Second
	DefaultKeyRefetchInterval = 5 * time.Second
)

// Backoff of discovery retries after a failure.
const (
	issuerRetryFirst = time.Second
	issuerRetryMax   = time.Minute
)

// issuer is the configured OpenID provider as this server knows it: its
// token verifier, discovered on first use (so the server starts while the
// provider is down) and then kept.
//
// Nothing here lets the provider stall the server. Discovery runs in the
// background with a timeout and holds no lock while it asks; requests
// wait for it only while the very first discovery is in flight, and then
// no longer than their own deadline. Once a discovery has failed, user
// token calls answer Unavailable at once while it is retried in the
// background with backoff (1 s doubling to a minute). Service keys never
// come here.
type issuer struct {
	cfg    OIDCConfig
	client *http.Client

	mu       sync.Mutex // guards what follows; never held across a request to the provider
	verifier *oidc.IDTokenVerifier
	attempt  chan struct{} // closed when the discovery in flight ends; nil when none runs
	failed   error         // the last discovery's error, until one succeeds
	backoff  time.Duration
	retry    *time.Timer
	closed   bool
}

func newIssuer(cfg OIDCConfig) *issuer {
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = DefaultIssuerFetchTimeout
	}
	if cfg.KeyRefetchInterval <= 0 {
		cfg.KeyRefetchInterval = DefaultKeyRefetchInterval
	}
	return &issuer{cfg: cfg, client: &http.Client{Timeout: cfg.FetchTimeout}}
}

// errIssuerDown says why the provider could not be asked. It does not
// unwrap: a discovery that timed out is the provider's fault, not the
// caller's deadline, and must not be answered as DeadlineExceeded.
type errIssuerDown struct{ err error }

func (e errIssuerDown) Error() string { return fmt.Sprintf("OIDC discovery: %v", e.err) }

// tokenVerifier returns the verifier, or errIssuerDown when the provider
// cannot be reached, or ctx's error when the caller's deadline came first.
func (s *issuer) tokenVerifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	s.mu.Lock()
	switch {
	case s.verifier != nil:
		v := s.verifier
		s.mu.Unlock()
		return v, nil
	case s.failed != nil:
		err := s.failed
		s.mu.Unlock()
		return nil, errIssuerDown{err}
	case s.closed:
		s.mu.Unlock()
		return nil, errIssuerDown{errors.New("the server is shutting down")}
	case s.attempt == nil:
		s.startLocked()
	}
	wait := s.attempt
	s.mu.Unlock()
	select {
	case <-wait:
		return s.tokenVerifier(ctx)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// startLocked starts a discovery in the background.
func (s *issuer) startLocked() {
	done := make(chan struct{})
	s.attempt = done
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.FetchTimeout)
		defer cancel()
		v, err := s.discover(ctx)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.attempt = nil
		close(done)
		if err == nil {
			s.verifier, s.failed, s.backoff = v, nil, 0
			return
		}
		s.failed = err
		s.backoff = min(max(2*s.backoff, issuerRetryFirst), issuerRetryMax)
		if !s.closed {
			s.retry = time.AfterFunc(s.backoff, s.retryDiscovery)
		}
	}()
}

func (s *issuer) retryDiscovery() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed && s.verifier == nil && s.attempt == nil {
		s.startLocked()
	}
}

// discover reads the provider's metadata and its keys, within ctx.
func (s *issuer) discover(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	provider, err := oidc.NewProvider(oidc.ClientContext(ctx, s.client), s.cfg.Issuer)
	if err != nil {
		return nil, err
	}
	var meta struct {
		JWKSURL string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := provider.Claims(&meta); err != nil {
		return nil, fmt.Errorf("read the discovery document: %w", err)
	}
	keys := &keySet{url: meta.JWKSURL, client: s.client, minInterval: s.cfg.KeyRefetchInterval}
	// The first keys now, so that a provider that cannot serve them counts
	// as down rather than failing every token afterwards.
	if err := keys.load(ctx); err != nil {
		return nil, err
	}
	var algs []string
	for _, a := range meta.Algs {
		if slices.Contains(signingAlgs, jose.SignatureAlgorithm(a)) {
			algs = append(algs, a)
		}
	}
	return oidc.NewVerifier(s.cfg.Issuer, keys, &oidc.Config{ClientID: s.cfg.Audience, SupportedSigningAlgs: algs}), nil
}

// close stops the background retries.
func (s *issuer) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.retry != nil {
		s.retry.Stop()
	}
}
