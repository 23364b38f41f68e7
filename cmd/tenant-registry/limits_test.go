package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// lockWaiters counts the backends of the database waiting on a lock.
func lockWaiters(t *testing.T, db *persistence.DB) int {
	t.Helper()
	var n int
	if err := db.Bun().QueryRowContext(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRequestDeadlineReachesTheDatabase holds a lock the request needs:
// when the request's deadline passes (the caller's, or REQUEST_TIMEOUT when
// the caller set none) it must answer DeadlineExceeded at once, change
// nothing, and (on PostgreSQL) its statement must stop waiting in the
// database too, not linger until the lock is free. (On SQLite the waiting
// is the process's own, and ends with the call.)
func TestRequestDeadlineReachesTheDatabase(t *testing.T) {
	const requestTimeout = 700 * time.Millisecond
	deadlines := []struct {
		name   string
		client time.Duration // 0: the caller sets no deadline
		want   time.Duration
	}{
		{"caller's deadline", 300 * time.Millisecond, 300 * time.Millisecond},
		{"REQUEST_TIMEOUT", 0, requestTimeout},
	}
	for _, d := range databases {
		t.Run(d.name, func(t *testing.T) {
			dbURL := d.url(t)
			env := devEnv(dbURL)
			env["REQUEST_TIMEOUT"] = requestTimeout.String()
			srv := serve(t, env)
			tenants := tenantregistryv1connect.NewTenantServiceClient(testserver.HTTP1, srv.baseURL)
			ctx := context.Background()
			created, err := tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: "locked-out", DisplayName: "Before"})
			if err != nil {
				t.Fatal(err)
			}
			id, after := created.GetTenant().GetId(), "After"
			direct := testdb.MustOpenURL(t, dbURL)
			for _, dl := range deadlines {
				t.Run(dl.name, func(t *testing.T) {
					// Hold the lock UpdateTenant needs: the tenant's row on
					// PostgreSQL, the database's write lock on SQLite.
					tx, err := direct.Bun().BeginTx(ctx, nil)
					if err != nil {
						t.Fatal(err)
					}
					if direct.Dialect() == "pg" {
						_, err = tx.ExecContext(ctx, "SELECT 1 FROM tenants WHERE id = ? FOR UPDATE", id)
					} else {
						_, err = tx.ExecContext(ctx, "UPDATE tenants SET display_name = display_name WHERE id = ?", id)
					}
					if err != nil {
						t.Fatal(err)
					}
					// The clock starts before the caller's deadline is set.
					start := time.Now()
					callCtx := ctx
					if dl.client > 0 {
						var cancel context.CancelFunc
						callCtx, cancel = context.WithTimeout(ctx, dl.client)
						defer cancel()
					}
					_, err = tenants.UpdateTenant(callCtx, &v1.UpdateTenantRequest{Id: id, DisplayName: &after})
					took := time.Since(start)
					if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
						t.Errorf("UpdateTenant behind a lock: %v, want DeadlineExceeded", err)
					}
					// The caller's deadline travels as whole milliseconds left
					// (Connect-Timeout-Ms, rounded down), so the server's may
					// end a little before the caller's own.
					if took < dl.want-10*time.Millisecond || took > dl.want+time.Second {
						t.Errorf("UpdateTenant answered after %v, want soon after %v", took, dl.want)
					}
					if direct.Dialect() == "pg" {
						// The statement stops waiting in PostgreSQL too: just
						// after a caller's short deadline, within a second of
						// REQUEST_TIMEOUT (the connections' statement_timeout).
						for lockWaiters(t, direct) > 0 {
							if time.Since(start) > dl.want+2*time.Second {
								t.Errorf("the request's statement still waits on the lock %v after its deadline", time.Since(start)-dl.want)
								break
							}
							time.Sleep(10 * time.Millisecond)
						}
						t.Logf("the statement stopped waiting in the database %v after the deadline", (time.Since(start) - dl.want).Round(10*time.Millisecond))
					}
					if err := tx.Rollback(); err != nil {
						t.Fatal(err)
					}
					got, err := tenants.GetTenant(ctx, &v1.GetTenantRequest{Id: id})
					if err != nil || got.GetTenant().GetDisplayName() != "Before" {
						t.Errorf("after the timed-out update: %v, %v; want the tenant unchanged", got, err)
					}
					t.Logf("DeadlineExceeded after %v", took.Round(time.Millisecond))
				})
			}
			// Nothing is stuck: the same update goes through now.
			if _, err := tenants.UpdateTenant(ctx, &v1.UpdateTenantRequest{Id: id, DisplayName: &after}); err != nil {
				t.Errorf("UpdateTenant once the lock is free: %v", err)
			}
		})
	}
}

// TestDatabasePoolIsBounded runs many concurrent writes with DB_MAX_CONNS=2:
// they all succeed, queueing for connections, and the service never holds
// more than two (plus its invalidation listener's).
func TestDatabasePoolIsBounded(t *testing.T) {
	dbURL := testdb.PostgresURL(t)
	env := devEnv(dbURL)
	env["DB_MAX_CONNS"] = "2"
	srv := serve(t, env)
	direct := testdb.MustOpenURL(t, dbURL)
	var peak int
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			var n int
			if err := direct.Bun().QueryRowContext(context.Background(), `SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&n); err == nil {
				peak = max(peak, n)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	tenants := tenantregistryv1connect.NewTenantServiceClient(testserver.HTTP1, srv.baseURL)
	var wg sync.WaitGroup
	errs := make([]error, 40)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = tenants.CreateTenant(context.Background(), &v1.CreateTenantRequest{
				Slug: fmt.Sprintf("pooled-%d", i), DisplayName: "Pooled",
			})
		})
	}
	wg.Wait()
	close(stop)
	<-sampled
	if err := errors.Join(errs...); err != nil {
		t.Errorf("writes through a pool of two: %v", err)
	}
	// The direct connection used for sampling holds one more in its own pool.
	if peak > 2+1+1 {
		t.Errorf("the service held %d connections (sampler included), want at most 2 + its listener + the sampler", peak)
	}
	t.Logf("peak connections to the database: %d (2 pooled + listener + sampler at most)", peak)
}

// TestHeaderAndMessageLimits checks READ_HEADER_TIMEOUT (a client that
// never finishes its headers is disconnected) and MAX_MESSAGE_BYTES.
func TestHeaderAndMessageLimits(t *testing.T) {
	env := devEnv("sqlite:" + filepath.Join(t.TempDir(), "registry.db"))
	env["READ_HEADER_TIMEOUT"] = "300ms"
	env["MAX_MESSAGE_BYTES"] = "2048"
	srv := serve(t, env)

	t.Run("header timeout", func(t *testing.T) {
		// The server's clock starts when it accepts, after this one.
		start := time.Now()
		conn, err := net.Dial("tcp", strings.TrimPrefix(srv.baseURL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "POST /tenantregistry.v1.TenantService/ListTenants HTTP/1.1\r\nHost: x\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = bufio.NewReader(conn).ReadString('\n') // the server hangs up (maybe after a 408)
		took := time.Since(start)
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			t.Fatalf("a client that never finished its headers was still connected after 5 s")
		}
		if took < 300*time.Millisecond || took > 2*time.Second {
			t.Errorf("disconnected after %v, want soon after READ_HEADER_TIMEOUT (300ms)", took)
		}
	})
	t.Run("message size", func(t *testing.T) {
		tenants := tenantregistryv1connect.NewTenantServiceClient(testserver.HTTP1, srv.baseURL)
		_, err := tenants.CreateTenant(context.Background(), &v1.CreateTenantRequest{
			Slug: "big", DisplayName: "Big", Metadata: map[string]string{"k": strings.Repeat("v", 3000)},
		})
		if connect.CodeOf(err) != connect.CodeResourceExhausted {
			t.Errorf("a 3 kB request with MAX_MESSAGE_BYTES=2048: %v, want ResourceExhausted", err)
		}
	})
}
