package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// Server kinds a row runs against.
const (
	serviceWarm = "tenant-registry"                 // KEY_CACHE=on, the default
	serviceCold = "tenant-registry (KEY_CACHE=off)" // every verification reads the database
	ownStack    = "own stack (bench/baseline)"      // the service's stack, constant handlers
	bare        = "bare connect-go (bench/bare)"    // nothing of the project: the outside baseline
	productSDK  = "product (Go SDK) on tenant-registry"
	inHarness   = "in the harness, on PostgreSQL" // the audit log's code and a plain INSERT, called in-process
)

// rowSpec is one row of the benchmark.
type rowSpec struct {
	key, name, protocol string
	// groups are the --only groups that run the row: a baseline row runs
	// with every group whose rows are compared with it.
	groups []string
	server string
	// process names the server process serving the row; rows naming the
	// same one share it (and its peak RSS).
	process string
	// phase orders the rows: the rows of a phase are measured interleaved.
	phase            int
	eventsPerRequest int // audit rows: events each request appends
	// load builds the load for a started server; want is a fragment the
	// body of a single probing request must hold (HTTP rows only).
	load func(ctx context.Context, p *process) (l load, want string, err error)
	// note, when set, says something of the server after the row.
	note func(p *process) string
}

// harness is one run.
type harness struct {
	o      options
	bins   binaries
	db     *database
	pdb    *persistence.DB // the run's database, for seeding and in-process rows
	logDir string
	tmp    string // scripts and request bodies of the load generators
	fx     *fixtures
	out    io.Writer
}

func run(ctx context.Context, o options) error {
	started := time.Now()
	h := &harness{o: o, out: os.Stdout}
	loadBefore := loadAverage()
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "tenant-registry-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	h.tmp = tmp
	h.logDir = filepath.Join(o.Out, "logs")
	if err := os.MkdirAll(h.logDir, 0o755); err != nil {
		return err
	}
	if o.ProfileDir != "" {
		if err := os.MkdirAll(o.ProfileDir, 0o755); err != nil {
			return err
		}
	}
	if err := checkGenerators(); err != nil {
		return err
	}
	fmt.Fprintf(h.out, "building the service and the baseline servers…\n")
	if h.bins, err = build(ctx, tmp); err != nil {
		return err
	}
	name := o.Database
	if name == "" {
		name = fmt.Sprintf("bench_%s_%d", time.Now().UTC().Format("20060102_150405"), os.Getpid())
	}
	if h.db, err = createDatabase(ctx, o.DatabaseURL, name, o.Database != ""); err != nil {
		return err
	}
	defer func() {
		if o.Keep {
			fmt.Fprintf(h.out, "kept database %s\n", h.db.name)
			h.db.admin.Close()
			return
		}
		if err := h.db.drop(context.WithoutCancel(ctx)); err != nil {
			fmt.Fprintf(os.Stderr, "bench: drop database %s: %v\n", h.db.name, err)
		}
	}()

	bigLog := o.AuditEvents
	if !o.wants("chains") && !o.wants("proofs") {
		bigLog = 0
	}
	fmt.Fprintf(h.out, "preparing database %s (fixtures, audit logs of 1000 and %d events)…\n", name, bigLog)
	setup, err := start(ctx, "setup", h.bins.service, h.serviceEnv(true), h.logDir, false)
	if err != nil {
		return err
	}
	// The service migrated the database as it started.
	if h.pdb, err = persistence.Open(ctx, h.db.url); err != nil {
		setup.stop()
		return err
	}
	defer h.pdb.Close()
	// Beside the default results, whatever --out says: a kept database
	// is used from runs with different outputs.
	if err := os.MkdirAll("bench-results", 0o755); err != nil {
		return err
	}
	tokens := loadTokenCache(filepath.Join("bench-results", "page-tokens.json"))
	h.fx, err = prepare(ctx, newClients(setup.url), h.pdb, h.db.url, tokens, bigLog, h.out)
	setup.stop()
	if err != nil {
		return err
	}
	// Fresh statistics for every run, as autovacuum would keep them (it
	// may be off on a benchmark's server): on a kept database the logs
	// have grown since, and a plan chosen on stale statistics measures the
	// planner's luck (see ReadHashes in the README).
	if err := analyze(ctx, h.db.url, "audit_events", "audit_tree_hashes", "audit_external_ids", "audit_chain_heads"); err != nil {
		return err
	}

	var rows []*row
	specs := h.specs()
	phases := 0
	for _, spec := range specs {
		phases = max(phases, spec.phase+1)
	}
	for phase := range phases {
		var group []rowSpec
		for _, spec := range specs {
			if spec.phase == phase && o.wantsAny(spec.groups) {
				group = append(group, spec)
			}
		}
		if len(group) == 0 {
			continue
		}
		measured, err := h.measure(ctx, group)
		if err != nil {
			return err
		}
		rows = append(rows, measured...)
	}
	if o.wants("retention") {
		r, err := h.dropMonth(ctx)
		if err != nil {
			return fmt.Errorf("dropping a month: %w", err)
		}
		rows = append(rows, r...)
	}
	if o.wants("propagation") {
		fmt.Fprintf(h.out, "%-44s ", "revocation propagation (2 replicas)")
		r, err := h.propagation(ctx)
		if err != nil {
			return fmt.Errorf("revocation propagation: %w", err)
		}
		fmt.Fprintf(h.out, "median %.1f ms, max %.1f ms over %d trials\n", r.P50ms, r.MaxMs, o.Trials)
		rows = append(rows, r)
		fmt.Fprintf(h.out, "%-44s ", "revocation at a product (SDK, 2 replicas)")
		r, err = h.productPropagation(ctx)
		if err != nil {
			return fmt.Errorf("revocation at a product: %w", err)
		}
		fmt.Fprintf(h.out, "median %.1f ms, max %.1f ms over %d trials\n", r.P50ms, r.MaxMs, o.Trials)
		rows = append(rows, r)
	}
	s := summary{
		Date: started.UTC().Format(time.RFC3339), Machine: machine(), GoVersion: runtime.Version(),
		LoadAverageBefore: loadBefore, LoadAverageAfter: loadAverage(),
		Duration: o.Duration.String(), Warmup: o.Warmup.String(), Concurrency: o.Concurrency,
		AuditEvents: o.AuditEvents, Rows: rows, Targets: judge(rows),
	}
	return s.write(h.out, o.Out)
}

// checkGenerators fails early when wrk or h2load is not installed.
func checkGenerators() error {
	for _, g := range []struct{ bin, pkg string }{{"wrk", "wrk"}, {"h2load", "nghttp2-client"}} {
		if _, err := exec.LookPath(g.bin); err != nil {
			return fmt.Errorf("the load generator %s is not installed (Debian: apt-get install %s)", g.bin, g.pkg)
		}
	}
	return nil
}

// serviceEnv is the service's environment: dev mode without an issuer
// (authentication off), on the run's database. Settings the harness's own
// environment might carry are cleared.
func (h *harness) serviceEnv(cache bool) []string {
	keyCache := "on"
	if !cache {
		keyCache = "off"
	}
	return []string{
		"APP_ENV=dev", "DATABASE_URL=" + h.db.url, "KEY_CACHE=" + keyCache,
		"LOG_LEVEL=info", "LOG_FORMAT=text", "KEYCLOAK_ISSUER=", "OIDC_AUDIENCE=",
		"CORS_ALLOWED_ORIGINS=", "TRUSTED_PROXIES=", "MAX_MESSAGE_BYTES=", "PPROF_ADDR=", "METRICS_ADDR=",
		"OTEL_EXPORTER_OTLP_ENDPOINT=", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=",
		"REQUEST_TIMEOUT=", "READ_HEADER_TIMEOUT=", "DB_MAX_CONNS=", "SHUTDOWN_DELAY=0s", "AUDIT_RETENTION_DAYS=",
	}
}

// constants are the baselines' constant answers.
func (h *harness) constants() []string {
	return []string{
		"VERIFY_RESPONSE=" + base64.StdEncoding.EncodeToString(h.fx.VerifyResponse),
		"CHECK_RESPONSE=" + base64.StdEncoding.EncodeToString(h.fx.CheckResponse),
	}
}

func (h *harness) startFor(ctx context.Context, spec rowSpec) (*process, error) {
	profile := h.o.ProfileDir != "" && spec.server != ownStack && spec.server != bare
	switch spec.server {
	case serviceWarm:
		return start(ctx, spec.process, h.bins.service, h.serviceEnv(true), h.logDir, profile)
	case serviceCold:
		return start(ctx, spec.process, h.bins.service, h.serviceEnv(false), h.logDir, profile)
	case productSDK:
		return h.startProduct(ctx, spec.process)
	case inHarness:
		return self(), nil
	case bare:
		return start(ctx, spec.process, h.bins.bare, append(h.constants(), "DATABASE_URL="+h.db.url), h.logDir, false)
	default:
		return start(ctx, spec.process, h.bins.baseline, append(h.constants(), "DATABASE_URL="+h.db.url, "LOG_LEVEL=info"), h.logDir, false)
	}
}

// rounds is how many slices each row's measured time is cut into.
const rounds = 5

// measure measures a group of rows interleaved: after a probe and a
// warm-up of each, the rows take turns, a slice of --duration/5 each, five
// rounds, so that a change in the machine's other load (it is shared)
// falls on every row of the group alike and their ratios hold. Each
// server process is started for the group and stopped after it.
func (h *harness) measure(ctx context.Context, group []rowSpec) ([]*row, error) {
	procs := map[string]*process{}
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	loads := make([]load, len(group))
	for i, spec := range group {
		p := procs[spec.process]
		if p == nil {
			var err error
			if p, err = h.startFor(ctx, spec); err != nil {
				return nil, err
			}
			procs[spec.process] = p
		}
		l, want, err := spec.load(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("%s (%s): %w", spec.name, spec.protocol, err)
		}
		if pr, ok := l.(prober); ok {
			if err := pr.probe(want); err != nil {
				return nil, fmt.Errorf("%s (%s): %w", spec.name, spec.protocol, err)
			}
		}
		if h.o.Warmup > 0 {
			if _, err := l.run(h.o.Warmup); err != nil {
				return nil, fmt.Errorf("%s (%s): warm-up: %w", spec.name, spec.protocol, err)
			}
		}
		loads[i] = l
	}
	profiles := h.startProfiles(procs, time.Duration(len(group))*h.o.Duration)

	type usage struct{ server, generator, database time.Duration }
	ms := make([]measurement, len(group))
	used := make([]usage, len(group))
	sliceDur := h.o.Duration / rounds
	for round := range rounds {
		for i, spec := range group {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			p := procs[spec.process]
			before, err := h.usage(p)
			if err != nil {
				return nil, err
			}
			s, err := loads[i].run(sliceDur)
			if err != nil {
				return nil, fmt.Errorf("%s (%s), round %d: %w", spec.name, spec.protocol, round+1, err)
			}
			after, err := h.usage(p)
			if err != nil {
				return nil, err
			}
			ms[i].add(s)
			used[i].server += after.server - before.server
			used[i].database += after.database.since(before.database)
			used[i].generator += s.generatorCPU
			if !p.self {
				used[i].generator += after.harness - before.harness
			}
		}
	}
	if err := profiles(); err != nil {
		return nil, err
	}
	var rows []*row
	for i, spec := range group {
		p, m := procs[spec.process], &ms[i]
		rss, err := p.peakRSS()
		if err != nil {
			return nil, err
		}
		r := &row{
			Key: spec.key, Name: spec.name, Protocol: spec.protocol, Server: spec.server,
			Requests: m.requests, Errors: m.errors, RPS: m.rps(),
			P50ms: msOf(m.quantile(0.50)), P99ms: msOf(m.quantile(0.99)),
			PeakRSSMB: float64(rss) / (1 << 20), ErrorSample: m.errorMsg,
		}
		if spec.note != nil {
			r.Note = spec.note(p)
		}
		if spec.eventsPerRequest > 0 {
			r.EventsPerSecond = r.RPS * float64(spec.eventsPerRequest)
		}
		if n := float64(m.requests); n > 0 {
			r.CPUPerRequestUs = float64(used[i].server.Microseconds()) / n
			r.GeneratorCPUPerRequestUs = float64(used[i].generator.Microseconds()) / n
			r.DatabaseCPUPerRequestUs = float64(used[i].database.Microseconds()) / n
		}
		fmt.Fprintf(h.out, "%-52s %8.0f req/s  p50 %7.2f ms  p99 %7.2f ms  CPU µs/req: server %5.0f, database %5.0f, load generator %5.0f  RSS %5.1f MB\n",
			spec.name+" ("+spec.protocol+")", r.RPS, r.P50ms, r.P99ms, r.CPUPerRequestUs, r.DatabaseCPUPerRequestUs, r.GeneratorCPUPerRequestUs, r.PeakRSSMB)
		rows = append(rows, r)
	}
	fmt.Fprintf(h.out, "  (load average %s)\n", loadAverage())
	return rows, nil
}

// cpuReading is the CPU time used so far by a row's server, by the
// harness (this process: the load generator of the vegeta rows) and by
// the database's backends.
type cpuReading struct {
	server, harness time.Duration
	database        backendTimes
}

func (h *harness) usage(p *process) (cpuReading, error) {
	server, err := p.cpuTime()
	if err != nil {
		return cpuReading{}, err
	}
	harness, err := cpuTime(os.Getpid())
	if err != nil {
		return cpuReading{}, err
	}
	return cpuReading{server, harness, databaseBackends(h.db.name)}, nil
}

// startProfiles, with --profile, records a CPU profile of each service
// process over about d (its idle turns add nothing), and returns a
// function that waits for them and adds a heap profile of each.
func (h *harness) startProfiles(procs map[string]*process, d time.Duration) func() error {
	if h.o.ProfileDir == "" {
		return func() error { return nil }
	}
	errc := make(chan error, len(procs))
	n := 0
	for name, p := range procs {
		if p.pprofAddr == "" {
			continue
		}
		n++
		go func() {
			secs := max(1, int(d.Seconds())-1)
			errc <- fetch(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.pprofAddr, secs),
				filepath.Join(h.o.ProfileDir, name+".cpu.pprof"))
		}()
	}
	return func() error {
		var errs []error
		for range n {
			errs = append(errs, <-errc)
		}
		for name, p := range procs {
			if p.pprofAddr != "" {
				errs = append(errs, fetch("http://"+p.pprofAddr+"/debug/pprof/heap", filepath.Join(h.o.ProfileDir, name+".heap.pprof")))
			}
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("profiles: %w", err)
		}
		return nil
	}
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// fetch saves what url answers to path.
func fetch(url, path string) error {
	res, err := http.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, res.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// prober is a load that can send one of its requests and check the answer.
type prober interface{ probe(want string) error }

// probe sends one request of the load and checks its answer, so a row
// never measures how fast the server says no.
func (l httpLoad) probe(want string) error {
	var t vegeta.Target
	if err := l.next(&t); err != nil {
		return err
	}
	req, err := t.Request()
	if err != nil {
		return err
	}
	return probeRequest(req, want)
}

func (l wrkLoad) probe(want string) error {
	req, err := l.request()
	if err != nil {
		return err
	}
	return probeRequest(req, want)
}

func probeRequest(req *http.Request, want string) error {
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	var r io.Reader = res.Body
	if res.Header.Get("Content-Encoding") == "gzip" { // asked for by the load's own Accept-Encoding
		if r, err = gzip.NewReader(res.Body); err != nil {
			return fmt.Errorf("probe %s %s: %w", req.Method, req.URL, err)
		}
	}
	body, _ := io.ReadAll(r)
	if res.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(want)) {
		return fmt.Errorf("probe %s %s: %s, want %q in %.300s", req.Method, req.URL, res.Status, want, body)
	}
	return nil
}

// loadFunc builds a row's load once its server runs.
type loadFunc = func(ctx context.Context, p *process) (load, string, error)

// specs are the rows, in the order they run and print.
func (h *harness) specs() []rowSpec {
	c, fx := h.o.Concurrency, h.fx
	jsonHeader := http.Header{"Content-Type": {"application/json"}}
	// wrk, for one request sent again and again.
	wrkPost := func(procedure, body, want string) loadFunc {
		return func(_ context.Context, p *process) (load, string, error) {
			l, err := newWrkLoad(h.tmp, c, http.MethodPost, p.url+procedure, jsonHeader, []byte(body), "")
			return l, want, err
		}
	}
	wrkGet := func(path func(p *process) string, header http.Header, want string) loadFunc {
		return func(_ context.Context, p *process) (load, string, error) {
			l, err := newWrkLoad(h.tmp, c, http.MethodGet, path(p), header, nil, "")
			return l, want, err
		}
	}
	// wrk again, for appends: every event has an external id of its own.
	wrkAppend := func(procedure string, tenants []string, n int) loadFunc {
		return func(_ context.Context, p *process) (load, string, error) {
			l, err := newWrkAppendLoad(h.tmp, c, p.url+procedure, tenants, n)
			return l, `"seq"`, err
		}
	}
	// vegeta, for requests whose bodies differ and that wrk's Lua cannot
	// build cheaply (proofs of seqs spread over a log).
	vegetaPost := func(concurrency int, procedure string, body func(uint64) []byte, want string) loadFunc {
		return func(_ context.Context, p *process) (load, string, error) {
			return httpLoad{concurrency: concurrency, client: newHTTPClient(concurrency), next: connectPost(p.url, procedure, body)}, want, nil
		}
	}
	verifyReq := &v1.VerifyApiKeyRequest{Key: fx.Key, Product: benchProduct, RequiredScopes: []string{benchScope}}
	verify := mustJSON(map[string]any{"key": fx.Key, "product": benchProduct, "requiredScopes": []string{benchScope}})
	verifyGRPC := func(ctx context.Context, p *process) (load, string, error) {
		l, err := newH2loadLoad(ctx, h.tmp, c, p.url, tenantregistryv1connect.ApiKeyServiceVerifyApiKeyProcedure, verifyReq,
			func(r *v1.VerifyApiKeyResponse) error {
				if !r.GetValid() {
					return fmt.Errorf("want a valid key, got %v", r.GetCode())
				}
				return nil
			})
		return l, "", err
	}
	verifyJSON := wrkPost(tenantregistryv1connect.ApiKeyServiceVerifyApiKeyProcedure, verify, `"valid":true`)
	checkJSON := wrkPost(tenantregistryv1connect.EntitlementServiceCheckEntitlementProcedure,
		mustJSON(map[string]any{"tenantId": fx.VerifyTenant.GetId(), "product": benchProduct}), `"entitled":true`)
	pkSelect := wrkPost(tenantregistryv1connect.TenantServiceGetTenantProcedure, mustJSON(map[string]any{"id": fx.VerifyTenant.GetId()}), `"slug"`)
	bySlug := mustJSON(map[string]any{"slug": fx.VerifyTenant.GetSlug()})
	getURL := func(p *process) string {
		q := url.Values{"encoding": {"json"}, "message": {bySlug}}
		return p.url + tenantregistryv1connect.TenantServiceGetTenantBySlugProcedure + "?" + q.Encode()
	}
	recordOne, recordMany := tenantregistryv1connect.AuditServiceRecordAuditEventProcedure, tenantregistryv1connect.AuditServiceRecordAuditEventsProcedure
	g := func(groups ...string) []string { return groups }
	specs := []rowSpec{
		// The outside baseline and the own stack, both answering constants.
		{key: "bare-verify-json", process: "bare", groups: g("bare", "verify", "limit"), name: "bare connect-go: VerifyApiKey constant", protocol: "connect-json", server: bare, load: verifyJSON},
		{key: "limit-json", process: "baseline", groups: g("limit"), name: "own stack: VerifyApiKey constant", protocol: "connect-json", server: ownStack, load: verifyJSON},
		{key: "verify-warm-json", process: "service-verify-json", groups: g("verify"), name: "VerifyApiKey warm", protocol: "connect-json", server: serviceWarm, load: verifyJSON},
		{key: "bare-verify-grpc", process: "bare", groups: g("bare", "verify", "limit"), name: "bare connect-go: VerifyApiKey constant", protocol: "grpc", server: bare, load: verifyGRPC},
		{key: "limit-grpc", process: "baseline", groups: g("limit"), name: "own stack: VerifyApiKey constant", protocol: "grpc", server: ownStack, load: verifyGRPC},
		{key: "verify-warm-grpc", process: "service-verify-grpc", groups: g("verify"), name: "VerifyApiKey warm", protocol: "grpc", server: serviceWarm, load: verifyGRPC},
		{key: "bare-check-json", process: "bare", groups: g("bare", "reads", "limit"), name: "bare connect-go: CheckEntitlement constant", protocol: "connect-json", server: bare, load: checkJSON},
		{key: "limit-check-json", process: "baseline", groups: g("limit"), name: "own stack: CheckEntitlement constant", protocol: "connect-json", server: ownStack, load: checkJSON},
		{key: "check-entitlement-json", process: "service-reads", groups: g("reads"), name: "CheckEntitlement", protocol: "connect-json", server: serviceWarm, load: checkJSON},
		// The floor under a read of the database.
		{key: "bare-pk-select-json", process: "bare", groups: g("bare", "limit", "cold", "reads"), name: "bare: one PK SELECT via database/sql", protocol: "connect-json", server: bare, load: pkSelect},
		{key: "pk-select-json", process: "baseline", groups: g("limit", "cold"), name: "own stack: one PK SELECT via Bun", protocol: "connect-json", server: ownStack, load: pkSelect},
		{key: "verify-cold-json", process: "service-cold", groups: g("cold"), name: "VerifyApiKey cold", protocol: "connect-json", server: serviceCold, load: verifyJSON},
		{key: "tenant-by-slug-json", process: "service-reads", groups: g("reads"), name: "GetTenantBySlug", protocol: "connect-json", server: serviceWarm,
			load: wrkPost(tenantregistryv1connect.TenantServiceGetTenantBySlugProcedure, bySlug, `"slug"`)},
		{key: "tenant-by-slug-get", process: "service-reads", groups: g("reads"), name: "GetTenantBySlug", protocol: "connect-get", server: serviceWarm,
			load: wrkGet(getURL, nil, `"slug"`)},
		{key: "audit-single-json", process: "service-audit", groups: g("audit"), name: "RecordAuditEvent", protocol: "connect-json", server: serviceWarm, eventsPerRequest: 1,
			load: wrkAppend(recordOne, fx.AppendTenants, 1)},
		{key: "audit-batch100-json", process: "service-audit", groups: g("audit"), name: "RecordAuditEvents ×100", protocol: "connect-json", server: serviceWarm, eventsPerRequest: 100,
			load: wrkAppend(recordMany, fx.AppendTenants, 100)},
	}
	// A product's own requests, behind the SDK's middleware and without
	// authentication, over the same keep-alive connections.
	whoami := func(noAuth bool) func(*process) string {
		return func(p *process) string {
			if noAuth {
				return p.noAuthURL + "/v1/whoami"
			}
			return p.url + "/v1/whoami"
		}
	}
	withKey := http.Header{"Authorization": {"Bearer " + fx.Key}}
	specs = append(specs,
		rowSpec{key: "product-noauth", process: "product", phase: 3, groups: g("product"), name: "product without authentication", protocol: "http", server: productSDK,
			load: wrkGet(whoami(true), withKey, `"tenantId"`)},
		rowSpec{key: "product-sdk", process: "product", phase: 3, groups: g("product"), name: "product with the SDK's middleware", protocol: "http", server: productSDK,
			load: wrkGet(whoami(false), withKey, `"bench-verify"`), note: productStats},
	)
	// The audit log's append code against a plain INSERT of the same rows.
	specs = append(specs, h.treeSpecs()...)
	if h.o.wants("chains") {
		procedure := tenantregistryv1connect.AuditServiceListAuditEventsProcedure
		big := eventCount(h.o.AuditEvents)
		list := func(t *v1.Tenant, token string) string {
			m := map[string]any{"tenantId": t.GetId()}
			if token != "" {
				m["pageToken"] = token
			}
			return mustJSON(m)
		}
		specs = append(specs,
			rowSpec{key: "list-first-1k", process: "service-list", phase: 1, groups: g("chains"), name: "ListAuditEvents first page, 1k", protocol: "connect-json", server: serviceWarm,
				load: wrkPost(procedure, list(fx.SmallAudit, ""), `"events"`)},
			rowSpec{key: "list-deep-1k", process: "service-list", phase: 1, groups: g("chains"), name: "ListAuditEvents deep page, 1k", protocol: "connect-json", server: serviceWarm,
				load: wrkPost(procedure, list(fx.SmallAudit, fx.SmallDeepToken), `"events"`)},
			rowSpec{key: "list-first-big", process: "service-list", phase: 1, groups: g("chains"), name: "ListAuditEvents first page, " + big, protocol: "connect-json", server: serviceWarm,
				load: wrkPost(procedure, list(fx.BigAudit, ""), `"events"`)},
			rowSpec{key: "list-deep-big", process: "service-list", phase: 1, groups: g("chains"), name: "ListAuditEvents deep page, " + big, protocol: "connect-json", server: serviceWarm,
				load: wrkPost(procedure, list(fx.BigAudit, fx.BigDeepToken), `"events"`)},
			// Appends to one long log against appends to one short one:
			// the cost of an append must not grow with its log. These run
			// after the list rows, whose logs they would lengthen.
			rowSpec{key: "append-chain-1k", process: "service-append", phase: 2, groups: g("chains"), name: "RecordAuditEvent, one log of 1k", protocol: "connect-json", server: serviceWarm, eventsPerRequest: 1,
				load: wrkAppend(recordOne, []string{fx.SmallAppend.GetId()}, 1)},
			rowSpec{key: "append-chain-big", process: "service-append", phase: 2, groups: g("chains"), name: "RecordAuditEvent, one log of " + big, protocol: "connect-json", server: serviceWarm, eventsPerRequest: 1,
				load: wrkAppend(recordOne, []string{fx.BigAudit.GetId()}, 1)},
		)
	}
	if h.o.wants("proofs") {
		specs = append(specs, h.proofSpecs(vegetaPost)...)
	}
	return specs
}

// eventCount names a number of events as the rows do: 1k, 1M, 10M.
func eventCount(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "M"
	case n >= 1000 && n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

// auditTemplates are one event's JSON for each of tenants, split where
// its external id goes (twice: the external id, and the target's id).
func auditTemplates(tenants []string) [][][]byte {
	pieces := make([][][]byte, len(tenants))
	for i, t := range tenants {
		pieces[i] = bytes.Split([]byte(mustJSON(map[string]any{
			"tenantId": t, "product": benchProduct, "action": "document.updated", "crud": "u",
			"actor":       map[string]string{"id": "user-42", "name": "Jane Doe", "type": "user"},
			"target":      map[string]string{"id": "doc-" + auditIDMarker, "type": "document", "name": "Quarterly report"},
			"sourceIp":    "192.0.2.10",
			"description": "updated the document's title",
			"fields":      map[string]string{"field": "title", "old": "Q3", "new": "Q3 final"},
			"externalId":  auditIDMarker,
		})), []byte(auditIDMarker))
	}
	return pieces
}

const auditIDMarker = "@ID@"

// auditEnvelope is what holds n events: RecordAuditEvent's request for
// one, RecordAuditEvents' for more.
func auditEnvelope(n int) (open, end string) {
	if n == 1 {
		return `{"event":`, `}`
	}
	return `{"events":[`, `]}`
}

// auditBody is the body of request i of n events, all of the tenant of
// pieces (auditTemplates) whose turn it is, each event with an external id
// of its own (as products send them, for idempotent retries): run, i and
// the event's place in the request. The wrk script of the append rows
// builds the same bodies.
func auditBody(pieces [][][]byte, n int, run string, i uint64) []byte {
	open, end := auditEnvelope(n)
	p := pieces[i%uint64(len(pieces))]
	b := make([]byte, 0, n*(len(p[0])+len(p[1])+len(p[2])+40)+len(open)+len(end))
	b = append(b, open...)
	for j := range n {
		if j > 0 {
			b = append(b, ',')
		}
		id := run + "-" + strconv.FormatUint(i, 10) + "-" + strconv.Itoa(j)
		for k, piece := range p {
			if k > 0 {
				b = append(b, id...)
			}
			b = append(b, piece...)
		}
	}
	return append(b, end...)
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
