package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
)

// process is the built binary, serving.
type process struct {
	cmd     *exec.Cmd
	baseURL string
	logs    *testserver.Logs
	exited  chan struct{} // closed when the process has exited; cmd.ProcessState is set then
}

// startBinary builds the binary and starts it with env, waiting until it
// says where it serves.
func startBinary(t *testing.T, env map[string]string) *process {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tenant-registry")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, logs: &testserver.Logs{}, exited: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		scanner := bufio.NewScanner(stderr)
		for scanner.Scan() {
			line := scanner.Text()
			fmt.Fprintln(p.logs, line)
			var entry struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Addr != "" && strings.HasPrefix(entry.Msg, "serving") {
				addr <- entry.Addr
			}
		}
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("server log:\n%s", p.logs.String())
		}
	})
	select {
	case a := <-addr:
		p.baseURL = "http://" + a
	case <-p.exited:
		t.Fatalf("the server exited at start:\n%s", p.logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("the server did not start:\n%s", p.logs.String())
	}
	return p
}

// TestShutdownDrains sends SIGTERM to the real binary while requests and
// export streams are in flight: /readyz must turn 503 while the listener
// still accepts (SHUTDOWN_DELAY), then the listener closes, the in-flight
// requests finish successfully, the streams end cleanly with every event,
// and the process exits 0 within its grace period.
func TestShutdownDrains(t *testing.T) {
	const (
		delay  = 1500 * time.Millisecond
		grace  = 15 * time.Second
		events = 1200 // more than two of the export's pages
	)
	dbURL := testdb.PostgresURL(t)
	p := startBinary(t, map[string]string{
		"APP_ENV": "dev", "ADDR": "127.0.0.1:0", "DATABASE_URL": dbURL, "LOG_FORMAT": "json",
		"SHUTDOWN_DELAY": delay.String(), "SHUTDOWN_GRACE": grace.String(),
	})
	http1 := &http.Client{Transport: &http.Transport{}}
	h2c := &http.Client{Transport: h2cTransport()}
	ctx := context.Background()
	tenants := tenantregistryv1connect.NewTenantServiceClient(http1, p.baseURL)
	created, err := tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: "draining", DisplayName: "Draining"})
	if err != nil {
		t.Fatal(err)
	}
	tenantID := created.GetTenant().GetId()
	audit := tenantregistryv1connect.NewAuditServiceClient(http1, p.baseURL)
	for batch := 0; batch < events; batch += 400 {
		req := &v1.RecordAuditEventsRequest{}
		for i := range 400 {
			req.Events = append(req.Events, &v1.AuditEvent{TenantId: tenantID, Product: "drain", Action: "drain.test",
				Crud: "c", Actor: &v1.AuditActor{Id: "seed"}, ExternalId: fmt.Sprint(batch + i)})
		}
		if _, err := audit.RecordAuditEvents(ctx, req); err != nil {
			t.Fatal(err)
		}
	}

	// Hold the audit log locked, so that the requests below stay in flight
	// until the test lets them go.
	direct := testdb.MustOpenURL(t, dbURL)
	tx, err := direct.Bun().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			_ = tx.Rollback()
		}
	}()

	type result struct {
		what string
		n    int // events streamed
		err  error
	}
	results := make(chan result, 4)
	var inFlight sync.WaitGroup
	name := "Drained"
	for _, proto := range []struct {
		name   string
		client *http.Client
		opts   []connect.ClientOption
	}{
		{"connect", http1, []connect.ClientOption{connect.WithProtoJSON()}},
		{"grpc", h2c, []connect.ClientOption{connect.WithGRPC()}},
	} {
		tc := tenantregistryv1connect.NewTenantServiceClient(proto.client, p.baseURL, proto.opts...)
		ac := tenantregistryv1connect.NewAuditServiceClient(proto.client, p.baseURL, proto.opts...)
		inFlight.Go(func() {
			_, err := tc.UpdateTenant(ctx, &v1.UpdateTenantRequest{Id: tenantID, DisplayName: &name})
			results <- result{what: "UpdateTenant over " + proto.name, err: err}
		})
		inFlight.Go(func() {
			stream, err := ac.ExportAuditEvents(ctx, &v1.ExportAuditEventsRequest{TenantId: tenantID})
			if err != nil {
				results <- result{what: "export over " + proto.name, err: err}
				return
			}
			n := 0
			for stream.Receive() {
				n++
			}
			err = errors.Join(stream.Err(), stream.Close())
			results <- result{what: "export over " + proto.name, n: n, err: err}
		})
	}
	// Every one of the four is waiting on the lock in the database.
	waitUntil(t, "the requests waiting on the lock", 10*time.Second, func() bool { return lockWaiters(t, direct) >= 4 })

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	signalled := time.Now()

	// /readyz turns 503 while the listener still accepts; then it closes.
	probe := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	var notReadyAt, refusedAt time.Time
	waitUntil(t, "the listener closing", 10*time.Second, func() bool {
		res, err := probe.Get(p.baseURL + "/readyz")
		if err != nil {
			refusedAt = time.Now()
			return true
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		switch res.StatusCode {
		case http.StatusServiceUnavailable:
			if notReadyAt.IsZero() {
				notReadyAt = time.Now()
			}
		case http.StatusOK:
			if !notReadyAt.IsZero() {
				t.Error("/readyz said ready again after saying not ready")
			}
		}
		return false
	})
	if notReadyAt.IsZero() {
		t.Fatal("the listener closed without /readyz ever answering 503")
	}
	if refusedAt.Sub(notReadyAt) < delay/2 {
		t.Errorf("/readyz was 503 for only %v before the listener closed, want about SHUTDOWN_DELAY (%v)", refusedAt.Sub(notReadyAt), delay)
	}
	select {
	case <-p.exited:
		t.Fatal("the process exited with requests in flight")
	default:
	}

	// Let the in-flight requests go: they finish, and so does the process.
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	released = true
	inFlight.Wait()
	close(results)
	for r := range results {
		switch {
		case r.err != nil:
			t.Errorf("%s, in flight at SIGTERM: %v", r.what, r.err)
		case strings.HasPrefix(r.what, "export") && (r.n < events+1 || r.n > events+3):
			// tenant.created and the seeded events, and the in-flight
			// updates' events when they committed first.
			t.Errorf("%s streamed %d events, want %d to %d", r.what, r.n, events+1, events+3)
		}
	}
	select {
	case <-p.exited:
	case <-time.After(delay + grace):
		t.Fatalf("the process still runs %v after SIGTERM", delay+grace)
	}
	exitedAfter := time.Since(signalled)
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if strings.Contains(p.logs.String(), `"level":"ERROR"`) {
		t.Errorf("the server logged errors while shutting down")
	}
	t.Logf("SIGTERM: /readyz 503 after %v, listener closed after %v, exited 0 after %v",
		notReadyAt.Sub(signalled).Round(time.Millisecond), refusedAt.Sub(signalled).Round(time.Millisecond), exitedAfter.Round(time.Millisecond))
}

// waitUntil polls cond every 10 ms until it holds, failing t after limit.
func waitUntil(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func h2cTransport() *http.Transport {
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Transport{Protocols: protocols}
}
