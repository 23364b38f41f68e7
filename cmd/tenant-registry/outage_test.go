package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/uptrace/bun"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/tcpproxy"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
)

// call is one write of the outage test's load.
type call struct {
	kind       string // "tenant" or "event"
	start, end time.Time
	id         string // the acknowledged tenant's or event's id
	err        error
}

// TestDatabaseOutage cuts the service's database connections under a
// steady load of writes: calls must fail fast with Unavailable, /readyz
// must say not ready, and within a few seconds of the database coming back
// every call must succeed again, without a restart. Every acknowledged
// write, before, during and after, must be in the database afterwards with
// its audit event, and the audit chains must verify.
func TestDatabaseOutage(t *testing.T) {
	dbURL := testdb.PostgresURL(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := tcpproxy.Start(t, u.Host)
	env := devEnv(proxy.URL(t, dbURL))
	env["REQUEST_TIMEOUT"] = "10s"
	srv := serve(t, env)

	httpClient := testserver.HTTP1
	grpcClient := testserver.H2C
	ready := func() int {
		res, err := httpClient.Get(srv.baseURL + "/readyz")
		if err != nil {
			t.Fatalf("/readyz: %v", err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	if code := ready(); code != http.StatusOK {
		t.Fatalf("/readyz = %d before the outage", code)
	}

	// The load: writers creating tenants and recording audit events, over
	// Connect and gRPC, each call with a generous deadline of its own.
	const writers = 4
	var (
		mu    sync.Mutex
		calls []call
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		opts := []connect.ClientOption{connect.WithProtoJSON()}
		client := httpClient
		if w%2 == 1 {
			opts, client = []connect.ClientOption{connect.WithGRPC()}, grpcClient
		}
		tenants := tenantregistryv1connect.NewTenantServiceClient(client, srv.baseURL, opts...)
		audit := tenantregistryv1connect.NewAuditServiceClient(client, srv.baseURL, opts...)
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c := call{start: time.Now()}
				if i%2 == 0 {
					c.kind = "tenant"
					res, err := tenants.CreateTenant(ctx, &v1.CreateTenantRequest{
						Slug: fmt.Sprintf("outage-%d-%d", w, i), DisplayName: "Outage",
					})
					c.id, c.err = res.GetTenant().GetId(), err
				} else {
					c.kind = "event"
					res, err := audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{Event: &v1.AuditEvent{
						TenantId: seedTenantID, Product: "outage-test", Action: "outage.write", Crud: "c",
						Actor: &v1.AuditActor{Id: "writer"}, ExternalId: fmt.Sprintf("outage-%d-%d", w, i),
					}})
					c.id, c.err = res.GetEvent().GetId(), err
				}
				cancel()
				c.end = time.Now()
				mu.Lock()
				calls = append(calls, c)
				mu.Unlock()
				if c.err != nil {
					time.Sleep(20 * time.Millisecond) // a client's pause between failed attempts
				}
			}
		})
	}
	// waitFor polls cond every 10 ms for up to limit and returns how long it took.
	waitFor := func(what string, limit time.Duration, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !cond() {
			if time.Since(start) > limit {
				close(stop)
				wg.Wait()
				t.Fatalf("%s: not within %v", what, limit)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return time.Since(start)
	}
	succeededSince := func(since time.Time) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return slices.ContainsFunc(calls, func(c call) bool { return c.err == nil && c.start.After(since) })
		}
	}

	waitFor("writes before the outage", 10*time.Second, succeededSince(time.Now()))
	time.Sleep(500 * time.Millisecond) // half a second of healthy load

	cutAt := time.Now()
	proxy.Cut(true)
	notReady := waitFor("/readyz turning 503", 5*time.Second, func() bool { return ready() == http.StatusServiceUnavailable })
	time.Sleep(2 * time.Second) // two seconds of outage under load
	if code := ready(); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d during the outage, want 503", code)
	}
	healAt := time.Now()
	proxy.Cut(false)
	recovered := waitFor("a write succeeding after the database is back", 10*time.Second, succeededSince(healAt))
	readyAgain := waitFor("/readyz turning 200", 10*time.Second, func() bool { return ready() == http.StatusOK })
	time.Sleep(time.Second) // a second of load after recovery
	close(stop)
	wg.Wait()

	// How the calls went in each phase.
	var failed, okBefore, okAfter, lateFailures, failedAfterHeal int
	var slowest time.Duration
	recoveredAt := healAt.Add(recovered)
	for _, c := range calls {
		switch {
		case c.err == nil && c.end.Before(cutAt):
			okBefore++
		case c.err == nil && c.start.After(cutAt) && c.end.Before(healAt):
			t.Errorf("a %s write started during the outage succeeded", c.kind)
		case c.err == nil:
			okAfter++
		default:
			failed++
			if code := connect.CodeOf(c.err); code != connect.CodeUnavailable {
				t.Errorf("a %s write failed with %v, want Unavailable: %v", c.kind, code, c.err)
			}
			if d := c.end.Sub(c.start); d > slowest {
				slowest = d
			}
			if c.start.After(healAt) {
				failedAfterHeal++
			}
			if c.start.After(recoveredAt.Add(3 * time.Second)) {
				lateFailures++
			}
		}
	}
	if slowest > 2*time.Second {
		t.Errorf("the slowest failed call took %v; calls must fail fast during an outage", slowest)
	}
	if lateFailures > 0 {
		t.Errorf("%d writes failed more than 3 s after the first write succeeded again", lateFailures)
	}
	if failed == 0 || okBefore == 0 || okAfter == 0 {
		t.Fatalf("calls: %d ok before, %d failed, %d ok after; the load did not span the outage", okBefore, failed, okAfter)
	}
	t.Logf("%d calls: %d acknowledged before the cut, %d failed (slowest %v; %d started after the database returned), %d acknowledged after; "+
		"/readyz 503 after %v, first write %v after the database returned, /readyz 200 after %v",
		len(calls), okBefore, failed, slowest.Round(time.Millisecond), failedAfterHeal, okAfter,
		notReady.Round(time.Millisecond), recovered.Round(time.Millisecond), readyAgain.Round(time.Millisecond))

	// Every acknowledged write is stored, with its audit event, straight
	// from the database (not through the proxy).
	direct := testdb.MustOpenURL(t, dbURL)
	ctx := context.Background()
	var tenantIDs []string
	for _, c := range calls {
		if c.err != nil {
			continue
		}
		switch c.kind {
		case "tenant":
			tenantIDs = append(tenantIDs, c.id)
			var n int
			if err := direct.Bun().QueryRowContext(ctx, `SELECT
				(SELECT count(*) FROM tenants WHERE id = ?) + (SELECT count(*) FROM audit_events
				WHERE tenant_id = ? AND action = 'tenant.created' AND target_id = ?)`, c.id, c.id, c.id).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 2 {
				t.Errorf("acknowledged tenant %s: %d of its row and its tenant.created event stored", c.id, n)
			}
		case "event":
			var n int
			if err := direct.Bun().QueryRowContext(ctx, `SELECT count(*) FROM audit_events WHERE id = ?`, c.id).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Errorf("acknowledged audit event %s is not stored", c.id)
			}
		}
	}
	audit := tenantregistryv1connect.NewAuditServiceClient(httpClient, srv.baseURL)
	for _, id := range append(tenantIDs, seedTenantID) {
		res, err := audit.VerifyAuditChain(ctx, &v1.VerifyAuditChainRequest{TenantId: id})
		if err != nil || !res.GetOk() {
			t.Errorf("VerifyAuditChain(%s) = %v, %v", id, res, err)
		}
	}
	if err := srv.stop(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
}

// TestDatabaseRestartWhileIdle ends the service's database connections
// while it is idle, with connections parked in its pool, and has the
// database back before the next request: no request may fail on a dead
// connection the pool held. Connections end the way a restart or a
// network device ends them: the server terminating its backends (it says
// goodbye first), or the connection closing under both.
func TestDatabaseRestartWhileIdle(t *testing.T) {
	tests := []struct {
		name string
		kill func(t *testing.T, proxy *tcpproxy.Proxy, dbURL string)
	}{
		{"connections closed between", func(t *testing.T, proxy *tcpproxy.Proxy, _ string) {
			proxy.Cut(true)
			proxy.Cut(false)
		}},
		{"backends terminated by the server", func(t *testing.T, _ *tcpproxy.Proxy, dbURL string) {
			admin := testdb.MustOpenURL(t, dbURL)
			ctx := context.Background()
			var pids []int64
			if err := admin.Bun().NewRaw(`SELECT pid FROM pg_stat_activity
				WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(ctx, &pids); err != nil {
				t.Fatal(err)
			}
			if len(pids) == 0 {
				t.Fatal("no backend of the service to terminate")
			}
			for _, pid := range pids {
				if _, err := admin.Bun().ExecContext(ctx, "SELECT pg_terminate_backend(?)", pid); err != nil {
					t.Fatal(err)
				}
			}
			// Termination is asynchronous: wait until the backends are gone,
			// as they are once a restarted database answers again.
			deadline := time.Now().Add(10 * time.Second)
			for {
				var left int
				if err := admin.Bun().QueryRowContext(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid IN (?)",
					bun.In(pids)).Scan(&left); err != nil {
					t.Fatal(err)
				}
				if left == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d terminated backends still there", left)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dbURL := testdb.PostgresURL(t)
			u, err := url.Parse(dbURL)
			if err != nil {
				t.Fatal(err)
			}
			proxy := tcpproxy.Start(t, u.Host)
			srv := serve(t, devEnv(proxy.URL(t, dbURL)))
			tenants := tenantregistryv1connect.NewTenantServiceClient(testserver.HTTP1, srv.baseURL)
			ctx := context.Background()
			create := func(slug string) error {
				_, err := tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: slug, DisplayName: "Idle"})
				return err
			}
			// Fill the pool: concurrent writes leave several connections idle.
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() {
					if err := create(fmt.Sprintf("warm-%d", i)); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			tc.kill(t, proxy, dbURL)
			var failures []error
			for i := range 10 {
				if err := create(fmt.Sprintf("after-%d", i)); err != nil {
					failures = append(failures, err)
				}
			}
			if len(failures) > 0 {
				t.Errorf("%d of 10 writes after the database came back failed: %v", len(failures), failures)
			}
		})
	}
}
