package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
)

// Server kinds a row runs against.
const (
	serviceWarm = "tenant-registry"                 // KEY_CACHE=on, the default
	serviceCold = "tenant-registry (KEY_CACHE=off)" // every verification reads the database
	baseline    = "baseline"
	productSDK  = "product (Go SDK) on tenant-registry"
)

// rowSpec is one row of the benchmark.
type rowSpec struct {
	key, group, name, protocol string
	server                     string
	// process names the server process serving the row; rows naming the
	// same one share it (and its peak RSS).
	process string
	// phase orders the rows: the rows of a phase are measured interleaved.
	phase            int
	eventsPerRequest int // audit rows: events each request appends
	// load builds the load for a started server; want is a fragment the
	// body of a single probing request must hold (HTTP rows only).
	load func(p *process) (l load, want string)
	// note, when set, says something of the server after the row.
	note func(p *process) string
}

// harness is one run.
type harness struct {
	o      options
	bins   binaries
	db     *database
	logDir string
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
	h.logDir = filepath.Join(o.Out, "logs")
	if err := os.MkdirAll(h.logDir, 0o755); err != nil {
		return err
	}
	if o.ProfileDir != "" {
		if err := os.MkdirAll(o.ProfileDir, 0o755); err != nil {
			return err
		}
	}
	fmt.Fprintf(h.out, "building the service and the baseline server…\n")
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

	fmt.Fprintf(h.out, "preparing database %s (fixtures, audit chains of 1000 and %d events)…\n", name, o.AuditEvents)
	setup, err := start(ctx, "setup", h.bins.service, h.serviceEnv(true), h.logDir, false)
	if err != nil {
		return err
	}
	bigChain := o.AuditEvents
	if !o.wants("chains") {
		bigChain = 0
	}
	h.fx, err = prepare(ctx, newClients(setup.url), h.db.url, bigChain, h.out)
	setup.stop()
	if err != nil {
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
			if spec.phase == phase && o.wants(spec.group) {
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
	judge(rows)
	s := summary{
		Date: started.UTC().Format(time.RFC3339), Machine: machine(), GoVersion: runtime.Version(),
		LoadAverageBefore: loadBefore, LoadAverageAfter: loadAverage(),
		Duration: o.Duration.String(), Warmup: o.Warmup.String(), Concurrency: o.Concurrency,
		AuditEvents: o.AuditEvents, Rows: rows,
	}
	return s.write(h.out, o.Out)
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
		"REQUEST_TIMEOUT=", "READ_HEADER_TIMEOUT=", "DB_MAX_CONNS=", "SHUTDOWN_DELAY=0s",
	}
}

func (h *harness) baselineEnv() []string {
	return []string{"DATABASE_URL=" + h.db.url, "LOG_LEVEL=info"}
}

func (h *harness) startFor(ctx context.Context, spec rowSpec) (*process, error) {
	profile := h.o.ProfileDir != "" && spec.server != baseline
	switch spec.server {
	case serviceWarm:
		return start(ctx, spec.process, h.bins.service, h.serviceEnv(true), h.logDir, profile)
	case serviceCold:
		return start(ctx, spec.process, h.bins.service, h.serviceEnv(false), h.logDir, profile)
	case productSDK:
		return h.startProduct(ctx, spec.process)
	default:
		return start(ctx, spec.process, h.bins.baseline, h.baselineEnv(), h.logDir, false)
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
		l, want := spec.load(p)
		if hl, ok := l.(httpLoad); ok {
			if err := hl.probe(want); err != nil {
				return nil, fmt.Errorf("%s: %w", spec.name, err)
			}
		}
		if h.o.Warmup > 0 {
			if _, err := l.run(h.o.Warmup); err != nil {
				return nil, fmt.Errorf("%s: warm-up: %w", spec.name, err)
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
				return nil, fmt.Errorf("%s, round %d: %w", spec.name, round+1, err)
			}
			after, err := h.usage(p)
			if err != nil {
				return nil, err
			}
			ms[i].add(s)
			used[i].server += after[0] - before[0]
			used[i].generator += after[1] - before[1]
			used[i].database += after[2] - before[2]
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
		fmt.Fprintf(h.out, "%-46s %8.0f req/s  p50 %7.2f ms  p99 %7.2f ms  CPU µs/req: server %5.0f, database %5.0f, load generator %5.0f  RSS %5.1f MB\n",
			spec.name+" ("+spec.protocol+")", r.RPS, r.P50ms, r.P99ms, r.CPUPerRequestUs, r.DatabaseCPUPerRequestUs, r.GeneratorCPUPerRequestUs, r.PeakRSSMB)
		rows = append(rows, r)
	}
	fmt.Fprintf(h.out, "  (load average %s)\n", loadAverage())
	return rows, nil
}

// usage reads the CPU time used so far by the server p, by the load
// generator (this process) and by the database's backends.
func (h *harness) usage(p *process) ([3]time.Duration, error) {
	server, err := p.cpuTime()
	if err != nil {
		return [3]time.Duration{}, err
	}
	generator, err := cpuTime(os.Getpid())
	if err != nil {
		return [3]time.Duration{}, err
	}
	return [3]time.Duration{server, generator, databaseCPU(h.db.name)}, nil
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
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(want)) {
		return fmt.Errorf("probe %s %s: %s, want %q in %.300s", t.Method, t.URL, res.Status, want, body)
	}
	return nil
}

// specs are the rows, in the order they run and print.
func (h *harness) specs() []rowSpec {
	c, fx := h.o.Concurrency, h.fx
	post := func(procedure string, body func(uint64) []byte) func(*process) func(*vegeta.Target) error {
		return func(p *process) func(*vegeta.Target) error { return connectPost(p.url, procedure, body) }
	}
	jsonLoad := func(target func(*process) func(*vegeta.Target) error, want string) func(*process) (load, string) {
		return func(p *process) (load, string) {
			return httpLoad{concurrency: c, client: newHTTPClient(c), next: target(p)}, want
		}
	}
	grpc := func(call, data string) func(*process) (load, string) {
		return func(p *process) (load, string) {
			return grpcLoad{concurrency: c, addr: p.addr, call: call, data: data}, ""
		}
	}
	verify := mustJSON(map[string]any{"key": fx.Key, "product": benchProduct, "requiredScopes": []string{benchScope}})
	bySlug := mustJSON(map[string]any{"slug": fx.VerifyTenant.GetSlug()})
	getURL := func(p *process) func(*vegeta.Target) error {
		q := url.Values{"encoding": {"json"}, "message": {bySlug}}
		return connectGet(p.url + "/tenantregistry.v1.TenantService/GetTenantBySlug?" + q.Encode())
	}
	list := func(t *v1.Tenant, token string) string {
		m := map[string]any{"tenantId": t.GetId()}
		if token != "" {
			m["pageToken"] = token
		}
		return mustJSON(m)
	}
	specs := []rowSpec{
		{key: "limit-json", process: "baseline", phase: 0, group: "limit", name: "limit: constant handler", protocol: "connect-json", server: baseline,
			load: jsonLoad(post("/grpc.health.v1.Health/Check", constant(`{}`)), "SERVING")},
		{key: "verify-warm-json", process: "service-verify-json", phase: 0, group: "verify", name: "VerifyApiKey warm", protocol: "connect-json", server: serviceWarm,
			load: jsonLoad(post("/tenantregistry.v1.ApiKeyService/VerifyApiKey", constant(verify)), `"valid":true`)},
		{key: "limit-grpc", process: "baseline", phase: 0, group: "limit", name: "limit: constant handler", protocol: "grpc", server: baseline,
			load: grpc("grpc.health.v1.Health.Check", `{}`)},
		{key: "verify-warm-grpc", process: "service-verify-grpc", phase: 0, group: "verify", name: "VerifyApiKey warm", protocol: "grpc", server: serviceWarm,
			load: grpc("tenantregistry.v1.ApiKeyService.VerifyApiKey", verify)},
		{key: "pk-select-json", process: "baseline", phase: 0, group: "cold", name: "baseline: one PK SELECT via Bun", protocol: "connect-json", server: baseline,
			load: jsonLoad(post("/tenantregistry.v1.TenantService/GetTenant", constant(mustJSON(map[string]any{"id": fx.VerifyTenant.GetId()}))), `"slug"`)},
		{key: "verify-cold-json", process: "service-cold", phase: 0, group: "cold", name: "VerifyApiKey cold", protocol: "connect-json", server: serviceCold,
			load: jsonLoad(post("/tenantregistry.v1.ApiKeyService/VerifyApiKey", constant(verify)), `"valid":true`)},
		{key: "check-entitlement-json", process: "service-reads", phase: 0, group: "reads", name: "CheckEntitlement", protocol: "connect-json", server: serviceWarm,
			load: jsonLoad(post("/tenantregistry.v1.EntitlementService/CheckEntitlement",
				constant(mustJSON(map[string]any{"tenantId": fx.VerifyTenant.GetId(), "product": benchProduct}))), `"entitled":true`)},
		{key: "tenant-by-slug-json", process: "service-reads", phase: 0, group: "reads", name: "GetTenantBySlug", protocol: "connect-json", server: serviceWarm,
			load: jsonLoad(post("/tenantregistry.v1.TenantService/GetTenantBySlug", constant(bySlug)), `"slug"`)},
		{key: "tenant-by-slug-get", process: "service-reads", phase: 0, group: "reads", name: "GetTenantBySlug", protocol: "connect-get", server: serviceWarm,
			load: jsonLoad(getURL, `"slug"`)},
		{key: "audit-single-json", process: "service-audit", phase: 0, group: "audit", name: "RecordAuditEvent", protocol: "connect-json", server: serviceWarm, eventsPerRequest: 1,
			load: jsonLoad(post("/tenantregistry.v1.AuditService/RecordAuditEvent", auditBodies(fx.AppendTenants, 1)), `"seq"`)},
		{key: "audit-batch100-json", process: "service-audit", phase: 0, group: "audit", name: "RecordAuditEvents ×100", protocol: "connect-json", server: serviceWarm, eventsPerRequest: 100,
			load: jsonLoad(post("/tenantregistry.v1.AuditService/RecordAuditEvents", auditBodies(fx.AppendTenants, 100)), `"seq"`)},
	}
	// A product's own requests, behind the SDK's middleware and without
	// authentication, over the same keep-alive connections.
	whoami := func(noAuth bool) func(*process) func(*vegeta.Target) error {
		return func(p *process) func(*vegeta.Target) error {
			u := p.url
			if noAuth {
				u = p.noAuthURL
			}
			return getWithKey(u+"/v1/whoami", fx.Key)
		}
	}
	specs = append(specs,
		rowSpec{key: "product-noauth", process: "product", phase: 3, group: "product", name: "product without authentication", protocol: "http", server: productSDK,
			load: jsonLoad(whoami(true), `"tenantId"`)},
		rowSpec{key: "product-sdk", process: "product", phase: 3, group: "product", name: "product with the SDK's middleware", protocol: "http", server: productSDK,
			load: jsonLoad(whoami(false), `"bench-verify"`), note: productStats},
	)
	if h.o.wants("chains") {
		procedure := "/tenantregistry.v1.AuditService/ListAuditEvents"
		big := "1M"
		if h.o.AuditEvents != 1_000_000 {
			big = strconv.Itoa(h.o.AuditEvents)
		}
		specs = append(specs,
			rowSpec{key: "list-first-1k", process: "service-list", phase: 1, group: "chains", name: "ListAuditEvents first page, 1k", protocol: "connect-json", server: serviceWarm,
				load: jsonLoad(post(procedure, constant(list(fx.SmallAudit, ""))), `"events"`)},
			rowSpec{key: "list-deep-1k", process: "service-list", phase: 1, group: "chains", name: "ListAuditEvents deep page, 1k", protocol: "connect-json", server: serviceWarm,
				load: jsonLoad(post(procedure, constant(list(fx.SmallAudit, fx.SmallDeepToken))), `"events"`)},
			rowSpec{key: "list-first-big", process: "service-list", phase: 1, group: "chains", name: "ListAuditEvents first page, " + big, protocol: "connect-json", server: serviceWarm,
				load: jsonLoad(post(procedure, constant(list(fx.BigAudit, ""))), `"events"`)},
			rowSpec{key: "list-deep-big", process: "service-list", phase: 1, group: "chains", name: "ListAuditEvents deep page, " + big, protocol: "connect-json", server: serviceWarm,
				load: jsonLoad(post(procedure, constant(list(fx.BigAudit, fx.BigDeepToken))), `"events"`)},
			// Appends to one long chain against appends to one short one:
			// the cost of an append must not grow with its chain. These run
			// after the list rows, whose chains they would lengthen.
			rowSpec{key: "append-chain-1k", process: "service-append", phase: 2, group: "chains", name: "RecordAuditEvent, one chain of 1k", protocol: "connect-json", server: serviceWarm, eventsPerRequest: 1,
				load: jsonLoad(post("/tenantregistry.v1.AuditService/RecordAuditEvent", auditBodies([]string{fx.SmallAppend.GetId()}, 1)), `"seq"`)},
			rowSpec{key: "append-chain-big", process: "service-append", phase: 2, group: "chains", name: "RecordAuditEvent, one chain of " + big, protocol: "connect-json", server: serviceWarm, eventsPerRequest: 1,
				load: jsonLoad(post("/tenantregistry.v1.AuditService/RecordAuditEvent", auditBodies([]string{fx.BigAudit.GetId()}, 1)), `"seq"`)},
		)
	}
	return specs
}

// auditBodies returns request bodies of n events each, for one tenant of
// tenants after another, each event with an external id of its own (as
// products send them, for idempotent retries). Bodies are spliced from
// events encoded once, so that the load generator, which shares the
// machine, spends little CPU on them.
func auditBodies(tenants []string, n int) func(uint64) []byte {
	const marker = "@ID@"
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	pieces := make([][][]byte, len(tenants)) // per tenant: the event's JSON, split where the id goes
	for i, t := range tenants {
		pieces[i] = bytes.Split([]byte(mustJSON(map[string]any{
			"tenantId": t, "product": benchProduct, "action": "document.updated", "crud": "u",
			"actor":       map[string]string{"id": "user-42", "name": "Jane Doe", "type": "user"},
			"target":      map[string]string{"id": "doc-" + marker, "type": "document", "name": "Quarterly report"},
			"sourceIp":    "192.0.2.10",
			"description": "updated the document's title",
			"fields":      map[string]string{"field": "title", "old": "Q3", "new": "Q3 final"},
			"externalId":  marker,
		})), []byte(marker))
	}
	open, end := `{"events":[`, `]}`
	if n == 1 {
		open, end = `{"event":`, `}`
	}
	return func(i uint64) []byte {
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
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

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

func machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s), %s/%s, load generator and servers on the same machine", runtime.NumCPU(), model, runtime.GOOS, runtime.GOARCH)
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
