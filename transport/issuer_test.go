package transport_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/coreos/go-oidc/v3/oidc/oidctest"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
	"github.com/tenant-registry/tenant-registry/transport"
)

const testAudience = "tenant-registry"

// hungIssuer is an identity provider that accepts connections and never
// answers; it counts the connections it got.
type hungIssuer struct {
	url   string
	conns atomic.Int64
}

func newHungIssuer(t *testing.T) *hungIssuer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hungIssuer{url: "http://" + ln.Addr().String() + "/realms/hung"}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.conns.Add(1)
			mu.Lock()
			held = append(held, c) // read nothing, answer nothing
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return h
}

// platformKey makes a service key with the registry:admin scope directly
// through the domain, as `tenant-registry keys bootstrap` does.
func platformKey(t *testing.T, srv *testserver.Server) string {
	t.Helper()
	ctx := domain.WithCaller(context.Background(), domain.Caller{Principal: domain.Principal{
		ID: "bootstrap", Type: "bootstrap", Roles: []string{domain.RolePlatformAdmin},
	}})
	_, plaintext, err := domain.NewApiKeyService(srv.DB.Store(), srv.Clock.Now, srv.Verifier).Create(ctx, domain.CreateApiKey{
		TenantID: domain.PlatformTenantID, Name: "admin", Scopes: []string{domain.ScopeAdmin},
	})
	if err != nil {
		t.Fatal(err)
	}
	return plaintext
}

// call runs ListTenants as token within deadline, and returns its code (0
// for success) and how long it took.
func call(c clients, token string, deadline time.Duration) (connect.Code, time.Duration) {
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), tokenKey{}, token), deadline)
	defer cancel()
	start := time.Now()
	_, err := c.tenants.ListTenants(ctx, &v1.ListTenantsRequest{})
	if err == nil {
		return 0, time.Since(start)
	}
	return connect.CodeOf(err), time.Since(start)
}

// TestHungIssuer points the server at a provider that never answers. A
// user-token call with a 2 s deadline ends by then (plus a margin), with
// deadline_exceeded or unavailable; service-key calls made meanwhile are
// answered; once the first discovery has timed out, user calls are
// answered unavailable before their deadline; and discovery is retried in
// the background, not once per call.
func TestHungIssuer(t *testing.T) {
	const deadline, margin = 2 * time.Second, time.Second
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		iss := newHungIssuer(t)
		srv := testserver.StartWith(t, db, &transport.OIDCConfig{Issuer: iss.url, Audience: testAudience, TenantClaim: "tenant_id"})
		c := newClients(srv.URL)
		key := platformKey(t, srv)
		token := newIssuer(t).token(t, "alice", "", testAudience, time.Now().Add(time.Hour), "platform-admin")

		type answer struct {
			code connect.Code
			took time.Duration
		}
		first := make(chan answer, 1)
		go func() {
			code, took := call(c, token, deadline)
			first <- answer{code, took}
		}()
		for iss.conns.Load() == 0 { // the first call is waiting on the provider now
			time.Sleep(time.Millisecond)
		}
		if code, _ := call(c, key, deadline/2); code != 0 {
			t.Errorf("a service-key call while the provider hangs: %v, want it answered", code)
		}
		got := <-first
		if (got.code != connect.CodeDeadlineExceeded && got.code != connect.CodeUnavailable) || got.took > deadline+margin {
			t.Errorf("a user call with a %v deadline while the provider hangs: %v after %v, want deadline_exceeded or unavailable by %v",
				deadline, got.code, got.took, deadline+margin)
		}
		t.Logf("first user call: %v after %v", got.code, got.took.Round(time.Millisecond))

		// The first discovery times out (OIDC_FETCH_TIMEOUT); from then on
		// calls are answered at once.
		calls := 1
		for start := time.Now(); ; calls++ {
			code, took := call(c, token, deadline)
			if code == connect.CodeUnavailable {
				if took >= deadline {
					t.Errorf("unavailable after %v, not before the %v deadline", took, deadline)
				}
				t.Logf("unavailable after %v", took.Round(time.Millisecond))
				break
			}
			if code != connect.CodeDeadlineExceeded || time.Since(start) > transport.DefaultIssuerFetchTimeout+10*time.Second {
				t.Fatalf("user call %d: %v after %v, want unavailable once discovery has timed out", calls, code, took)
			}
		}
		for range 20 {
			if code, took := call(c, token, deadline); code != connect.CodeUnavailable || took >= deadline {
				t.Fatalf("a user call after discovery failed: %v after %v, want unavailable before the deadline", code, took)
			}
			calls++
		}
		// Background retries with backoff: a second attempt after a
		// second, not one per call.
		for start := time.Now(); iss.conns.Load() < 2; time.Sleep(10 * time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				t.Fatal("discovery was not retried in the background")
			}
		}
		if n := iss.conns.Load(); n > 3 {
			t.Errorf("%d user calls made %d connections to the provider, want a few retries only", calls, n)
		}
		if code, _ := call(c, key, deadline); code != 0 {
			t.Errorf("a service-key call after the provider hung: %v", code)
		}
	})
}

// countingIssuer is a real OpenID provider (go-oidc's test server) behind
// a handler that counts discovery and key fetches, can fail discovery, and
// can switch to a rotated key set.
type countingIssuer struct {
	*issuer
	rotated     *rsa.PrivateKey
	servers     [2]*oidctest.Server
	useRotated  atomic.Bool
	down        atomic.Bool // discovery answers 503
	discoveries atomic.Int64
	keyFetches  atomic.Int64
}

func newCountingIssuer(t *testing.T) *countingIssuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ci := &countingIssuer{rotated: rotated}
	ci.servers[0] = &oidctest.Server{PublicKeys: []oidctest.PublicKey{{PublicKey: key.Public(), KeyID: "test-key", Algorithm: oidc.RS256}}}
	ci.servers[1] = &oidctest.Server{PublicKeys: []oidctest.PublicKey{
		{PublicKey: key.Public(), KeyID: "test-key", Algorithm: oidc.RS256},
		{PublicKey: rotated.Public(), KeyID: "rotated-key", Algorithm: oidc.RS256},
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			ci.discoveries.Add(1)
			if ci.down.Load() {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return
			}
		case "/keys":
			ci.keyFetches.Add(1)
		}
		s := ci.servers[0]
		if ci.useRotated.Load() {
			s = ci.servers[1]
		}
		s.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	for _, s := range ci.servers {
		s.SetIssuer(srv.URL)
	}
	ci.issuer = &issuer{url: srv.URL, key: key}
	return ci
}

// signed signs claims for alice with priv under key id kid.
func (ci *countingIssuer) signed(t *testing.T, priv *rsa.PrivateKey, kid string) string {
	t.Helper()
	b, _ := json.Marshal(map[string]any{
		"iss": ci.url, "sub": "alice", "aud": testAudience, "exp": time.Now().Add(time.Hour).Unix(),
		"realm_access": map[string]any{"roles": []string{"platform-admin"}},
	})
	return oidctest.SignIDToken(priv, kid, oidc.RS256, string(b))
}

// TestForgedTokensDoNotFloodTheIssuer sends tokens with forged signatures
// and with key ids the issuer never issued: all are refused, and the keys
// are fetched again at most once per KeyRefetchInterval, not once per
// token. A key the issuer rotates in is still picked up.
func TestForgedTokensDoNotFloodTheIssuer(t *testing.T) {
	const interval = 2 * time.Second
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ci := newCountingIssuer(t)
		srv := testserver.StartWith(t, db, &transport.OIDCConfig{
			Issuer: ci.url, Audience: testAudience, TenantClaim: "tenant_id", KeyRefetchInterval: interval,
		})
		c := newClients(srv.URL)
		start := time.Now()
		if code, _ := call(c, ci.signed(t, ci.key, "test-key"), 10*time.Second); code != 0 {
			t.Fatalf("a genuine token: %v", code)
		}
		forger, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		forged := []string{ci.signed(t, forger, "test-key"), ci.signed(t, forger, "no-such-key"), ci.signed(t, forger, "")}
		const each = 10
		for i := range each * len(forged) {
			if code, _ := call(c, forged[i%len(forged)], 10*time.Second); code != connect.CodeUnauthenticated {
				t.Errorf("forged token %d: %v, want unauthenticated", i, code)
			}
		}
		allowed := 1 + int64(time.Since(start)/interval) + 1 // the first fetch, and one per interval begun since
		if n := ci.keyFetches.Load(); n > allowed {
			t.Errorf("%d forged tokens made %d key fetches in %v, want at most %d", each*len(forged), n, time.Since(start), allowed)
		}
		t.Logf("%d forged tokens: %d key fetches, %d discoveries", each*len(forged), ci.keyFetches.Load(), ci.discoveries.Load())

		// Rotation: a token under a new key verifies once the keys may be
		// fetched again.
		ci.useRotated.Store(true)
		rotated := ci.signed(t, ci.rotated, "rotated-key")
		for start := time.Now(); ; time.Sleep(interval / 4) {
			code, _ := call(c, rotated, 10*time.Second)
			if code == 0 {
				break
			}
			if code != connect.CodeUnauthenticated || time.Since(start) > 3*interval {
				t.Fatalf("a token of a rotated-in key: %v %v after rotation", code, time.Since(start))
			}
		}
	})
}

// TestIssuerRecovers starts with a provider whose discovery fails: user
// calls are answered unavailable, discovery is retried in the background
// without any call asking, and once it succeeds user tokens verify.
func TestIssuerRecovers(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ci := newCountingIssuer(t)
		ci.down.Store(true)
		srv := testserver.StartWith(t, db, &transport.OIDCConfig{Issuer: ci.url, Audience: testAudience, TenantClaim: "tenant_id"})
		c := newClients(srv.URL)
		token := ci.signed(t, ci.key, "test-key")
		if code, _ := call(c, token, 10*time.Second); code != connect.CodeUnavailable {
			t.Fatalf("a user call while discovery fails: %v, want unavailable", code)
		}
		ci.down.Store(false)
		before := ci.discoveries.Load()
		for start := time.Now(); ci.discoveries.Load() == before; time.Sleep(10 * time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				t.Fatal("discovery was not retried in the background")
			}
		}
		for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
			code, _ := call(c, token, 10*time.Second)
			if code == 0 {
				break
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("a user call after the provider came back: %v", code)
			}
		}
	})
}
