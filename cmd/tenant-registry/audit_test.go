package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/transport"
)

// download GETs one of the export downloads and returns its status and body.
func download(t *testing.T, url string) (int, http.Header, []byte) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, res.Header, body
}

// TestAuditExportVerifiesOffline: the NDJSON download, the checkpoint
// and the verifier key are all a customer needs to check the log with
// `audit verify`, with no server; one byte changed, the last event of the
// checkpoint dropped, or two events swapped, and it says so. The CSV
// download opens in a spreadsheet without running anything.
func TestAuditExportVerifiesOffline(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"DATABASE_URL": "sqlite:" + filepath.Join(dir, "registry.db")}
	srv := serve(t, env)
	ctx := context.Background()
	tenants := tenantregistryv1connect.NewTenantServiceClient(http.DefaultClient, srv.baseURL)
	audit := tenantregistryv1connect.NewAuditServiceClient(http.DefaultClient, srv.baseURL)
	tn, err := tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: "exported", DisplayName: "Exported"})
	if err != nil {
		t.Fatal(err)
	}
	id := tn.GetTenant().GetId()
	for i := range 12 {
		_, err := audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{Event: &v1.AuditEvent{
			TenantId: id, Product: "sheets", Action: "cell.edited", Crud: "u", Actor: &v1.AuditActor{Id: "u-1", Name: "Ada"},
			Description: []string{"=HYPERLINK(\"http://evil\")", "plain", "+1 row", "@SUM(A1)"}[i%4],
			Fields:      map[string]string{"row": strings.Repeat("x", i)},
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	cp, err := audit.GetAuditCheckpoint(ctx, &v1.GetAuditCheckpointRequest{TenantId: id})
	if err != nil {
		t.Fatal(err)
	}
	key, err := audit.GetAuditVerifierKey(ctx, &v1.GetAuditVerifierKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	status, header, ndjson := download(t, srv.baseURL+"/audit/export.ndjson?tenant_id="+id)
	if status != http.StatusOK || header.Get("Content-Type") != "application/x-ndjson" || bytes.Count(ndjson, []byte("\n")) != 13 {
		t.Fatalf("NDJSON download: %d %v\n%s", status, header, ndjson)
	}
	write := func(name string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	checkpointFile := write("checkpoint", []byte(cp.GetCheckpoint()))
	verify := func(export []byte) (string, error) {
		var out, errOut bytes.Buffer
		err := run(ctx, []string{"audit", "verify", "--checkpoint", checkpointFile, "--export", write("export.ndjson", export), "--key", key.GetVerifierKey()},
			envOf(nil), &out, &errOut)
		return out.String(), err
	}
	if out, err := verify(ndjson); err != nil || !strings.HasPrefix(out, "ok: ") || !strings.Contains(out, "13 events") {
		t.Fatalf("audit verify of the untouched export: %q, %v", out, err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(ndjson), "\n"), "\n")
	tampered := map[string]string{
		"one byte changed":   strings.Replace(string(ndjson), "cell.edited", "cell.edites", 1),
		"last event dropped": strings.Join(lines[1:], ""),
		"two events swapped": strings.Join(append([]string{lines[1], lines[0]}, lines[2:]...), ""),
	}
	for name, export := range tampered {
		if out, err := verify([]byte(export)); err == nil {
			t.Errorf("%s: audit verify passed: %q", name, out)
		}
	}
	// Another registry's key does not open the checkpoint.
	var otherKey, keygenOut bytes.Buffer
	if err := run(ctx, []string{"audit", "keygen", "other.example.com"}, envOf(nil), &keygenOut, &otherKey); err != nil {
		t.Fatal(err)
	}
	vkey := strings.TrimSpace(otherKey.String()[strings.LastIndex(otherKey.String(), " ")+1:])
	var out bytes.Buffer
	err = run(ctx, []string{"audit", "verify", "--checkpoint", checkpointFile, "--export", write("export.ndjson", ndjson), "--key", vkey}, envOf(nil), &out, &out)
	if err == nil || !strings.Contains(err.Error(), "--checkpoint") {
		t.Errorf("audit verify with another registry's key: %v", err)
	}

	status, header, csvBody := download(t, srv.baseURL+"/audit/export.csv?tenant_id="+id+"&action=cell.edited")
	if status != http.StatusOK || !strings.HasPrefix(header.Get("Content-Type"), "text/csv") || !strings.Contains(header.Get("Content-Disposition"), ".csv") {
		t.Fatalf("CSV download: %d %v", status, header)
	}
	records, err := csv.NewReader(bytes.NewReader(csvBody)).ReadAll()
	if err != nil || len(records) != 13 || !slices.Equal(records[0], transport.ExportHeader) {
		t.Fatalf("CSV: %d records, %v, header %v", len(records), err, records[0])
	}
	description := slices.Index(transport.ExportHeader, "description")
	for _, r := range records[1:] {
		if c := r[description]; strings.ContainsRune("=+-@", rune(c[0])) {
			t.Errorf("a cell a spreadsheet would run: %q", c)
		}
	}
	for query, want := range map[string]int{
		"tenant_id=" + id + "&colour=red":                http.StatusBadRequest,
		"tenant_id=not-a-uuid":                           http.StatusBadRequest,
		"tenant_id=" + id + "&since=today":               http.StatusBadRequest,
		"tenant_id=00000000-0000-7000-8000-000000000099": http.StatusOK, // no such tenant: an empty file, as the RPC
	} {
		if status, _, body := download(t, srv.baseURL+"/audit/export.csv?"+query); status != want {
			t.Errorf("GET /audit/export.csv?%s: %d %s, want %d", query, status, body, want)
		}
	}
}
