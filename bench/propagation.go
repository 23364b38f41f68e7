package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
)

// propagation measures, over o.Trials trials with two replicas on one
// database, the time from sending RevokeApiKey to replica A until replica
// B, which had the key cached, first answers REVOKED.
func (h *harness) propagation(ctx context.Context) (*row, error) {
	a, err := start(ctx, "propagation-a", h.bins.service, h.serviceEnv(true), h.logDir, false)
	if err != nil {
		return nil, err
	}
	defer a.stop()
	b, err := start(ctx, "propagation-b", h.bins.service, h.serviceEnv(true), h.logDir, false)
	if err != nil {
		return nil, err
	}
	defer b.stop()
	ca, cb := newClients(a.url), newClients(b.url)
	verifyB := func(key string) (v1.ApiKeyVerificationCode, error) {
		res, err := cb.keys.VerifyApiKey(ctx, &v1.VerifyApiKeyRequest{Key: key})
		return res.GetCode(), err
	}
	// Give B's invalidation listener time to connect: until it has, B
	// does not trust its cache, and a trial would measure nothing.
	time.Sleep(time.Second)
	var times []time.Duration
	for trial := -1; trial < h.o.Trials; trial++ { // trial -1 is a warm-up
		created, err := ca.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: h.fx.VerifyTenant.GetId(), Name: "propagation " + strconv.Itoa(trial)})
		if err != nil {
			return nil, err
		}
		key := created.GetPlaintextKey()
		for range 2 { // the first reads the database and caches, the second is a hit
			if code, err := verifyB(key); err != nil || code != v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID {
				return nil, fmt.Errorf("new key on B: %v %v", code, err)
			}
		}
		t0 := time.Now()
		if _, err := ca.keys.RevokeApiKey(ctx, &v1.RevokeApiKeyRequest{Id: created.GetApiKey().GetId()}); err != nil {
			return nil, err
		}
		for {
			code, err := verifyB(key)
			if err != nil {
				return nil, err
			}
			if code == v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_REVOKED {
				break
			}
			if time.Since(t0) > 2*time.Minute {
				return nil, fmt.Errorf("B still accepts the key revoked on A 2 minutes ago")
			}
		}
		if trial >= 0 {
			times = append(times, time.Since(t0))
		}
	}
	slices.Sort(times)
	rssA, _ := a.peakRSS()
	rssB, _ := b.peakRSS()
	return &row{
		Key: "revocation-propagation", Name: "revocation propagation, 2 replicas", Protocol: "connect", Server: serviceWarm,
		Requests: uint64(len(times)), P50ms: msOf(times[len(times)/2]), MaxMs: msOf(times[len(times)-1]),
		PeakRSSMB: float64(max(rssA, rssB)) / (1 << 20),
		Note:      fmt.Sprintf("%d trials: RevokeApiKey sent to A until B first answers REVOKED; p50 = median", len(times)),
	}, nil
}

// startProduct starts a registry and the benchmark's product on it, and
// waits until the product's change stream is live.
func (h *harness) startProduct(ctx context.Context, name string) (*process, error) {
	registry, err := start(ctx, name+"-registry", h.bins.service, h.serviceEnv(true), h.logDir, false)
	if err != nil {
		return nil, err
	}
	p, err := h.startProductOn(ctx, name, registry.url)
	if err != nil {
		registry.stop()
		return nil, err
	}
	p.deps = append(p.deps, registry)
	return p, nil
}

// startProductOn starts the benchmark's product against the registry at
// registryURL.
func (h *harness) startProductOn(ctx context.Context, name, registryURL string) (*process, error) {
	noAuth, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p, err := start(ctx, name, h.bins.product, []string{
		"REGISTRY_URL=" + registryURL, "PRODUCT=" + benchProduct, "REQUIRED_SCOPES=" + benchScope, "NOAUTH_ADDR=" + noAuth,
	}, h.logDir, false)
	if err != nil {
		return nil, err
	}
	p.noAuthURL = "http://" + noAuth
	return p, nil
}

// productPropagation measures, over o.Trials trials, the time from sending
// RevokeApiKey to replica A until a product using the SDK against replica
// B, which had the key cached, first refuses it: the guarantee products
// see, end to end. (The example product this SDK replaced cached answers
// for a 10 s TTL: up to 10 s, 5 s on average.)
func (h *harness) productPropagation(ctx context.Context) (*row, error) {
	a, err := start(ctx, "product-propagation-a", h.bins.service, h.serviceEnv(true), h.logDir, false)
	if err != nil {
		return nil, err
	}
	defer a.stop()
	b, err := start(ctx, "product-propagation-b", h.bins.service, h.serviceEnv(true), h.logDir, false)
	if err != nil {
		return nil, err
	}
	defer b.stop()
	p, err := h.startProductOn(ctx, "product-propagation", b.url)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	ca := newClients(a.url)
	client := &http.Client{Timeout: 10 * time.Second}
	status := func(key string) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/v1/whoami", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode, nil
	}
	hits := func() (uint64, error) {
		res, err := client.Get(p.url + "/stats")
		if err != nil {
			return 0, err
		}
		defer res.Body.Close()
		var s struct{ Hits uint64 }
		err = json.NewDecoder(res.Body).Decode(&s)
		return s.Hits, err
	}
	var times []time.Duration
	for trial := -1; trial < h.o.Trials; trial++ { // trial -1 is a warm-up
		created, err := ca.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: h.fx.VerifyTenant.GetId(), Name: "product propagation " + strconv.Itoa(trial),
			Scopes: []string{benchScope}})
		if err != nil {
			return nil, err
		}
		key := created.GetPlaintextKey()
		// Until the product answers the key from its cache.
		for deadline := time.Now().Add(time.Minute); ; {
			before, err := hits()
			if err != nil {
				return nil, err
			}
			code, err := status(key)
			if err != nil {
				return nil, err
			}
			after, err := hits()
			if err != nil {
				return nil, err
			}
			if code == http.StatusOK && after > before {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("the product does not answer a new key from its cache (last %d)", code)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t0 := time.Now()
		if _, err := ca.keys.RevokeApiKey(ctx, &v1.RevokeApiKeyRequest{Id: created.GetApiKey().GetId()}); err != nil {
			return nil, err
		}
		for {
			code, err := status(key)
			if err != nil {
				return nil, err
			}
			if code == http.StatusUnauthorized {
				break
			}
			if time.Since(t0) > 2*time.Minute {
				return nil, fmt.Errorf("the product still accepts a key revoked on A 2 minutes ago")
			}
		}
		if trial >= 0 {
			times = append(times, time.Since(t0))
		}
	}
	slices.Sort(times)
	rss, _ := p.peakRSS()
	return &row{
		Key: "revocation-at-product", Name: "revocation at a product (SDK), 2 replicas", Protocol: "http", Server: productSDK,
		Requests: uint64(len(times)), P50ms: msOf(times[len(times)/2]), MaxMs: msOf(times[len(times)-1]),
		PeakRSSMB: float64(rss) / (1 << 20),
		Note: fmt.Sprintf("%d trials: RevokeApiKey sent to A until the product on B first answers 401; p50 = median; "+
			"the example product's 10 s TTL it replaced: up to 10 000 ms", len(times)),
	}, nil
}

// productStats reads the SDK's counters off the product, to tell cached
// verifications from those that asked the registry.
func productStats(p *process) string {
	res, err := http.Get(p.url + "/stats")
	if err != nil {
		return "stats: " + err.Error()
	}
	defer res.Body.Close()
	var s struct{ Hits, Misses, Resets, Connects uint64 }
	if err := json.NewDecoder(res.Body).Decode(&s); err != nil {
		return "stats: " + err.Error()
	}
	return fmt.Sprintf("SDK cache: %d hits, %d misses (asked the registry), %d resets, %d streams opened", s.Hits, s.Misses, s.Resets, s.Connects)
}
