package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/uptrace/bun"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
)

// The audit log's rows (issue 19): its append code against a plain INSERT
// of the same rows, proofs at a million events, and a month dropped while
// appends run.

// plainEventRow is a row of audit_events as the harness writes it with a
// plain INSERT: the same columns the audit log writes, a hash of the same
// length, and nothing else (no head row, no tree hashes, no lock).
type plainEventRow struct {
	bun.BaseModel `bun:"table:audit_events"`

	ID          string            `bun:"id"`
	TenantID    string            `bun:"tenant_id"`
	Seq         int64             `bun:"seq"`
	Product     string            `bun:"product"`
	Action      string            `bun:"action"`
	CRUD        string            `bun:"crud"`
	ActorID     string            `bun:"actor_id"`
	ActorName   string            `bun:"actor_name"`
	ActorType   string            `bun:"actor_type"`
	TargetID    string            `bun:"target_id"`
	TargetType  string            `bun:"target_type"`
	TargetName  string            `bun:"target_name"`
	SourceIP    string            `bun:"source_ip"`
	Description string            `bun:"description"`
	IsFailure   bool              `bun:"is_failure"`
	IsAnonymous bool              `bun:"is_anonymous"`
	Fields      map[string]string `bun:"fields,type:jsonb"`
	OccurTime   time.Time         `bun:"occur_time"`
	ReceiveTime time.Time         `bun:"receive_time"`
	ExternalID  string            `bun:"external_id"`
	Hash        string            `bun:"hash"`
}

// plainHash stands in for a leaf hash: as long, never computed.
var plainHash = strings.Repeat("0", 64)

// benchEvents are n events of a product's, as the append rows over the
// API send them, without idempotency keys: what the tree costs, apart from
// what the keys cost (the API rows carry keys).
func benchEvents(tenantID string, n int) []*domain.AuditEvent {
	now := time.Now().UTC().Truncate(time.Microsecond)
	events := make([]*domain.AuditEvent, n)
	for i := range events {
		events[i] = &domain.AuditEvent{
			ID: domain.NewID(), TenantID: tenantID, Product: benchProduct, Action: "document.updated", CRUD: "u",
			Actor:       domain.AuditActor{ID: "user-42", Name: "Jane Doe", Type: "user"},
			Target:      domain.AuditTarget{ID: "doc-" + strconv.Itoa(i), Type: "document", Name: "Quarterly report"},
			SourceIP:    "192.0.2.10",
			Description: "updated the document's title",
			Fields:      map[string]string{"field": "title", "old": "Q3", "new": "Q3 final"},
			OccurTime:   now, ReceiveTime: now,
		}
	}
	return events
}

// treeSpecs are the in-process append rows: treeWorkers goroutines of the
// harness, each appending to a log of its own (appends to one log take
// turns), through the audit log's Append in a transaction of
// Store.Atomically as RecordAuditEvents does; and as many inserting the
// same rows with one plain multi-row INSERT in a transaction, each under a
// tenant id of its own, through the same driver and Bun.
func (h *harness) treeSpecs() []rowSpec {
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	tree := func(batch int) loadFunc {
		return func(ctx context.Context, _ *process) (load, string, error) {
			store := h.pdb.Store()
			return funcLoad{workers: treeWorkers, f: func(k int, _ uint64) error {
				events := benchEvents(h.fx.TreeTenants[k], batch)
				return store.Atomically(ctx, func(r domain.Repositories) error { return r.Audit().Append(ctx, events) })
			}}, "", nil
		}
	}
	plain := func(batch int) loadFunc {
		return func(ctx context.Context, _ *process) (load, string, error) {
			seqs := make([]int64, treeWorkers)
			db := h.pdb.Bun()
			return funcLoad{workers: treeWorkers, f: func(k int, _ uint64) error {
				tenant := "plain-" + run + "-" + strconv.Itoa(batch) + "-" + strconv.Itoa(k)
				events := benchEvents(tenant, batch)
				rows := make([]plainEventRow, len(events))
				for i, e := range events {
					seqs[k]++
					rows[i] = plainEventRow{
						ID: e.ID, TenantID: e.TenantID, Seq: seqs[k], Product: e.Product, Action: e.Action, CRUD: e.CRUD,
						ActorID: e.Actor.ID, ActorName: e.Actor.Name, ActorType: e.Actor.Type,
						TargetID: e.Target.ID, TargetType: e.Target.Type, TargetName: e.Target.Name,
						SourceIP: e.SourceIP, Description: e.Description, Fields: e.Fields,
						OccurTime: e.OccurTime, ReceiveTime: e.ReceiveTime, Hash: plainHash,
					}
				}
				return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
					_, err := tx.NewInsert().Model(&rows).Exec(ctx)
					return err
				})
			}}, "", nil
		}
	}
	g := []string{"tree"}
	return []rowSpec{
		{key: "tree-append-100", process: "harness", phase: 4, groups: g, name: "audit log Append, batches of 100", protocol: "in-process", server: inHarness, eventsPerRequest: 100, load: tree(100)},
		{key: "plain-insert-100", process: "harness", phase: 4, groups: g, name: "plain INSERT of the same rows, batches of 100", protocol: "in-process", server: inHarness, eventsPerRequest: 100, load: plain(100)},
		{key: "tree-append-1", process: "harness", phase: 4, groups: g, name: "audit log Append, single events", protocol: "in-process", server: inHarness, eventsPerRequest: 1, load: tree(1)},
		{key: "plain-insert-1", process: "harness", phase: 4, groups: g, name: "plain INSERT of the same rows, single events", protocol: "in-process", server: inHarness, eventsPerRequest: 1, load: plain(1)},
	}
}

// spread maps request i to a number in [1, n], scattered (Fibonacci
// hashing), the same in every run.
func spread(i uint64, n int64) int64 {
	return 1 + int64((i*0x9E3779B97F4A7C15)>>11)%n
}

// proofSpecs are the proof rows: inclusion proofs of events spread over a
// log, and consistency proofs from sizes spread over it, in a log of 1k,
// in a tree of 1M events (the first 1M of the large log: the same stored
// hashes as a log of 1M), and in the whole large log when it is larger.
// Their figure is latency, at --proof-concurrency requests in flight.
func (h *harness) proofSpecs(vegetaPost func(int, string, func(uint64) []byte, string) loadFunc) []rowSpec {
	fx, c := h.fx, h.o.ProofConcurrency
	type logSize struct {
		key, name string
		tenant    string
		size      int64 // events proved over
		treeSize  int64 // 0: the log as it stands
	}
	mid := min(int64(h.o.AuditEvents), 1_000_000)
	sizes := []logSize{
		{"1k", "log of 1k", fx.SmallAudit.GetId(), 1000, 1000},
		{"1M", "tree of " + eventCount(int(mid)), fx.BigAudit.GetId(), mid, mid},
	}
	if int64(h.o.AuditEvents) == mid {
		sizes[1].name = "log of " + eventCount(int(mid))
	} else {
		sizes = append(sizes, logSize{"big", "log of " + eventCount(h.o.AuditEvents), fx.BigAudit.GetId(), int64(h.o.AuditEvents), 0})
	}
	var specs []rowSpec
	for _, s := range sizes {
		event := func(i uint64) []byte {
			return []byte(`{"tenantId":"` + s.tenant + `","seq":` + strconv.FormatInt(spread(i, s.size), 10) +
				`,"treeSize":` + strconv.FormatInt(s.treeSize, 10) + `}`)
		}
		consistency := func(i uint64) []byte {
			newSize := s.treeSize
			return []byte(`{"tenantId":"` + s.tenant + `","oldSize":` + strconv.FormatInt(spread(i, s.size-1), 10) +
				`,"newSize":` + strconv.FormatInt(newSize, 10) + `}`)
		}
		specs = append(specs,
			rowSpec{key: "proof-event-" + s.key, process: "service-proofs", phase: 5, groups: []string{"proofs"}, name: "ProveAuditEvent, " + s.name,
				protocol: "connect-json", server: serviceWarm,
				load: vegetaPost(c, tenantregistryv1connect.AuditServiceProveAuditEventProcedure, event, `"rootHash"`)},
			rowSpec{key: "proof-consistency-" + s.key, process: "service-proofs", phase: 5, groups: []string{"proofs"}, name: "ProveAuditConsistency, " + s.name,
				protocol: "connect-json", server: serviceWarm,
				load: vegetaPost(c, tenantregistryv1connect.AuditServiceProveAuditConsistencyProcedure, consistency, `"newRootHash"`)},
		)
	}
	return specs
}

// appendResult is one append of the retention row's load.
type appendResult struct {
	start, end time.Time
	tenant     int // index into the load's tenants
	ok         bool
	err        string
}

// appendLoad appends single events over HTTP (Connect JSON) from n
// workers, closed loop, until stop closes; it returns every result.
func appendLoad(baseURL string, tenants []string, n int, stop <-chan struct{}) []appendResult {
	pieces, run := auditTemplates(tenants), runID()
	client := newHTTPClient(n)
	var mu sync.Mutex
	var all []appendResult
	var wg sync.WaitGroup
	var next uint64
	for range n {
		wg.Go(func() {
			var mine []appendResult
			for {
				select {
				case <-stop:
					mu.Lock()
					all = append(all, mine...)
					mu.Unlock()
					return
				default:
				}
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				t := int(i % uint64(len(tenants)))
				r := appendResult{tenant: t, start: time.Now()}
				res, err := client.Post(baseURL+tenantregistryv1connect.AuditServiceRecordAuditEventProcedure, "application/json",
					bytes.NewReader(auditBody(pieces, 1, run, i)))
				if err == nil {
					body, _ := io.ReadAll(res.Body)
					res.Body.Close()
					r.ok = res.StatusCode == http.StatusOK
					if !r.ok {
						r.err = fmt.Sprintf("%s: %.200s", res.Status, body)
					}
				} else {
					r.err = err.Error()
				}
				r.end = time.Now()
				mine = append(mine, r)
			}
		})
	}
	wg.Wait()
	return all
}

// dropMonth measures appends while retention drops a month of events: a
// log of its own gets --drop-events events received three months ago
// (seeded through the audit log's Append, into a partition made for that
// month by EnsureAuditPartitions), then, while --drop-concurrency appends
// run over the append rows' 16 logs and this one, its retention is set to
// 30 days and MaintainAudit (the service's own maintenance: partitions
// ahead, then ExpireAudit) drops the month. Appends before the drop are
// compared with those that overlapped it.
func (h *harness) dropMonth(ctx context.Context) ([]*row, error) {
	n := h.o.DropEvents
	fmt.Fprintf(h.out, "dropping a month of %d events while appends run…\n", n)
	p, err := start(ctx, "service-retention", h.bins.service, h.serviceEnv(true), h.logDir, false)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	c := newClients(p.url)
	t, err := c.tenant(ctx, "bench-expire-"+strconv.FormatInt(time.Now().Unix(), 36))
	if err != nil {
		return nil, err
	}
	if err := h.clearOldMonths(ctx); err != nil {
		return nil, err
	}
	month, err := h.emptyMonth(ctx)
	if err != nil {
		return nil, err
	}
	if err := h.pdb.EnsureAuditPartitions(ctx, month); err != nil {
		return nil, err
	}
	span := month.AddDate(0, 1, 0).Sub(month)
	began := time.Now()
	err = seedAudit(ctx, h.pdb, t.GetId(), n, seedOptions{ExternalIDs: true, Prefix: "old-",
		ReceiveTime: func(j int) time.Time { return month.Add(time.Duration(int64(span) / int64(n) * int64(j))) },
		DatabaseURL: h.db.url}, h.out)
	if err != nil {
		return nil, err
	}
	seeded := time.Since(began)
	fmt.Fprintf(h.out, "  seeded %d events of %s into %s in %s (%.0f events/s)\n", n, month.Format("2006-01"), t.GetSlug(),
		seeded.Round(time.Millisecond), float64(n)/seeded.Seconds())

	tenants := append(slices.Clone(h.fx.AppendTenants), t.GetId())
	expiring := len(tenants) - 1
	stop := make(chan struct{})
	results := make(chan []appendResult, 1)
	go func() { results <- appendLoad(p.url, tenants, h.o.DropConcurrency, stop) }()
	fail := func(err error) ([]*row, error) {
		close(stop)
		<-results
		return nil, err
	}
	wait := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	// CPU of the service and of the database at each window's edges.
	type mark struct {
		at     time.Time
		server time.Duration
		db     backendTimes
	}
	markNow := func() mark {
		cpu, _ := p.cpuTime()
		return mark{time.Now(), cpu, databaseBackends(h.db.name)}
	}
	if err := wait(h.o.Warmup); err != nil {
		return fail(err)
	}
	mA := markNow()
	if err := wait(h.o.Duration); err != nil {
		return fail(err)
	}
	if err := h.pdb.Store().Atomically(ctx, func(r domain.Repositories) error { return r.Audit().SetRetention(ctx, t.GetId(), 30) }); err != nil {
		return fail(err)
	}
	m0 := markNow()
	t0 := m0.at
	var expiry struct {
		events     int64
		partitions []string
	}
	for {
		// With 0 as the default, logs without a retention of their own
		// keep everything: only this log's month expires.
		e, ran, err := h.pdb.MaintainAudit(ctx, time.Now(), 0)
		if err != nil {
			return fail(err)
		}
		if ran {
			expiry.events, expiry.partitions = e.Events, e.PartitionsDropped
			break
		}
		if err := wait(10 * time.Millisecond); err != nil { // another replica holds the maintenance lock
			return fail(err)
		}
	}
	m1 := markNow()
	t1 := m1.at
	if err := wait(max(h.o.Duration/2, 2*time.Second)); err != nil {
		return fail(err)
	}
	m2 := markNow()
	close(stop)
	all := <-results
	if expiry.events < int64(n) {
		return nil, fmt.Errorf("the drop removed %d events, want at least %d (partitions dropped: %v)", expiry.events, n, expiry.partitions)
	}
	type window struct {
		m           measurement
		others      measurement // the appends to the other logs
		expiringMax time.Duration
		from, to    mark
	}
	pre, during, after := window{from: mA, to: m0}, window{from: m0, to: m1}, window{from: m1, to: m2}
	for _, r := range all {
		var w *window
		switch {
		case r.end.Before(mA.at) || r.end.After(m2.at):
			continue // warm-up, or the drain after the end
		case r.end.Before(t0):
			w = &pre
		case r.start.After(t1):
			w = &after
		default: // overlapped the drop
			w = &during
		}
		w.m.requests++
		if !r.ok {
			w.m.errors++
			if w.m.errorMsg == "" {
				w.m.errorMsg = r.err
			}
			continue
		}
		w.m.ok++
		lat := r.end.Sub(r.start)
		w.m.latencies = append(w.m.latencies, lat)
		if r.tenant == expiring {
			w.expiringMax = max(w.expiringMax, lat)
		} else {
			w.others.latencies = append(w.others.latencies, lat)
		}
	}
	rss, _ := p.peakRSS()
	mk := func(key, name string, w *window, note string) *row {
		w.m.elapsed = w.to.at.Sub(w.from.at)
		r := &row{
			Key: key, Name: name, Protocol: "connect-json", Server: serviceWarm,
			Requests: w.m.requests, Errors: w.m.errors, RPS: w.m.rps(), EventsPerSecond: w.m.rps(),
			P50ms: msOf(w.m.quantile(0.5)), P99ms: msOf(w.m.quantile(0.99)), MaxMs: msOf(w.m.quantile(1)),
			PeakRSSMB: float64(rss) / (1 << 20), ErrorSample: w.m.errorMsg, OthersP99ms: msOf(w.others.quantile(0.99)),
			Note: fmt.Sprintf("%s; %d appends; the dropped log's own appends: max %.1f ms; the other logs': p99 %.1f ms, max %.1f ms",
				note, w.m.ok, msOf(w.expiringMax), msOf(w.others.quantile(0.99)), msOf(w.others.quantile(1))),
		}
		// CPU over the window's time, per append that ended in it: the
		// drop's own work shows as the database's.
		if w.m.requests > 0 {
			r.CPUPerRequestUs = float64((w.to.server - w.from.server).Microseconds()) / float64(w.m.requests)
			r.DatabaseCPUPerRequestUs = float64(w.to.db.since(w.from.db).Microseconds()) / float64(w.m.requests)
		}
		fmt.Fprintf(h.out, "%-52s %8.0f req/s  p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms  (%d appends)\n",
			name, r.RPS, r.P50ms, r.P99ms, r.MaxMs, w.m.ok)
		return r
	}
	dropNote := fmt.Sprintf("MaintainAudit took %s, dropped %s (%d events), database CPU %.2f s meanwhile; seeding the month took %s",
		t1.Sub(t0).Round(time.Millisecond), strings.Join(expiry.partitions, ", "), expiry.events, m1.db.since(m0.db).Seconds(), seeded.Round(time.Second))
	rows := []*row{
		mk("drop-before", "RecordAuditEvent before the drop", &pre, fmt.Sprintf("%d in flight, over %d logs", h.o.DropConcurrency, len(tenants))),
		mk("drop-during", "RecordAuditEvent during the drop of a month of "+eventCount(n), &during, dropNote),
		mk("drop-after", "RecordAuditEvent after the drop", &after, "after MaintainAudit returned"),
	}
	if during.m.ok == 0 {
		return rows, errors.New("no append overlapped the drop")
	}
	return rows, nil
}

// partitionName is the name of the events' partition of month.
func partitionName(month time.Time) string {
	return fmt.Sprintf("audit_events_%04d%02d", month.Year(), int(month.Month()))
}

// clearOldMonths drops, unmeasured, what earlier runs left of their old
// months (a run stopped between seeding and dropping): the logs of the
// retention row get a retention of 30 days, and maintenance runs once.
func (h *harness) clearOldMonths(ctx context.Context) error {
	var ids []string
	if err := h.pdb.Bun().NewRaw("SELECT id FROM tenants WHERE slug LIKE 'bench-expire-%'").Scan(ctx, &ids); err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	for _, id := range ids {
		if err := h.pdb.Store().Atomically(ctx, func(r domain.Repositories) error { return r.Audit().SetRetention(ctx, id, 30) }); err != nil {
			return err
		}
	}
	for {
		e, ran, err := h.pdb.MaintainAudit(ctx, time.Now(), 0)
		if err != nil {
			return err
		}
		if ran {
			if e.Events > 0 {
				fmt.Fprintf(h.out, "  dropped %d events earlier runs left in old months (%s)\n", e.Events, strings.Join(e.PartitionsDropped, ", "))
			}
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// emptyMonth is the latest month, three months back or more, whose
// partition is missing or empty, so that the drop removes exactly the
// seeded events.
func (h *harness) emptyMonth(ctx context.Context) (time.Time, error) {
	now := time.Now().UTC()
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, -3, 0)
	for range 9 { // within the default retention of 400 days
		name := partitionName(month)
		var exists, used bool
		if err := h.pdb.Bun().NewRaw("SELECT to_regclass(?) IS NOT NULL", name).Scan(ctx, &exists); err != nil {
			return month, err
		}
		if !exists {
			return month, nil
		}
		if err := h.pdb.Bun().NewRaw("SELECT EXISTS (SELECT 1 FROM "+name+")").Scan(ctx, &used); err != nil {
			return month, err
		}
		if !used {
			return month, nil
		}
		month = month.AddDate(0, -1, 0)
	}
	return month, errors.New("no empty month within the last year for the retention row")
}
