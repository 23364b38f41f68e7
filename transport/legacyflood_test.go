package transport_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"sync"
	"testing"

	"connectrpc.com/connect"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// guess is a key of the previous format under prefix with a random rest.
func guess(prefix string) string {
	raw := make([]byte, 11)
	_, _ = rand.Read(raw)
	return prefix + base64.RawURLEncoding.EncodeToString(raw)[:14]
}

// TestLegacyKeyFlood floods VerifyApiKey with random keys under the known
// display prefix of an imported key that was never used: the slow argon2
// path runs at most LegacyFailuresPerPrefix times, every guess is answered
// NOT_FOUND (or Unavailable when shed), and the genuine key verifies once
// the window has passed, after which it no longer takes the slow path.
// Below the budget, a few wrong guesses do not keep the genuine key out.
func TestLegacyKeyFlood(t *testing.T) {
	const flood = 40
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startKeys(t, db)
		tn := c.createTenant(t, "legacy-flood")
		flooded, floodedHash := legacyKey(t)
		spared, sparedHash := legacyKey(t)
		if _, err := c.keys.ImportApiKeys(ctx, &v1.ImportApiKeysRequest{Keys: []*v1.ImportedApiKey{
			{TenantId: tn.Id, Name: "flooded", Prefix: flooded[:11], Hash: floodedHash},
			{TenantId: tn.Id, Name: "spared", Prefix: spared[:11], Hash: sparedHash},
		}}); err != nil {
			t.Fatal(err)
		}
		hashes := func() uint64 { return c.srv.Verifier.LegacyStats().Hashes }

		var wg sync.WaitGroup
		var mu sync.Mutex
		answers := map[string]int{}
		for range flood {
			wg.Go(func() {
				res, err := c.keys.VerifyApiKey(ctx, &v1.VerifyApiKeyRequest{Key: guess(flooded[:11])})
				answer := res.GetCode().String()
				if err != nil {
					answer = connect.CodeOf(err).String()
				}
				mu.Lock()
				answers[answer]++
				mu.Unlock()
			})
		}
		wg.Wait()
		notFound := answers[v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_NOT_FOUND.String()]
		if notFound+answers[connect.CodeUnavailable.String()] != flood || notFound == 0 {
			t.Errorf("answers to %d guesses: %v, want NOT_FOUND (or unavailable when shed)", flood, answers)
		}
		if h := hashes(); h > domain.LegacyFailuresPerPrefix {
			t.Errorf("%d guesses under one prefix ran argon2 %d times, want at most %d", flood, h, domain.LegacyFailuresPerPrefix)
		}
		st := c.srv.Verifier.LegacyStats()
		t.Logf("%d guesses: %v; %+v", flood, answers, st)

		// Guesses shed while argon2 was busy gave their attempt back: a few
		// sequential ones make sure the budget is spent.
		for range domain.LegacyFailuresPerPrefix {
			wantCode(t, "guess after the flood", c.verify(t, guess(flooded[:11]), ""), v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_NOT_FOUND)
		}
		if h := hashes(); h > domain.LegacyFailuresPerPrefix {
			t.Errorf("%d guesses under one prefix ran argon2 %d times, want at most %d", flood+domain.LegacyFailuresPerPrefix, h, domain.LegacyFailuresPerPrefix)
		}

		// The budget is spent: the genuine key waits for the window to end
		// (the documented price of the bound), then verifies, once slowly.
		before := hashes()
		wantCode(t, "genuine key, prefix budget spent", c.verify(t, flooded, ""), v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_NOT_FOUND)
		if hashes() != before {
			t.Error("a verification under a spent prefix ran argon2")
		}
		c.srv.Clock.Advance(domain.LegacyFailureWindow)
		wantCode(t, "genuine key, next window", c.verify(t, flooded, ""), v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID)
		wantCode(t, "genuine key, rehashed", c.verify(t, flooded, ""), v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID)
		if h := hashes() - before; h != 1 {
			t.Errorf("the genuine key took the slow path %d times, want once", h)
		}

		// A few wrong guesses, below the budget, leave the key alone.
		for range domain.LegacyFailuresPerPrefix - 1 {
			wantCode(t, "wrong guess", c.verify(t, guess(spared[:11]), ""), v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_NOT_FOUND)
		}
		wantCode(t, "spared key", c.verify(t, spared, ""), v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID)
	})
}
