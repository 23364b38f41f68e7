package keyauth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
)

// newTestVerifier returns a Verifier of a registry that is not there: the
// tests below drive its cache and its stream handling directly.
func newTestVerifier(t *testing.T, cfg Config) *Verifier {
	t.Helper()
	if cfg.RegistryURL == "" {
		cfg.RegistryURL = "http://127.0.0.1:1"
	}
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func heartbeat(staleness time.Duration) *registryv1.WatchChangesResponse {
	return &registryv1.WatchChangesResponse{Message: &registryv1.WatchChangesResponse_Heartbeat{
		Heartbeat: &registryv1.ChangeHeartbeat{Staleness: durationpb.New(staleness)},
	}}
}

func changeOf(kind registryv1.ChangeKind, tenant, key string) *registryv1.WatchChangesResponse {
	return &registryv1.WatchChangesResponse{Message: &registryv1.WatchChangesResponse_Change{
		Change: &registryv1.Change{Kind: kind, TenantId: tenant, ApiKeyId: key},
	}}
}

// TestTrustFollowsHeartbeats: the cache answers only while the last
// heartbeat, its age and the staleness it reported add up to less than
// MaxStaleness; a reset, or a registry that hears no changes, ends it.
func TestTrustFollowsHeartbeats(t *testing.T) {
	v := newTestVerifier(t, Config{MaxStaleness: 300 * time.Millisecond})
	if v.Trusted() {
		t.Fatal("trusted before any heartbeat")
	}
	v.apply(heartbeat(0))
	if !v.Trusted() {
		t.Fatal("not trusted after a fresh heartbeat")
	}
	v.apply(heartbeat(400 * time.Millisecond))
	if v.Trusted() {
		t.Error("trusted after a heartbeat staler than MaxStaleness")
	}
	v.apply(heartbeat(0))
	v.apply(&registryv1.WatchChangesResponse{Message: &registryv1.WatchChangesResponse_Reset_{Reset_: &registryv1.ChangeReset{}}})
	if v.Trusted() {
		t.Error("trusted after a reset, before the next heartbeat")
	}
	v.apply(&registryv1.WatchChangesResponse{Message: &registryv1.WatchChangesResponse_Heartbeat{Heartbeat: &registryv1.ChangeHeartbeat{}}})
	if v.Trusted() {
		t.Error("trusted after a heartbeat vouching for nothing")
	}
	v.apply(heartbeat(100 * time.Millisecond))
	deadline := time.Now().Add(2 * time.Second)
	for v.Trusted() {
		if time.Now().After(deadline) {
			t.Fatal("still trusted 2 s after the last heartbeat")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := New(Config{RegistryURL: "http://r", MaxStaleness: 2 * time.Second}); err == nil {
		t.Error("a MaxStaleness over 1 s was accepted")
	}
	if _, err := New(Config{RegistryURL: "registry:8090"}); err == nil {
		t.Error("a RegistryURL without a scheme was accepted")
	}
}

// TestChangesForgetWhatTheyName fills the cache with answers of every
// sort and applies each kind of change.
func TestChangesForgetWhatTheyName(t *testing.T) {
	v := newTestVerifier(t, Config{})
	now := time.Now()
	fill := func() {
		v.cache.reset()
		for i, e := range []*entry{
			{answer: answer{identity: &Identity{}}, keyID: "k1", tenantID: "t1"},
			{answer: answer{identity: &Identity{}}, keyID: "k2", tenantID: "t1"},
			{answer: answer{identity: &Identity{}}, keyID: "k3", tenantID: "t2"},
			{answer: answer{denied: &Denied{Code: "NOT_FOUND"}}, notFound: true},
			{answer: answer{denied: &Denied{Code: "NOT_ENTITLED"}}, undoes: true},
			{answer: answer{denied: &Denied{Code: "REVOKED"}}},
		} {
			e.expires = now.Add(time.Hour)
			_, _, gen := v.cache.get(digest{byte(i)}, now)
			v.cache.put(digest{byte(i)}, e, gen)
		}
	}
	left := func() string {
		out := ""
		for i := range 6 {
			if _, ok, _ := v.cache.get(digest{byte(i)}, now); ok {
				out += strconv.Itoa(i)
			}
		}
		return out
	}
	for _, tc := range []struct {
		msg  *registryv1.WatchChangesResponse
		left string
	}{
		{changeOf(registryv1.ChangeKind_CHANGE_KIND_API_KEY_REVOKED, "t1", "k1"), "12345"},
		{changeOf(registryv1.ChangeKind_CHANGE_KIND_API_KEY_ROTATED, "t2", "k3"), "01345"},
		{changeOf(registryv1.ChangeKind_CHANGE_KIND_API_KEY_CREATED, "t9", "k9"), "01245"},
		{changeOf(registryv1.ChangeKind_CHANGE_KIND_TENANT_FROZEN, "t1", ""), "2345"},
		{changeOf(registryv1.ChangeKind_CHANGE_KIND_ENTITLEMENT_REVOKED, "t2", ""), "01345"},
		{changeOf(registryv1.ChangeKind_CHANGE_KIND_TENANT_ACTIVATED, "t1", ""), "235"},
		{changeOf(registryv1.ChangeKind_CHANGE_KIND_ENTITLEMENT_GRANTED, "t9", ""), "01235"},
		{changeOf(registryv1.ChangeKind_CHANGE_KIND_ENTITLEMENT_CHANGED, "t2", ""), "0135"},
		{changeOf(registryv1.ChangeKind(99), "t2", ""), ""}, // a newer registry's kind: everything
		{&registryv1.WatchChangesResponse{}, ""},            // a newer registry's message: everything
	} {
		fill()
		v.apply(tc.msg)
		if got := left(); got != tc.left {
			t.Errorf("after %v: entries %q left, want %q", tc.msg, got, tc.left)
		}
	}
}

// TestCacheGenerationGuard: an answer asked for before a change is not
// cached after it.
func TestCacheGenerationGuard(t *testing.T) {
	v := newTestVerifier(t, Config{})
	now := time.Now()
	_, _, gen := v.cache.get(digest{1}, now)
	v.apply(changeOf(registryv1.ChangeKind_CHANGE_KIND_API_KEY_REVOKED, "t1", "k1"))
	v.cache.put(digest{1}, &entry{answer: answer{identity: &Identity{}}, keyID: "k1", tenantID: "t1", expires: now.Add(time.Hour)}, gen)
	if _, ok, _ := v.cache.get(digest{1}, now); ok {
		t.Fatal("an answer asked for before a revocation was cached after it")
	}
}

// TestCacheBounded keeps the cache, and its indexes, under MaxEntries.
func TestCacheBounded(t *testing.T) {
	v := newTestVerifier(t, Config{MaxEntries: 100})
	now := time.Now()
	for i := range 1000 {
		_, _, gen := v.cache.get(digest{}, now)
		d := digest{byte(i), byte(i >> 8)}
		e := &entry{answer: answer{identity: &Identity{}}, keyID: strconv.Itoa(i), tenantID: strconv.Itoa(i % 7), expires: now.Add(time.Hour)}
		if i%2 == 1 {
			e = &entry{answer: answer{denied: &Denied{Code: "NOT_FOUND"}}, notFound: true, expires: now.Add(time.Hour)}
		}
		v.cache.put(d, e, gen)
	}
	n := 0
	for _, set := range v.cache.byTenant {
		n += len(set)
	}
	if s := v.Stats(); s.Entries > 100 || len(v.cache.byKey)+len(v.cache.refused) != s.Entries || n != len(v.cache.byKey) {
		t.Errorf("%d entries, %d by key, %d by tenant, %d refusals: want at most 100 and indexes that agree",
			s.Entries, len(v.cache.byKey), n, len(v.cache.refused))
	}
}

// TestRegistryDownFailsClosed: with no registry to ask, a request is
// refused with 503 (not 401: an outage is not a bad key), and nothing is
// cached; a request without a bearer key is refused without asking.
func TestRegistryDownFailsClosed(t *testing.T) {
	v := newTestVerifier(t, Config{VerifyTimeout: 500 * time.Millisecond})
	handler := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		t.Error("a request got through with no registry to ask")
	}))
	for _, tc := range []struct {
		authorization string
		want          int
	}{
		{"Bearer bp_0123456789012345678901234567890123456789012abcdef", http.StatusServiceUnavailable},
		{"", http.StatusUnauthorized},
		{"Basic dXNlcjpwYXNz", http.StatusUnauthorized},
		{"Bearer sk_not-ours", http.StatusUnauthorized},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("Authorization", tc.authorization)
		handler.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%q: %d, want %d", tc.authorization, rec.Code, tc.want)
		}
	}
	if n := v.Stats().Entries; n != 0 {
		t.Errorf("cached %d answers of a registry that is down", n)
	}
	_, err := v.Verify(context.Background(), "bp_0123456789012345678901234567890123456789012abcdef")
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("Verify with the registry down: %v, want ErrUnavailable", err)
	}
}

// TestCacheGuardIsPrecise: a change about something else does not keep an
// answer out, however many there are; a reset, or more changes than the
// cache remembers, does.
func TestCacheGuardIsPrecise(t *testing.T) {
	v := newTestVerifier(t, Config{})
	now := time.Now()
	good := func() *entry {
		return &entry{answer: answer{identity: &Identity{}}, keyID: "k1", tenantID: "t1", expires: now.Add(time.Hour)}
	}
	cached := func(d digest) bool { _, ok, _ := v.cache.get(d, now); return ok }
	_, _, gen := v.cache.get(digest{1}, now)
	v.apply(changeOf(registryv1.ChangeKind_CHANGE_KIND_API_KEY_REVOKED, "t2", "k2"))
	v.apply(changeOf(registryv1.ChangeKind_CHANGE_KIND_API_KEY_CREATED, "t3", "k3"))
	v.apply(changeOf(registryv1.ChangeKind_CHANGE_KIND_TENANT_ACTIVATED, "t4", ""))
	v.cache.put(digest{1}, good(), gen)
	if !cached(digest{1}) {
		t.Error("changes about other keys and tenants kept an answer out")
	}
	for _, msg := range []*registryv1.WatchChangesResponse{
		changeOf(registryv1.ChangeKind_CHANGE_KIND_TENANT_FROZEN, "t1", ""),
		{Message: &registryv1.WatchChangesResponse_Reset_{Reset_: &registryv1.ChangeReset{}}},
	} {
		_, _, gen = v.cache.get(digest{2}, now)
		v.apply(msg)
		v.cache.put(digest{2}, good(), gen)
		if cached(digest{2}) {
			t.Errorf("an answer asked for before %v was cached after it", msg)
		}
	}
	_, _, gen = v.cache.get(digest{3}, now)
	for i := range 100 {
		v.apply(changeOf(registryv1.ChangeKind_CHANGE_KIND_API_KEY_REVOKED, "t9", strconv.Itoa(i)))
	}
	v.cache.put(digest{3}, good(), gen)
	if cached(digest{3}) {
		t.Error("an answer asked for before more changes than the cache remembers was cached")
	}
}
