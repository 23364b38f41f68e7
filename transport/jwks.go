package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// signingAlgs are the asymmetric JOSE algorithms tokens may be signed
// with, as go-oidc accepts them; symmetric ones (HS256, which Keycloak
// also advertises) would make the key set a shared secret.
var signingAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512, jose.EdDSA,
}

// maxJWKSBytes bounds the key set document an issuer may send.
const maxJWKSBytes = 1 << 20

// keySet is the issuer's signing keys (its JWKS), an oidc.KeySet for
// go-oidc's token verifier. It replaces go-oidc's RemoteKeySet, which
// fetches the keys again for every token whose key id it does not know or
// whose signature does not verify: with forged tokens, one fetch from the
// issuer per request, at the sender's rate. Here a token that no known key
// verifies triggers a fetch only if the last one started at least
// minInterval ago (keys rotate rarely; a new key is picked up within
// minInterval of its first token), every fetch has a timeout, concurrent
// callers share the one in flight, each waiting no longer than its own
// deadline, and no lock is held while the issuer is asked.
type keySet struct {
	url         string
	client      *http.Client // its Timeout bounds every fetch
	minInterval time.Duration

	mu        sync.Mutex
	keys      []jose.JSONWebKey
	lastFetch time.Time     // when the last fetch started
	inflight  chan struct{} // closed when the fetch in flight ends; nil when none
}

var _ oidc.KeySet = (*keySet)(nil)

var errNoKey = errors.New("no key of the issuer verifies the token's signature")

// VerifySignature returns the token's payload when one of the issuer's
// keys verifies its signature. go-oidc has checked the algorithm already.
func (s *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSigned(jwt, signingAlgs)
	if err != nil {
		return nil, fmt.Errorf("malformed token: %w", err)
	}
	if payload, ok := s.verify(jws); ok {
		return payload, nil
	}
	wait := s.refresh()
	if wait == nil {
		return nil, errNoKey // fetched a moment ago: a new key would be there
	}
	select {
	case <-wait:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if payload, ok := s.verify(jws); ok {
		return payload, nil
	}
	return nil, errNoKey
}

func (s *keySet) verify(jws *jose.JSONWebSignature) ([]byte, bool) {
	s.mu.Lock()
	keys := s.keys
	s.mu.Unlock()
	kid := ""
	if len(jws.Signatures) > 0 {
		kid = jws.Signatures[0].Header.KeyID
	}
	for i := range keys {
		if kid != "" && keys[i].KeyID != kid {
			continue
		}
		if payload, err := jws.Verify(&keys[i]); err == nil {
			return payload, true
		}
	}
	return nil, false
}

// refresh starts a fetch unless one runs (it is joined) or one started
// less than minInterval ago (nil: nothing to wait for).
func (s *keySet) refresh() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight != nil {
		return s.inflight
	}
	if time.Since(s.lastFetch) < s.minInterval {
		return nil
	}
	s.lastFetch = time.Now()
	done := make(chan struct{})
	s.inflight = done
	go func() {
		// Not the caller's context: the fetch serves every caller, and the
		// client's timeout bounds it.
		keys, err := s.fetch(context.Background())
		s.mu.Lock()
		if err == nil {
			s.keys = keys
		}
		s.inflight = nil
		s.mu.Unlock()
		close(done)
	}()
	return done
}

// load fetches the keys for the first time, within ctx.
func (s *keySet) load(ctx context.Context) error {
	s.mu.Lock()
	s.lastFetch = time.Now()
	s.mu.Unlock()
	keys, err := s.fetch(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
	return nil
}

// fetch reads the key set document. Keys of a type or algorithm this
// server cannot use are skipped, as go-oidc does, rather than failing the
// whole set.
func (s *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, fmt.Errorf("keys URL %q: %w", s.url, err)
	}
	req.Header.Set("Cache-Control", "no-cache")
	res, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch the issuer's keys: %w", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxJWKSBytes+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("read the issuer's keys: %w", err)
	case res.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("fetch the issuer's keys: %s", res.Status)
	case len(body) > maxJWKSBytes:
		return nil, fmt.Errorf("the issuer's key set is larger than %d bytes", maxJWKSBytes)
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("decode the issuer's keys: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range doc.Keys {
		var k jose.JSONWebKey
		if k.UnmarshalJSON(raw) != nil || !k.Valid() || !k.IsPublic() {
			continue
		}
		if k.Algorithm != "" && !slices.Contains(signingAlgs, jose.SignatureAlgorithm(k.Algorithm)) {
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("the issuer's key set holds no usable signing key")
	}
	return keys, nil
}
