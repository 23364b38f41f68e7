package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/transport"
)

// largeEventBytes is at least the text of a seedLargeEvents event: 50
// fields of 2,000 characters.
const largeEventBytes = domain.MaxAuditFields * domain.MaxAuditFieldValueLen

// TestAuditReadsHoldBoundedMemory fills a log with 120 events of the
// largest kind (about 100 kB each) and reads it as an attacker with read
// access to it would: large list pages, and exports that never take their
// answer. A list page stops at about a megabyte of events; each stalled
// export holds no more than that, and at most MaxExportsPerLog exports of
// one log run at once while other logs' exports still run.
func TestAuditReadsHoldBoundedMemory(t *testing.T) {
	for _, d := range databases {
		t.Run(d.name, func(t *testing.T) {
			srv := serve(t, devEnv(d.url(t)))
			ctx := context.Background()
			audit := tenantregistryv1connect.NewAuditServiceClient(testserver.HTTP1, srv.baseURL)
			big, bigEvents := seedLargeEvents(t, srv, "hoarder", 120)
			other, otherEvents := seedLargeEvents(t, srv, "bystander", 20)

			t.Run("list pages stop at a megabyte", func(t *testing.T) {
				var seqs []int64
				token := ""
				for pages := 0; ; pages++ {
					res, err := audit.ListAuditEvents(ctx, &v1.ListAuditEventsRequest{TenantId: big, PageSize: 500, PageToken: token})
					if err != nil {
						t.Fatal(err)
					}
					if n := len(res.GetEvents()); n > 1<<20/largeEventBytes+1 {
						t.Fatalf("page %d holds %d events of over %d bytes each", pages, n, largeEventBytes)
					}
					for _, e := range res.GetEvents() {
						seqs = append(seqs, e.GetSeq())
					}
					if token = res.GetNextPageToken(); token == "" {
						break
					}
				}
				checkNewestFirst(t, seqs, bigEvents)
			})

			t.Run("list answers not taken are bounded", func(t *testing.T) {
				before := liveHeap()
				var held []net.Conn
				for {
					c, status := stallList(t, srv, big)
					if strings.HasPrefix(status, "HTTP/1.1 429") {
						c.Close()
						break
					}
					if !strings.HasPrefix(status, "HTTP/1.1 200") {
						t.Fatalf("list: %q", status)
					}
					held = append(held, c)
					if len(held) > transport.MaxListedBytesPerLog/(1<<20) {
						t.Fatalf("%d list answers of about a megabyte held for one log, want them refused past %d MiB", len(held), transport.MaxListedBytesPerLog>>20)
					}
				}
				grown := liveHeap() - before
				t.Logf("%d list answers not taken hold %.1f MB", len(held), float64(grown)/1e6)
				if len(held) < 2 {
					t.Errorf("%d list answers held before one was refused, want the log's %d MiB to hold more", len(held), transport.MaxListedBytesPerLog>>20)
				}
				if bound := int64(transport.MaxListedBytesPerLog) * 3; grown > bound {
					t.Errorf("held list answers hold %d bytes, want at most %d", grown, bound)
				}
				if _, err := audit.ListAuditEvents(ctx, &v1.ListAuditEventsRequest{TenantId: other, PageSize: 500}); err != nil {
					t.Errorf("another log's list while this one's answers are held: %v", err)
				}
				for _, c := range held {
					c.Close()
				}
				deadline := time.Now().Add(10 * time.Second)
				for {
					_, err := audit.ListAuditEvents(ctx, &v1.ListAuditEventsRequest{TenantId: big, PageSize: 500})
					if err == nil {
						break
					}
					if connect.CodeOf(err) != connect.CodeResourceExhausted || time.Now().After(deadline) {
						t.Fatalf("list once the held answers were closed: %v", err)
					}
					time.Sleep(50 * time.Millisecond)
				}
			})

			// A full export first, so that what a stalled one holds is
			// not mistaken for the pools the first one fills.
			seqs, err := exportAll(ctx, audit, big)
			if err != nil {
				t.Fatal(err)
			}
			checkNewestFirst(t, seqs, bigEvents)
			before := liveHeap()
			var stalled []net.Conn
			for range domain.MaxExportsPerLog {
				stalled = append(stalled, stallDownload(t, srv, big))
			}
			held := liveHeap() - before
			t.Logf("%d stalled exports of %d large events hold %.1f MB", len(stalled), bigEvents, float64(held)/1e6)
			if bound := int64(domain.MaxExportsPerLog) * 4 << 20; held > bound {
				t.Errorf("%d stalled exports hold %d bytes, want at most %d: about a megabyte each", len(stalled), held, bound)
			}

			_, err = exportAll(ctx, audit, big)
			if connect.CodeOf(err) != connect.CodeResourceExhausted {
				t.Errorf("export of a log with %d running: %v, want resource_exhausted", len(stalled), err)
			}
			res, err := testserver.HTTP1.Get(srv.baseURL + "/audit/export.csv?tenant_id=" + big)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != 429 {
				t.Errorf("download of a log with %d exports running: %s, want 429", len(stalled), res.Status)
			}
			if seqs, err := exportAll(ctx, audit, other); err != nil || len(seqs) != otherEvents {
				t.Errorf("another log's export: %d of %d events, error %v; want all of them", len(seqs), otherEvents, err)
			}

			for _, c := range stalled {
				c.Close()
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				seqs, err := exportAll(ctx, audit, big)
				if err == nil {
					checkNewestFirst(t, seqs, bigEvents)
					break
				}
				if connect.CodeOf(err) != connect.CodeResourceExhausted || time.Now().After(deadline) {
					t.Fatalf("export after the stalled ones were closed: %d of %d events, error %v", len(seqs), bigEvents, err)
				}
				time.Sleep(50 * time.Millisecond)
			}

			// Each download cut part-way leaves a line saying so.
			for {
				lines := cutLines(srv.logs.String(), "/audit/export.ndjson")
				if lines == len(stalled) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d log lines of cut downloads, want %d:\n%s", lines, len(stalled), srv.logs.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// cutLines counts the "http" lines of answers on path that were cut
// part-way.
func cutLines(logs, path string) int {
	n := 0
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, `"msg":"http"`) && strings.Contains(line, `"path":"`+path+`"`) && strings.Contains(line, `"cut":"`) {
			n++
		}
	}
	return n
}

// seedLargeEvents creates a tenant and n events of the largest kind for
// it, and returns its id and how many events its log holds.
func seedLargeEvents(t *testing.T, srv *running, slug string, n int) (tenantID string, events int) {
	t.Helper()
	ctx := context.Background()
	tenants := tenantregistryv1connect.NewTenantServiceClient(testserver.HTTP1, srv.baseURL)
	tn, err := tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: slug, DisplayName: slug})
	if err != nil {
		t.Fatal(err)
	}
	tenantID = tn.GetTenant().GetId()
	audit := tenantregistryv1connect.NewAuditServiceClient(testserver.HTTP1, srv.baseURL)
	const perBatch = 9 // under a megabyte: the tests' MAX_MESSAGE_BYTES
	letters := []byte("abcdefghijklmnopqrstuvwxyz")
	value := make([]byte, domain.MaxAuditFieldValueLen)
	for start := 0; start < n; start += perBatch {
		batch := make([]*v1.AuditEvent, min(perBatch, n-start))
		for i := range batch {
			fields := make(map[string]string, domain.MaxAuditFields)
			for f := range domain.MaxAuditFields {
				for j := range value {
					value[j] = letters[rand.IntN(len(letters))]
				}
				fields[fmt.Sprintf("field_%02d", f)] = string(value)
			}
			batch[i] = &v1.AuditEvent{
				TenantId: tenantID, Product: "analytics", Action: "report.exported", Crud: "r",
				Actor: &v1.AuditActor{Id: "user-1", Type: "user"}, Fields: fields,
			}
		}
		if _, err := audit.RecordAuditEvents(ctx, &v1.RecordAuditEventsRequest{Events: batch}); err != nil {
			t.Fatal(err)
		}
	}
	return tenantID, n + 1 // and the tenant's own creation
}

// exportAll reads a tenant's whole export over Connect and returns the
// seqs of its events, in the order they came.
func exportAll(ctx context.Context, audit tenantregistryv1connect.AuditServiceClient, tenantID string) ([]int64, error) {
	stream, err := audit.ExportAuditEvents(ctx, &v1.ExportAuditEventsRequest{TenantId: tenantID})
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	var seqs []int64
	for stream.Receive() {
		seqs = append(seqs, stream.Msg().GetEvent().GetSeq())
	}
	return seqs, stream.Err()
}

// checkNewestFirst fails t unless seqs are n down to 1.
func checkNewestFirst(t *testing.T, seqs []int64, n int) {
	t.Helper()
	if len(seqs) != n {
		t.Fatalf("%d events, want %d", len(seqs), n)
	}
	for i, s := range seqs {
		if want := int64(n - i); s != want {
			t.Fatalf("event %d has seq %d, want %d", i, s, want)
		}
	}
}

// stallDownload starts an NDJSON download of a tenant's log over HTTP/1.1
// with a small receive buffer, reads its status line and stops reading.
func stallDownload(t *testing.T, srv *running, tenantID string) net.Conn {
	t.Helper()
	c, status := stallRequest(t, srv, fmt.Sprintf("GET /audit/export.ndjson?tenant_id=%s HTTP/1.1\r\nHost: registry\r\n\r\n", tenantID))
	if !strings.HasPrefix(status, "HTTP/1.1 200") {
		t.Fatalf("download: %q", status)
	}
	return c
}

// stallList asks for a page of 500 of tenantID's events the same way,
// and returns the answer's status line.
func stallList(t *testing.T, srv *running, tenantID string) (net.Conn, string) {
	t.Helper()
	body := fmt.Sprintf(`{"tenantId":%q,"pageSize":500}`, tenantID)
	return stallRequest(t, srv, fmt.Sprintf("POST %s HTTP/1.1\r\nHost: registry\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		tenantregistryv1connect.AuditServiceListAuditEventsProcedure, len(body), body))
}

// stallRequest sends request over HTTP/1.1 with a small receive buffer,
// reads the answer's status line, returned, and stops reading.
func stallRequest(t *testing.T, srv *running, request string) (net.Conn, string) {
	t.Helper()
	c, err := smallWindowDialer.Dial("tcp", strings.TrimPrefix(srv.baseURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	status, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("%q: status %q, %v", strings.SplitN(request, "\r\n", 2)[0], status, err)
	}
	return c, status
}

// liveHeap is the bytes the process's heap holds after collections.
func liveHeap() int64 {
	runtime.GC() // twice: what sync.Pools kept survives one collection
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
